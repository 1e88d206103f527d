"""Lazy tensor access to a Hugging Face safetensors folder (one file or a sharded index).

Each file's header is validated up front (a truncated or corrupt file is reported by name
before any weight is read); tensors are read one at a time with `safe_open`, or just a slice of
one (`get_slice`: what one device of a mesh holds). FP8 tensors (which safetensors' numpy reader
does not know) are read straight from the file as `ml_dtypes` arrays.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors import safe_open

# safetensors dtype -> numpy dtype, for the dtypes its numpy reader lacks
RAW_DTYPES = {
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E8M0": ml_dtypes.float8_e8m0fnu,
}


class WeightsError(ValueError):
    pass


def _check_file(path: Path) -> dict:
    """Parse and sanity-check the header; return {name: (dtype, shape, file offset of the data)}."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise WeightsError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", raw)
        if 8 + header_len > size:
            raise WeightsError(
                f"{path}: truncated safetensors file (header of {header_len} bytes, file {size})"
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{path}: corrupt safetensors header ({e})") from e
    header.pop("__metadata__", None)
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if 8 + header_len + end > size:
        missing = 8 + header_len + end - size
        raise WeightsError(f"{path}: truncated safetensors file ({missing} bytes of tensor data missing)")
    return {
        name: (info["dtype"], tuple(info["shape"]), 8 + header_len + info["data_offsets"][0])
        for name, info in header.items()
    }


class SafetensorsSource:
    """`names()`, `shape(name)`, `get(name) -> np.ndarray` over a folder's safetensors files."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise WeightsError(f"{index}: not a valid safetensors index ({e})") from e
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
            weight_map = None
        if not files:
            raise WeightsError(f"{self.folder}: no *.safetensors weights found")
        self._file_of: dict[str, Path] = {}
        self._shape: dict[str, tuple[int, ...]] = {}
        self._raw: dict[str, tuple[np.dtype, int]] = {}  # FP8 tensors: (dtype, file offset)
        for name in files:
            path = self.folder / name
            if not path.exists():
                raise WeightsError(f"{index}: lists {name}, which is missing from {self.folder}")
            for tensor, (dtype, shape, offset) in _check_file(path).items():
                if weight_map is not None and weight_map.get(tensor) != name:
                    continue
                self._file_of[tensor], self._shape[tensor] = path, shape
                if dtype in RAW_DTYPES:
                    self._raw[tensor] = (np.dtype(RAW_DTYPES[dtype]), offset)
        self._handles: dict[Path, object] = {}

    def names(self) -> list[str]:
        return list(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shape[name]

    def get(self, name: str) -> np.ndarray:
        path = self._file_of[name]
        if name in self._raw:
            dtype, offset = self._raw[name]
            count = int(np.prod(self._shape[name]))
            return np.fromfile(path, dtype, count=count, offset=offset).reshape(self._shape[name])
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="numpy")
        try:
            return self._handles[path].get_tensor(name)
        except Exception as e:  # bf16 needs a numpy that knows it; report the tensor either way
            if "bfloat16" in str(e) or "bf16" in str(e).lower():
                return self._get_via_flax(path, name)
            raise WeightsError(f"{path}: cannot read tensor {name}: {e}") from e

    def get_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """`get(name)[index]` reading only that slice from the file (`safe_open(...).get_slice`)."""
        path = self._file_of[name]
        if name in self._raw:
            return self.get(name)[index]
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="numpy")
        try:
            return self._handles[path].get_slice(name)[index]
        except Exception as e:
            if "bfloat16" in str(e) or "bf16" in str(e).lower():  # numpy has no bf16: read via flax
                with safe_open(str(path), framework="flax") as f:
                    return np.asarray(f.get_slice(name)[index])
            raise WeightsError(f"{path}: cannot read a slice of tensor {name}: {e}") from e

    def _get_via_flax(self, path: Path, name: str) -> np.ndarray:
        with safe_open(str(path), framework="flax") as f:
            return np.asarray(f.get_tensor(name))
