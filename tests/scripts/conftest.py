"""Tiny trained runs shared by the script tests (seconds each, on the 2-layer random model)."""

from pathlib import Path

import pytest


def _tiny_sft(log_dir, **overrides):
    import jaxcook

    return jaxcook.run(
        "sft",
        tiny=True,
        **{"run.log_dir": str(log_dir), "max_steps": 3, "eval_every": 0, "run.save_every": 0, **overrides},
    )


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory):
    """A LoRA (rank 4) sft run: its log dir."""
    return Path(_tiny_sft(tmp_path_factory.mktemp("runs") / "lora").log_dir)


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """A full fine-tuning sft run (`model.lora=none`): its log dir."""
    run = _tiny_sft(tmp_path_factory.mktemp("runs") / "full", **{"model.lora": None, "max_steps": 2})
    return Path(run.log_dir)
