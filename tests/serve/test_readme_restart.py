"""The README's two commands, run as written (tiny model, free port, temp dirs), then SIGKILL
the server mid-run, restart it on the same state dir, and let the cookbook resume from its
last checkpoint."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Run tinker-cookbook on your own machine", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TINKER_TELEMETRY": "0", "HF_HUB_OFFLINE": "1"}
    with open(log, "ab") as out:
        # A session of its own: SIGKILL reaches the shell's child (the python process) too.
        return subprocess.Popen(
            cmd, shell=True, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(url + "/api/v1/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def checkpoints(log_path: Path) -> list[dict]:
    f = log_path / "checkpoints.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def test_readme_commands_then_sigkill_restart_and_resume(tiny_model_dir, tmp_path):
    serve_cmd, cookbook_cmd = readme_commands()
    port, state, log_path = free_port(), tmp_path / "state", tmp_path / "cookbook-sft"
    url = f"http://127.0.0.1:{port}"
    python = sys.executable
    serve_cmd = (
        serve_cmd.replace(".venv/bin/python", python)
        .replace("smollm2-135m-instruct", tiny_model_dir)
        .replace("--port 8000", f"--port {port}")
        .replace('"$HOME/jaxcook-serve"', str(state))
    )
    cookbook_cmd = (
        cookbook_cmd.replace(".venv/bin/python", python)
        .replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        .replace("$HOME/jaxcook-serve", str(state))
        .replace("/tmp/cookbook-sft", str(log_path))
    ) + " save_every=2 eval_every=0 infrequent_eval_every=0"
    server = start(serve_cmd, tmp_path / "server.log")
    cookbook = None
    try:
        wait_healthy(url, server)
        cookbook = start(cookbook_cmd, tmp_path / "cookbook.log")
        while len(checkpoints(log_path)) < 2:  # two periodic checkpoints written, training goes on
            assert cookbook.poll() is None, (tmp_path / "cookbook.log").read_text()[-3000:]
            time.sleep(0.5)
        kill(server)
        kill(cookbook)  # its SDK would retry the dead server for minutes
        last = checkpoints(log_path)[-1]
        assert last["name"] != "final"

        server = start(serve_cmd, tmp_path / "server.log")  # same state dir
        wait_healthy(url, server)
        import tinker

        rest = tinker.RestClient(base_url=url, api_key="tml-dummy")
        run_id = last["state_path"].split("/")[2]
        listed = [c.tinker_path for c in rest.list_checkpoints(run_id).result().checkpoints]
        assert last["state_path"] in listed and last["sampler_path"] in listed

        resume = cookbook_cmd.replace(
            "behavior_if_log_dir_exists=delete", "behavior_if_log_dir_exists=resume"
        )
        done = subprocess.run(
            resume,
            shell=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"Resumed training from {last['state_path']}" in done.stdout + done.stderr
        assert checkpoints(log_path)[-1]["name"] == "final"
        steps = [json.loads(x)["step"] for x in (log_path / "metrics.jsonl").read_text().splitlines()]
        assert max(steps) == 7  # 128 conversations / 16, one epoch: every step ran
    finally:
        for proc in (server, cookbook):
            if proc is not None:
                kill(proc)
