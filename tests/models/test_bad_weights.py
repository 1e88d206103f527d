"""Bad model folders raise errors that name the file, tensor or field at fault."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxcook.models import ConfigError, WeightsError, load, load_config

pytest.importorskip("torch")
from tests.models.test_hf_parity import save_random_hf  # noqa: E402


@pytest.fixture
def folder(tmp_path):
    save_random_hf(tmp_path, "llama")
    return tmp_path


def test_folder_without_weights(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"no \*\.safetensors weights found"):
        load(str(folder), tokenizer=False)


def test_truncated_safetensors(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsError, match=r"model\.safetensors: truncated safetensors file"):
        load(str(folder), tokenizer=False)


def test_unsupported_model_type(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: unsupported model_type 'gpt2'"):
        load_config(str(folder))


def test_missing_field(folder):
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["hidden_size"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="missing required field 'hidden_size'"):
        load_config(str(folder))


def _edit_tensors(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_wrong_shape(folder):
    name = "model.layers.1.mlp.up_proj.weight"
    _edit_tensors(folder, lambda t: t.update({name: np.zeros((3, 3), np.float32)}))
    with pytest.raises(WeightsError, match=rf"tensor {name} has shape \(3, 3\), expected \(96, 64\)"):
        load(str(folder), tokenizer=False)


def test_missing_tensor(folder):
    name = "model.layers.0.self_attn.k_proj.weight"
    _edit_tensors(folder, lambda t: t.pop(name))
    with pytest.raises(WeightsError, match=rf"missing tensor {name}"):
        load(str(folder), tokenizer=False)


def test_unexpected_tensor(folder):
    _edit_tensors(folder, lambda t: t.update({"model.layers.0.extra.weight": np.zeros(2, np.float32)}))
    with pytest.raises(WeightsError, match=r"unexpected tensors .*model\.layers\.0\.extra\.weight"):
        load(str(folder), tokenizer=False)


def test_not_a_model_path(tmp_path):
    with pytest.raises(WeightsError, match="no config.json"):
        load(str(tmp_path), tokenizer=False)
