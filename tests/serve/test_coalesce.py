"""The server's sample coalescing (jaxcook/serve/coalesce.py) on a stand-in sampler whose calls
finish when the test says: requests that queue up on a busy sampler go as one call, in order;
a failing call is retried request by request, so only the bad request fails."""

import time
from concurrent.futures import Future

import pytest

from jaxcook.serve.coalesce import CoalescingSampler


class Gated:
    """`sample_many` / `sample` that return futures the test resolves: result = the prompts."""

    def __init__(self, bad=()):
        self.calls: list[list] = []
        self.pending: list[tuple[Future, list]] = []
        self.bad = set(bad)

    def sample_many(self, prompts, counts, params, prompt_logprobs, *, single=False):
        # pending first: a test that polls `calls` from another thread (the window's timer
        # calls this) must find the call's future already there
        f = Future()
        self.pending.append((f, list(prompts), single))
        self.calls.append(list(prompts))
        return f

    def sample(self, prompt, n, params, prompt_logprobs):
        if prompt in self.bad:
            raise ValueError(f"bad prompt {prompt}")
        return self.sample_many([prompt], [n], [params], prompt_logprobs, single=True)

    def finish(self):
        """Resolve the oldest call (`sample`: one response, `sample_many`: a list); fail it if it
        holds a bad prompt."""
        f, prompts, single = self.pending.pop(0)
        if self.bad & set(prompts):
            f.set_exception(ValueError("a bad prompt in the call"))
        else:
            out = [f"out-{p}" for p in prompts]
            f.set_result(out[0] if single else out)


def test_requests_that_queue_on_a_busy_sampler_go_together_in_order():
    client = Gated()
    s = CoalescingSampler(client)
    first = s.sample("a", 4, None)
    rest = [s.sample(p, 4, None) for p in "bcd"]
    assert client.calls == [["a"]]  # idle: started at once; the others wait for it
    client.finish()
    assert client.calls == [["a"], ["b", "c", "d"]]
    assert first.result(timeout=1) == "out-a" and not any(f.done() for f in rest)
    client.finish()
    assert [f.result(timeout=1) for f in rest] == ["out-b", "out-c", "out-d"]
    assert s.calls == 2 and client.pending == []
    s.sample("e", 1, None)  # idle again: at once
    assert client.calls[-1] == ["e"]


def test_groups_keep_to_max_rows_and_to_one_prompt_logprobs_setting():
    client = Gated()
    s = CoalescingSampler(client, max_rows=8)
    s.sample("a", 1, None)
    futures = [s.sample("b", 4, None), s.sample("c", 4, None, True), s.sample("d", 4, None)]
    futures.append(s.sample("e", 4, None))
    for _ in range(4):
        client.finish()
    # b and d fill 8 rows (c asks for prompt log-probs: a call of its own); e goes last
    assert client.calls == [["a"], ["b", "d"], ["c"], ["e"]]
    assert [f.result(timeout=1) for f in futures] == ["out-b", "out-c", "out-d", "out-e"]


def test_a_failed_call_is_retried_request_by_request_and_only_the_bad_one_fails():
    client = Gated(bad={"c"})
    s = CoalescingSampler(client)
    s.sample("a", 2, None)
    futures = {p: s.sample(p, 2, None) for p in "bcd"}
    while client.pending:
        client.finish()
    assert futures["b"].result(timeout=1) == "out-b" and futures["d"].result(timeout=1) == "out-d"
    with pytest.raises(ValueError, match="bad prompt c"):
        futures["c"].result(timeout=1)
    assert client.calls[1] == ["b", "c", "d"] and ["b"] in client.calls[2:]
    s.sample("e", 1, None)  # the queue still runs
    client.finish()
    assert client.calls[-1] == ["e"]


def test_an_idle_sampler_waits_its_window_for_the_rest_of_a_burst():
    client = Gated()
    s = CoalescingSampler(client, window_s=0.5)
    futures = [s.sample(p, 2, None) for p in "abc"]
    assert client.calls == []  # nothing yet: the window is open
    deadline = time.monotonic() + 5
    while not client.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.calls == [["a", "b", "c"]]
    client.finish()
    assert [f.result(timeout=1) for f in futures] == ["out-a", "out-b", "out-c"]
