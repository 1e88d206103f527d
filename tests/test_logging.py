"""Run logging: metrics.jsonl (one row per step, resume truncation), TensorBoard events, the log dir,
the progress display, HTML rollout reports and the optional wandb sink."""

from __future__ import annotations

import io
import json
import logging
import math
import struct
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from jaxcook.config import config_to_dict
from jaxcook.logging import (
    JsonlLogger,
    MultiplexLogger,
    ProgressBar,
    ReportItem,
    WandbLogger,
    check_log_dir,
    format_duration,
    read_metrics,
    setup_logging,
    to_scalars,
    truncate_metrics,
    write_rollout_report,
)


@dataclass(frozen=True, kw_only=True)
class Lora:
    rank: int = 8


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    learning_rate: float = 1e-3
    lora: Lora = field(default_factory=Lora)


def _steps(log_dir) -> list[int]:
    return [row["step"] for row in read_metrics(log_dir)]


def test_jsonl_one_row_per_step_and_same_step_merges(tmp_path):
    logger = JsonlLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.log_metrics({"train/loss": 0.5}, step=1)
    logger.log_metrics({"test/nll": 2.0}, step=1)  # an eval logged at the same step joins its row
    logger.close()
    assert read_metrics(tmp_path) == [
        {"step": 0, "train/loss": 1.0},
        {"step": 1, "train/loss": 0.5, "test/nll": 2.0},
    ]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_jsonl_rejects_a_step_going_back(tmp_path):
    logger = JsonlLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=3)
    with pytest.raises(ValueError, match="step 2 after step 3.*truncate_metrics"):
        logger.log_metrics({"train/loss": 1.0}, step=2)
    logger.close()


def test_resume_truncates_so_no_step_appears_twice(tmp_path):
    with setup_logging(tmp_path, RunConfig(), tensorboard=False) as logger:
        for step in range(6):
            logger.log_metrics({"train/loss": float(step)}, step)
    # The run died after step 5; its last checkpoint was at step 3, so it resumes there.
    with setup_logging(tmp_path, RunConfig(), start_step=3, tensorboard=False) as logger:
        for step in range(3, 8):
            logger.log_metrics({"train/loss": 100.0 + step}, step)
    rows = read_metrics(tmp_path)
    assert _steps(tmp_path) == list(range(8))
    assert [r["train/loss"] for r in rows] == [0.0, 1.0, 2.0, 103.0, 104.0, 105.0, 106.0, 107.0]


def test_truncate_metrics_counts_dropped_rows(tmp_path):
    logger = JsonlLogger(tmp_path)
    for step in range(5):
        logger.log_metrics({"a": step}, step)
    logger.close()
    assert truncate_metrics(tmp_path, 2) == 3  # steps 2, 3, 4
    assert _steps(tmp_path) == [0, 1]
    assert truncate_metrics(tmp_path, 2) == 0
    assert truncate_metrics(tmp_path / "missing", 0) == 0


def test_half_written_last_row_is_dropped_and_logging_continues_on_a_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "a": 1}\n{"step": 1, "a"')  # a crash cut the write short
    assert _steps(tmp_path) == [0]
    logger = JsonlLogger(tmp_path)
    logger.log_metrics({"a": 2}, 1)
    logger.close()
    assert read_metrics(tmp_path) == [{"step": 0, "a": 1}, {"step": 1, "a": 2}]


def test_bad_row_in_the_middle_names_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: bad metrics row"):
        read_metrics(tmp_path)


def test_to_scalars_unwraps_arrays_and_rejects_non_scalars():
    out = to_scalars({"a": np.float32(0.5), "b": np.array([3]), "c": np.int64(4), "d": "text"})
    assert out == {"a": 0.5, "b": 3, "c": 4, "d": "text"}
    assert [type(v) for v in out.values()] == [float, int, int, str]
    with pytest.raises(TypeError, match="metric 'v' is not a scalar .shape .3,.."):
        to_scalars({"v": np.zeros(3)})
    with pytest.raises(TypeError, match="metric 'env' is a dict"):
        to_scalars({"env": {"reward": 1.0}})


def test_nonfinite_values_are_written_and_reported(tmp_path, caplog):
    logger = MultiplexLogger([JsonlLogger(tmp_path)])
    with caplog.at_level(logging.WARNING):
        bad = logger.log_metrics({"train/loss": float("nan"), "optim/lr": 1e-4, "g": -np.inf}, 4)
    logger.close()
    assert bad == ["train/loss", "g"]
    assert "step 4: non-finite metrics train/loss=nan, g=-inf" in caplog.text
    row = read_metrics(tmp_path)[0]
    assert math.isnan(row["train/loss"]) and row["g"] == -math.inf and row["optim/lr"] == 1e-4


def _tfrecord_events(path: Path):
    """Parse a TensorBoard event file: records of (u64 length, u32 crc, data, u32 crc)."""
    from tensorboardX.proto.event_pb2 import Event

    data, pos, events = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = Event()
        event.ParseFromString(data[pos + 12 : pos + 12 + length])
        events.append(event)
        pos += 12 + length + 4
    return events


def test_tensorboard_scalars_and_purge_on_resume(tmp_path):
    with setup_logging(tmp_path, RunConfig(), configure_python_logging=False) as logger:
        logger.log_metrics({"train/loss": 0.25, "note": "text is not a scalar"}, 1)
        logger.log_metrics({"train/loss": 0.125}, 2)
    (first,) = (tmp_path / "tensorboard").iterdir()
    scalars = [(e.step, v.tag, v.simple_value) for e in _tfrecord_events(first) for v in e.summary.value]
    assert (1, "train/loss", 0.25) in scalars and (2, "train/loss", 0.125) in scalars
    assert not any(tag == "note" for _, tag, _ in scalars)
    assert any(tag.startswith("config") for _, tag, _ in scalars)  # the config as text

    with setup_logging(tmp_path, RunConfig(), start_step=2, configure_python_logging=False):
        pass
    (second,) = set((tmp_path / "tensorboard").iterdir()) - {first}
    starts = [e.step for e in _tfrecord_events(second) if e.HasField("session_log")]
    assert starts == [2]  # TensorBoard hides the first run's events at step >= 2


def test_setup_logging_writes_config_and_log_file_until_closed(tmp_path, caplog):
    cfg = RunConfig(lora=Lora(rank=4))
    logger = setup_logging(tmp_path, cfg, tensorboard=False)
    logging.getLogger("jaxcook.test").info("hello from the run")
    logger.close()
    logging.getLogger("jaxcook.test").info("after close")
    assert json.loads((tmp_path / "config.json").read_text()) == config_to_dict(cfg)
    log_text = (tmp_path / "logs.log").read_text()
    assert "hello from the run" in log_text and "after close" not in log_text

    with caplog.at_level(logging.WARNING):
        setup_logging(tmp_path, RunConfig(lora=Lora(rank=16)), tensorboard=False).close()
    assert "config differs from the previous run" in caplog.text and "lora.rank: 4 -> 16" in caplog.text


def test_check_log_dir_behaviours(tmp_path):
    missing = tmp_path / "new"
    assert check_log_dir(missing, "raise") is False  # nothing there: any behaviour proceeds
    run_dir = tmp_path / "run"
    setup_logging(run_dir, RunConfig(), tensorboard=False).close()
    assert check_log_dir(run_dir) is True  # default: resume, files kept
    assert (run_dir / "metrics.jsonl").exists()
    with pytest.raises(FileExistsError, match="already holds files"):
        check_log_dir(run_dir, "raise")
    assert check_log_dir(run_dir, "delete") is False
    assert not run_dir.exists()
    with pytest.raises(ValueError, match="'resume', 'delete' or 'raise'"):
        check_log_dir(tmp_path, "ask")


def test_delete_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="does not look like a jaxcook run"):
        check_log_dir(tmp_path, "delete")
    assert (tmp_path / "thesis.tex").read_text() == "precious"


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_log_lines_when_not_a_terminal(caplog):
    clock = _Clock()
    with caplog.at_level(logging.INFO, logger="jaxcook.logging.progress"):
        progress = ProgressBar(10, file=io.StringIO(), window=2, log_every_s=60, clock=clock)
        for step, now in [(1, 10.0), (2, 11.0), (3, 12.0)]:
            clock.now = now
            progress.update(step, loss=2.0 / step, tokens=1000)
        # After step 3 the window holds (t=10, 1000 tok), (11, 2000), (12, 3000):
        # tokens/s = (3000 - 1000) / (12 - 10) = 1000; ETA = (10 - 3) steps * 2 s / 2 steps = 7 s.
        assert progress.tokens_per_s() == 1000.0 and progress.eta_s() == 7.0
        clock.now = 19.0
        progress.update(10, loss=0.1, tokens=7000)
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    # One line at the first update (1000 tokens in the first 10 s), none until 60 s passed, one at the end.
    assert lines[0] == "train step 1/10 (10.0%) | loss 2 | 100 tok/s | elapsed 10s | eta 1m30s"
    assert len(lines) == 2 and lines[1].startswith("train step 10/10 (100.0%) | loss 0.1")


def test_progress_bar_on_a_terminal_shows_loss_and_tokens_per_s():
    out, clock = io.StringIO(), _Clock()
    with ProgressBar(4, start_step=1, file=out, interactive=True, clock=clock) as progress:
        clock.now = 2.0
        progress.update(2, loss=0.5, tokens=300)
    text = out.getvalue()
    assert "2/4" in text and "loss 0.5" in text and "150 tok/s" in text  # 300 tokens in 2 s


def test_format_duration():
    assert [format_duration(s) for s in (7.2, 125, 3723.4)] == ["7s", "2m05s", "1h02m03s"]


def test_html_report_escapes_and_summarises(tmp_path):
    evil = "<script>alert('x')</script> & more"
    path = write_rollout_report(
        tmp_path,
        123,
        [
            ReportItem(
                messages=[{"role": "user", "content": evil}, {"role": "assistant", "content": "4"}],
                reward=1.0,
                metrics={"correct": 1.0, "<b>": 2},
                title="group 0 <i>",
            ),
            {
                "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}]}],
                "reward": 0.0,
            },
            {"messages": [{"role": "assistant", "content": "x" * 50}], "reward": 0.5},
        ],
        max_chars=40,
    )
    assert path == tmp_path / "reports" / "iteration_000123.html"
    page = path.read_text()
    assert "<script" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "mean reward 0.5" in page  # (1 + 0 + 0.5) / 3
    assert "10 more characters not shown" in page  # 50 - 40
    assert "hmm" in page and page.count('class="item"') == 3


def test_html_report_rejects_items_without_messages(tmp_path):
    with pytest.raises(ValueError, match="report item 0 needs 'messages'"):
        write_rollout_report(tmp_path, 0, [{"reward": 1.0}])


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(
        RuntimeError, match="wandb_project='proj' is set but the wandb package is not installed"
    ):
        WandbLogger(tmp_path, project="proj")


def test_wandb_resumed_run_reuses_its_run_id(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs))
            self.config = types.SimpleNamespace(
                update=lambda c, allow_val_change: calls.append(("config", c))
            )

        def log(self, metrics, step):
            calls.append(("log", step, metrics))

        def finish(self):
            calls.append(("finish",))

    ids = iter(["first-id", "second-id"])
    fake = types.SimpleNamespace(
        init=lambda **kw: FakeRun(**kw), util=types.SimpleNamespace(generate_id=lambda: next(ids))
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for _ in range(2):
        logger = WandbLogger(tmp_path, project="proj", name="run", config={"a": 1})
        logger.log_metrics({"train/loss": 1.0}, 5)
        logger.close()
    inits = [c[1] for c in calls if c[0] == "init"]
    assert [i["id"] for i in inits] == ["first-id", "first-id"] and inits[0]["resume"] == "allow"
    assert ("log", 5, {"train/loss": 1.0}) in calls
