"""Sample requests to one sampler that arrive while it is busy go to it as one decode call.

tinker-cookbook's RL loop sends one `asample` per group, all at once (8 groups: 8 requests of
`group_size` samples each). Decoded one by one, each request pays the whole per-token cost of
reading the weights for a few rows; decoded together, the rows share it. So a request that finds
its sampler idle starts after `window_s` (the server's: 20 ms, so that a burst sent at once goes
as one call and a run compiles one decode shape, not two); those that come in while a call runs
wait for it to end and then go together, as one `sample_many` (up to `max_rows` sample rows per
call). A row's tokens depend only on its prompt, parameters, seed and sample index
(`jaxcook.sampling.decode`), and each request keeps its own seed, so grouping changes which call
a request rides in, not what it returns. A call that fails is retried request by request, so
one bad request fails alone.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field


@dataclass
class _Pending:
    prompt: object
    num_samples: int
    params: object
    prompt_logprobs: bool
    out: Future = field(default_factory=Future)


class CoalescingSampler:
    """`sample` over a `LocalSamplingClient` (`client`), grouping the requests that queue up."""

    def __init__(self, client, *, max_rows: int = 512, window_s: float = 0.0):
        self.client = client
        self.max_rows = max_rows
        self.window_s = window_s  # an idle sampler waits this long for the rest of a burst
        self.calls = 0  # decode calls made (a test reads it)
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False

    def sample(self, prompt, num_samples: int, params, prompt_logprobs: bool = False) -> Future:
        """Future[SampleResponse], as `LocalSamplingClient.sample`."""
        p = _Pending(prompt, num_samples, params, prompt_logprobs)
        with self._lock:
            self._queue.append(p)
            if self._busy:
                return p.out
            self._busy = True
        if self.window_s > 0:
            timer = threading.Timer(self.window_s, self._next)
            timer.daemon = True
            timer.start()
        else:
            self._next()
        return p.out

    def _take(self) -> list[_Pending]:
        """The oldest request and those after it with the same `prompt_logprobs`, up to
        `max_rows` rows (the oldest always goes)."""
        with self._lock:
            if not self._queue:
                self._busy = False
                return []
            first, rows, batch, rest = self._queue[0], 0, [], []
            for p in self._queue:
                fits = not batch or rows + p.num_samples <= self.max_rows
                if p.prompt_logprobs == first.prompt_logprobs and fits:
                    batch.append(p)
                    rows += p.num_samples
                else:
                    rest.append(p)
            self._queue = rest
            return batch

    def _next(self) -> None:
        batch = self._take()
        if not batch:
            return
        self.calls += 1
        try:
            future = self.client.sample_many(
                [p.prompt for p in batch],
                [p.num_samples for p in batch],
                [p.params for p in batch],
                batch[0].prompt_logprobs,
            )
        except Exception:  # noqa: BLE001 - a bad request among them: each on its own
            self._one_by_one(batch)
            return
        future.add_done_callback(lambda f: self._finished(batch, f))

    def _finished(self, batch: list[_Pending], f: Future) -> None:
        if f.exception() is not None:
            self._one_by_one(batch)
            return
        for p, r in zip(batch, f.result()):
            p.out.set_result(r)
        self._next()

    def _one_by_one(self, batch: list[_Pending]) -> None:
        """Each request of a failed group alone, in order; then the queue goes on."""
        if len(batch) == 1:
            p = batch[0]
            try:
                single = self.client.sample(p.prompt, p.num_samples, p.params, p.prompt_logprobs)
            except Exception as e:  # noqa: BLE001 - handed on through the request's future
                p.out.set_exception(e)
                self._next()
                return

            def done(f: Future) -> None:
                if f.exception() is not None:
                    p.out.set_exception(f.exception())
                else:
                    p.out.set_result(f.result())
                self._next()

            single.add_done_callback(done)
            return
        head, tail = batch[0], batch[1:]
        with self._lock:
            self._queue[:0] = tail  # back at the front, in order, after the head
        self._one_by_one([head])

    def close(self) -> None:
        self.client.close()
