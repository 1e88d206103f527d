"""SIGTERM / SIGINT: finish the step, checkpoint, exit 0; a second signal exits at once; rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcook.workflows.preemption import Preemption, resume_line

ROOT = Path(__file__).resolve().parents[2]


def test_first_signal_sets_the_flag_second_exits_and_handlers_are_restored():
    exits = []
    before = signal.getsignal(signal.SIGTERM)
    p = Preemption(exit_now=exits.append).install()
    try:
        assert not p.requested(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert p.signal_name == "SIGTERM" and exits == []
        assert not p.requested(0), "the decision for a step already decided does not change"
        assert p.requested(1)
        os.kill(os.getpid(), signal.SIGINT)
        assert exits == [128 + signal.SIGINT]
    finally:
        p.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_kills_a_real_process_at_once():
    # The process never reaches a step boundary: only the second signal can end it.
    script = (
        "import sys, time\n"
        "from jaxcook.workflows.preemption import Preemption\n"
        "p = Preemption().install()\n"
        "print('ready', flush=True)\n"
        "while not p.signal_name:\n"
        "    time.sleep(0.01)\n"
        "print('flagged', flush=True)\n"
        "time.sleep(3600)  # a step that does not end\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "flagged"
    assert proc.poll() is None, "the first SIGTERM must not end the process"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.time() - t0 < 5
    assert "SIGTERM again: exiting now" in proc.stderr.read()


ARGS = ["num_epochs=6", "max_steps=24", "run.save_every=0", "eval_every=8", "optim.learning_rate=3e-3"]


def command(log_dir):
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--recipe", "sft", "--tiny"] + [
        f"run.log_dir={log_dir}",
        *ARGS,
    ]


def losses(log_dir):
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"a step logged twice or out of order: {steps}"
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def last_params(log_dir):
    steps = sorted(int(p.name) for p in (log_dir / "checkpoints").iterdir() if p.name.isdigit())
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        tree = ckptr.restore(log_dir / "checkpoints" / str(steps[-1]), args=args)
    return steps, tree["state"]["params"]


@pytest.mark.slow
def test_sigterm_saves_exits_0_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    subprocess.run(command(straight), check=True, env=env, capture_output=True)

    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    proc = subprocess.Popen(command(stopped), env=env, **pipes)
    deadline = time.time() + 300
    while not (stopped / "metrics.jsonl").exists() or len(losses(stopped)) < 3:
        assert proc.poll() is None and time.time() < deadline, "run ended before the signal"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    stop_steps, _ = last_params(stopped)
    assert len(stop_steps) == 1, f"save_every=0: only the preemption checkpoint, got {stop_steps}"
    n = stop_steps[0]
    assert 3 <= n < 24 and resume_line(n) in out and resume_line(n) in (stopped / "logs.log").read_text()
    assert max(losses(stopped)) == n - 1, "every step before the checkpoint is logged, none after"

    rerun = subprocess.run(command(stopped), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(step {n})" in rerun.stderr and "resumed from" in rerun.stderr

    a, b = losses(straight), losses(stopped)
    assert sorted(a) == sorted(b) == list(range(24))
    np.testing.assert_allclose([b[s] for s in range(24)], [a[s] for s in range(24)], rtol=1e-5, atol=1e-6)
    (steps_a, params_a), (steps_b, params_b) = last_params(straight), last_params(stopped)
    assert steps_a[-1] == steps_b[-1] == 24
    for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("sft", {}),
        ("dpo", {}),
        ("rl", {"max_steps": 5}),
        ("rl", {"max_steps": 5, "mode": "async"}),
        ("rl", {"max_steps": 5, "mode": "stream"}),
    ],
    ids=["sft", "dpo", "rl-sync", "rl-async", "rl-stream"],
)
def test_every_workflow_loop_stops_at_the_next_boundary_with_a_checkpoint(
    recipe, overrides, tmp_path, monkeypatch
):
    """A SIGTERM sent (to this very process) as step 1 is logged: the loop finishes the step in flight
    (step 1; SFT has step 2 in flight too) and saves the state after it, then stops."""
    import jaxcook
    from jaxcook.workflows.preemption import Preempted
    from jaxcook.workflows.training_run import TrainingRun

    log = TrainingRun.log

    def log_then_signal(self, metrics, step):
        log(self, metrics, step)
        if step == 1 and self.preemption.signal_name is None:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TrainingRun, "log", log_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    log_dir = tmp_path / recipe
    options = {"run.log_dir": str(log_dir), "run.save_every": 0, "max_steps": 4, **overrides}
    with pytest.raises(Preempted) as stop:
        jaxcook.run(recipe, tiny=True, **options)
    n = stop.value.step
    assert n == (3 if recipe == "sft" else 2) and stop.value.signal_name == "SIGTERM"
    assert sorted(p.name for p in (log_dir / "checkpoints").iterdir()) == [str(n)]
    assert signal.getsignal(signal.SIGTERM) is before, "the run put the previous handler back"
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == n - 1 and resume_line(n) in (log_dir / "logs.log").read_text()


MULTIHOST = """
import sys, time
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[1]))
from jaxcook.workflows.preemption import Preemption
p = Preemption().install()
for step in range(100000):
    if step == 5:
        print("running", flush=True)
    time.sleep(0.01)
    if p.requested(step):  # a collective: both processes ask at every step
        print(f"stop {step} {p.signal_name}", flush=True)
        break
"""


def test_two_processes_stop_at_the_same_step_when_only_one_is_signalled():
    """Two real JAX processes (CPU, gloo collectives): SIGTERM to process 0 stops both at one step."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTIHOST, str(i), address],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(2)
    ]
    try:
        while procs[0].stdout.readline().strip() != "running":  # gloo prints its own lines first
            assert procs[0].poll() is None, "process 0 ended before its loop"
        time.sleep(0.2)
        procs[0].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0]
    stops = [
        [line.split(" ", 2)[1:] for line in out.splitlines() if line.startswith("stop ")] for out in outs
    ]
    assert stops[0] == [[stops[1][0][0], "SIGTERM"]], outs
    assert stops[1] == [[stops[0][0][0], "a signal to another process"]], outs
    assert int(stops[0][0][0]) > 5


def test_in_a_notebook_a_second_interrupt_raises_keyboard_interrupt(monkeypatch):
    exits = []
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # any module: "running under a kernel"
    p = Preemption(exit_now=exits.append).install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert p.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode boundary
        assert exits == []
    finally:
        p.uninstall()
