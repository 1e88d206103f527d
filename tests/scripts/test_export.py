"""scripts/export.py: PEFT and merged exports of a tiny run load in transformers / peft with jaxcook's
logits; --push-to-hub reaches a hub stand-in; bad input is a one-line error."""

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.models import load, resolve
from jaxcook.trained import load_trained
from tests.scripts.hub_standin import HubStandIn

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPORT = load_script("export")


def export(*args):
    """scripts/export.py's main in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = EXPORT.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def export_process(*args, env=None):
    """scripts/export.py in a fresh interpreter (environment variables such as HF_ENDPOINT apply)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "export.py"), *map(str, args)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


def batch(seed=0):
    """Two right-padded rows of random token ids (lengths 19 and 8) and their mask."""
    rng = np.random.default_rng(seed)
    tokens, mask = np.zeros((2, 19), np.int64), np.zeros((2, 19), np.int64)
    for i, n in enumerate([19, 8]):
        tokens[i, :n] = rng.integers(0, 49152, n)
        mask[i, :n] = 1
    return tokens, mask


def jax_logits(model, tokens, mask):
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    return np.asarray(model.logits(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask)))


def torch_logits(model, tokens, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()


@pytest.fixture(scope="module")
def trained_logits(lora_run):
    tokens, mask = batch()
    trained = jax_logits(load_trained(lora_run).model, tokens, mask)
    base = jax_logits(load("tiny-random-smollm2", tokenizer=False).model, tokens, mask)
    valid = mask.astype(bool)
    # The run trained something: the export must carry the adapters, not the base weights.
    assert np.abs(trained[valid] - base[valid]).max() > 1e-3
    return tokens, mask, trained


def test_merged_export_loads_in_transformers_with_jaxcook_logits(lora_run, trained_logits, tmp_path):
    tokens, mask, ours = trained_logits
    out = tmp_path / "merged"
    done = export(lora_run, "--format", "merged", "--out", out)
    assert done.returncode == 0, done.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in out.iterdir()
    }
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    valid = mask.astype(bool)
    assert np.abs(torch_logits(hf, tokens, mask)[valid] - ours[valid]).max() <= 1e-4
    info = json.loads((out / "jaxcook_export.json").read_text())
    assert info["step"] == 3 and info["renderer"] == "chatml" and info["base_model"] == "tiny-random-smollm2"


def test_exported_chat_template_matches_the_renderer(lora_run, tmp_path):
    out = tmp_path / "merged"
    assert export(lora_run, "--format", "merged", "--out", out).returncode == 0
    tok = transformers.AutoTokenizer.from_pretrained(out)
    trained = load_trained(lora_run)
    messages = [{"role": "user", "content": "What is 2+3?"}]
    hf_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    hf_ids = hf_ids["input_ids"] if isinstance(hf_ids, dict) or hasattr(hf_ids, "keys") else hf_ids
    ours = trained.renderer().build_generation_prompt(messages).to_ints()
    assert list(hf_ids) == list(ours)


def test_peft_export_loads_with_jaxcook_logits(lora_run, trained_logits, tmp_path):
    tokens, mask, ours = trained_logits
    out = tmp_path / "peft"
    done = export(lora_run / "checkpoints" / "3", "--format", "peft", "--out", out)
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(resolve("tiny-random-smollm2").path)
    base_path = config["base_model_name_or_path"]
    base = transformers.AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    hf = peft.PeftModel.from_pretrained(base, out).eval()
    valid = mask.astype(bool)
    assert np.abs(torch_logits(hf, tokens, mask)[valid] - ours[valid]).max() <= 1e-4


def test_full_finetune_merged_export_and_peft_refused(full_run, tmp_path):
    tokens, mask = batch(1)
    ours = jax_logits(load_trained(full_run).model, tokens, mask)
    out = tmp_path / "merged"
    assert export(full_run, "--format", "merged", "--out", out).returncode == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    valid = mask.astype(bool)
    assert np.abs(torch_logits(hf, tokens, mask)[valid] - ours[valid]).max() <= 1e-4

    refused = export(full_run, "--format", "peft", "--out", tmp_path / "peft")
    assert refused.returncode == 2
    assert "full fine-tuning run (no LoRA adapters); use --format merged" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp: tmp, "not a run dir (no checkpoints/) nor a checkpoint folder"),
        (lambda tmp: tmp / "missing", "no such run dir or checkpoint folder"),
        (lambda tmp: (tmp / "checkpoints").mkdir() or tmp, "a run dir with no finished checkpoint"),
        (lambda tmp: (tmp / "metrics.jsonl").touch() or tmp, "a run dir with no finished checkpoint"),
    ],
)
def test_bad_input_is_one_line(make, expected, tmp_path):
    bad = make(tmp_path)
    done = export(bad, "--format", "merged", "--out", tmp_path / "out")
    assert done.returncode == 2
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_push_to_hub_uploads_every_file(lora_run, tmp_path):
    out = tmp_path / "peft"
    with HubStandIn() as hub:
        done = export_process(
            lora_run,
            "--format",
            "peft",
            "--out",
            out,
            "--push-to-hub",
            "someone/tiny-sft-lora",
            env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_standin_token", "HF_HUB_DISABLE_TELEMETRY": "1"},
        )
    assert done.returncode == 0, done.stderr
    assert "pushed to someone/tiny-sft-lora" in done.stdout
    assert hub.repos and hub.repos[0]["name"] == "tiny-sft-lora" and hub.repos[0]["organization"] == "someone"
    arrived = hub.files["someone/tiny-sft-lora"]
    local = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(arrived) == set(local) and "adapter_model.safetensors" in arrived
    assert all(arrived[name] == local[name] for name in local)
