"""TrainingRun checkpoints through the port: records, keep-N, resume and the fallback past a
corrupt newest checkpoint."""

import json
import logging
import shutil

import numpy as np
import pytest

from jaxcook.backends import make_service
from jaxcook.types import AdamParams
from jaxcook.workflows.options import RunOptions
from jaxcook.workflows.training_run import CheckpointError, TrainingRun, final_checkpoint, read_records
from tests.engine.tiny import random_datums

DATA = random_datums(4, lengths=(5, 20), seed=0)
PROBE = random_datums(2, lengths=(5, 20), seed=1)


@pytest.fixture(scope="module")
def service():
    return make_service("local", max_length=32, batch_size=4)


def scores(client):
    return [o["logprobs"] for o in client.forward(PROBE).result().loss_fn_outputs]


def train(service, log_dir, steps, *, keep=2):
    client = service.create_lora_training_client("tiny-random-smollm2", 4)
    run = TrainingRun(
        RunOptions(log_dir=str(log_dir), save_every=1, keep_checkpoints=keep, tensorboard=False), {}
    )
    start, loop = run.resume(client)
    at = {}
    for step in range(start, steps):
        client.forward_backward(DATA)
        client.optim_step(AdamParams(learning_rate=1e-2))
        at[step + 1] = scores(client)
        run.maybe_save(step + 1, client, {"batch": step + 1})
    path = run.finish(steps, client, {"batch": steps})
    client.close()
    return start, loop, path, at


def test_saves_are_recorded_pruned_and_resumed(service, tmp_path):
    _, _, path, _ = train(service, tmp_path, 4)
    records = read_records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # the records stay
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "4"]  # keep=2 folders
    assert path == str(tmp_path / "checkpoints" / "4") == final_checkpoint(tmp_path)["state_path"]
    assert records[-1]["loop"] == {"batch": 4, "step": 4} and records[-1]["final"]
    start, loop, _, _ = train(service, tmp_path, 6)
    assert (start, loop) == (4, {"batch": 4, "step": 4})


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(service, tmp_path, caplog):
    _, _, _, at = train(service, tmp_path, 3, keep=3)
    shutil.rmtree(tmp_path / "checkpoints" / "3" / "state")
    with open(tmp_path / "checkpoints.jsonl", "a") as f:
        f.write('{"step": 9, "state_pa')  # a torn last line (killed mid-write) is skipped
    client = service.create_lora_training_client("tiny-random-smollm2", 4)
    run = TrainingRun(RunOptions(log_dir=str(tmp_path), tensorboard=False), {})
    with caplog.at_level(logging.WARNING):
        start, loop = run.resume(client)
    run.close()
    assert (start, loop["step"]) == (2, 2)
    assert "checkpoints/3 is unreadable" in caplog.text
    for a, b in zip(scores(client), at[2], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    client.close()


def test_no_readable_checkpoint_is_an_error_naming_them(service, tmp_path):
    train(service, tmp_path, 1)
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    client = service.create_lora_training_client("tiny-random-smollm2", 4)
    run = TrainingRun(RunOptions(log_dir=str(tmp_path), tensorboard=False), {})
    with pytest.raises(
        CheckpointError, match=r"no readable checkpoint in .*checkpoints.jsonl .*checkpoints/1"
    ):
        run.resume(client)
    client.close()


def test_an_unrecorded_complete_folder_is_still_found(service, tmp_path):
    """A run killed after its save landed but before the record was written resumes from it."""
    train(service, tmp_path, 2, keep=3)
    lines = (tmp_path / "checkpoints.jsonl").read_text().splitlines()
    (tmp_path / "checkpoints.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # drop step 2's record
    assert json.loads(lines[-1])["step"] == 2
    client = service.create_lora_training_client("tiny-random-smollm2", 4)
    run = TrainingRun(RunOptions(log_dir=str(tmp_path), tensorboard=False), {})
    start, loop = run.resume(client)
    run.close()
    client.close()
    assert (start, loop["step"]) == (2, 2)  # the loop state comes from the checkpoint's meta
