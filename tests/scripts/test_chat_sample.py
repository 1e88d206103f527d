"""scripts/sample.py and scripts/chat.py on a tiny run, and the chunked streaming they use."""

import contextlib
import importlib.util
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxcook.chat import ChatSession, TextStream, stream_tokens
from jaxcook.trained import load_trained
from jaxcook.types import ModelInput, SamplingParams

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def sample_main(*args):
    """scripts/sample.py's main in this process: (exit status, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("script_sample", ROOT / "scripts" / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def base():
    """The untrained 2-layer random model: greedy decoding gives varied tokens."""
    trained = load_trained("tiny-random-smollm2")
    return trained, trained.sampling_client(seed=0)


def test_chunked_greedy_stream_equals_one_call(base):
    trained, client = base
    prompt = trained.renderer().build_generation_prompt([{"role": "user", "content": "Count to ten."}])
    greedy = SamplingParams(max_tokens=13, temperature=0.0, stop=[])
    whole = client.sample(prompt, 1, greedy).result().sequences[0].tokens
    chunks = list(stream_tokens(client, prompt.to_ints(), greedy, chunk_tokens=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 1]
    assert sum(chunks, []) == whole
    # A stop token inside the third chunk ends the stream there, the stop token included.
    stop_at = whole[9]
    first = whole.index(stop_at)
    stopped = sum(stream_tokens(client, prompt.to_ints(), greedy, stop=[stop_at], chunk_tokens=4), [])
    assert stopped == whole[: first + 1]


def test_stop_string_split_across_chunks(base):
    trained, client = base
    decode = trained.tokenizer.decode
    prompt = trained.tokenizer.encode("The", add_special_tokens=False)
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=5, stop=[])
    whole = sum(stream_tokens(client, prompt, params, chunk_tokens=4), [])
    assert len(whole) == 12
    # The text tokens 3 and 4 add: it straddles the chunk boundary after token 3 (chunks of 4).
    stop = decode(whole[:5])[len(decode(whole[:3])) :]
    first = next(n for n in range(1, 13) if stop in decode(whole[:n]))
    assert first == 5 and stop not in decode(whole[4:8])  # neither chunk alone contains it
    got = sum(stream_tokens(client, prompt, params, stop=[stop], chunk_tokens=4), [])
    assert got == whole[:5]


def test_text_stream_deltas_add_up(base):
    trained, client = base
    ids = trained.tokenizer.encode("héllo wörld, ünïcode ✓", add_special_tokens=False)
    stream = TextStream(trained.tokenizer)
    deltas = [stream.push([t]) for t in ids]
    assert "".join(deltas) == trained.tokenizer.decode(ids)
    assert all("\ufffd" not in d for d in deltas)


def write_prompts(path):
    rows = [
        {"prompt": "What is 2+3?", "id": "a"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        {"text": "Once upon a time"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_sample_script_matches_in_process_sampling(lora_run, tmp_path):
    rows = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "samples.jsonl"
    prompts = tmp_path / "prompts.jsonl"
    done = sample_main(lora_run, "--prompts", prompts, "--out", out, "--max-tokens", "6", "--seed", "4")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [
        {k: v for k, v in line.items() if k not in ("completions", "stop_reasons")} for line in lines
    ] == rows
    trained = load_trained(lora_run)
    renderer, client = trained.renderer(), trained.sampling_client()
    # Temperature 1, seed 4 (greedy replies of the tiny run are all newlines): a request's sample
    # depends on its seed, not on the batch it is in.
    greedy = SamplingParams(max_tokens=6, seed=4, stop=renderer.get_stop_sequences())
    chat = [
        renderer.build_generation_prompt([{"role": "user", "content": "What is 2+3?"}]),
        renderer.build_generation_prompt(rows[1]["messages"]),
    ]
    expected = [
        renderer.parse_response(client.sample(p, 1, greedy).result().sequences[0].tokens)[0]["content"]
        for p in chat
    ]
    raw = ModelInput.from_ints(trained.tokenizer.encode("Once upon a time", add_special_tokens=False))
    raw_tokens = client.sample(raw, 1, SamplingParams(max_tokens=6, seed=4)).result().sequences[0].tokens
    expected.append(trained.tokenizer.decode(raw_tokens, skip_special_tokens=True))
    assert [line["completions"] for line in lines] == [[e] for e in expected]
    assert all(e.strip() for e in expected)  # real text, not only the newlines greedy gives


def test_sample_script_bad_line_is_one_line_error(lora_run, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"question": "no prompt key"}\n')
    done = sample_main(lora_run, "--prompts", prompts)
    assert done.returncode == 2
    assert f"{prompts}:2: a prompt record needs exactly one of prompt, messages, text" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


class Terminal:
    """scripts/chat.py on a pseudo-terminal: write lines, read until the next "> " prompt."""

    def __init__(self, args):
        self.master, slave = pty.openpty()
        cmd = [sys.executable, str(ROOT / "scripts/chat.py"), *args]
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, env=ENV)
        os.close(slave)
        self.chunks: list[bytes] = []  # every read, to see the reply arrive in pieces

    def read_until_prompt(self, timeout=180.0) -> str:
        buf, deadline = b"", time.monotonic() + timeout
        while not buf.endswith(b"> "):
            assert time.monotonic() < deadline, f"no prompt; got {buf!r}"
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if ready:
                data = os.read(self.master, 4096)
                assert data, f"chat.py exited; got {buf!r}"
                self.chunks.append(data)
                buf += data
        return buf.decode().replace("\r\n", "\n")[: -len("> ")]

    def send(self, line: str) -> str:
        os.write(self.master, (line + "\n").encode())
        echoed = self.read_until_prompt()
        assert echoed.startswith(line + "\n")  # the terminal echoes the typed line
        return echoed[len(line) + 1 :]


def test_chat_on_a_pty_streams_and_obeys_commands(lora_run):
    args = [str(lora_run), "--max-tokens", "12", "--temperature", "1", "--seed", "3", "--chunk-tokens", "4"]
    term = Terminal(args)
    try:
        banner = term.read_until_prompt()
        assert "renderer chatml" in banner and "/reset" in banner
        first = term.send("Hello there")
        second = term.send("And again?")
        assert (
            term.send("/system You are terse.") == "(system prompt set: You are terse.; conversation reset)\n"
        )
        third = term.send("Hello there")
        assert term.send("/reset") == "(conversation reset)\n"
        fourth = term.send("Hello there")
        assert term.send("/nope").startswith("(unknown command /nope;")
        os.write(term.master, b"/quit\n")
        assert term.proc.wait(timeout=60) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)

    # The same conversation in process, with the same seeds, gives the same replies.
    trained = load_trained(lora_run)
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=3)
    session = ChatSession(trained.sampling_client(seed=3), trained.renderer(), params, chunk_tokens=4)
    assert first == session.reply("Hello there") + "\n"
    assert second == session.reply("And again?") + "\n"
    session.set_system("You are terse.")
    assert third == session.reply("Hello there") + "\n"
    session.reset()
    assert session.messages() == [{"role": "system", "content": "You are terse."}]
    assert fourth == session.reply("Hello there") + "\n"
    assert third == fourth  # same seed, same conversation after /reset
    assert first != third  # the system prompt changed the reply
