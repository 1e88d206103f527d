"""Async RL holds at most `max_steps_off_policy + 1` sampler snapshots, and its memory stays flat."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import jax
import pytest

from jaxcook.workflows.rl_async import _Snapshots


class FakeSampler:
    def __init__(self, version):
        self.version, self.closed = version, False

    def close(self):
        self.closed = True


class FakeCtx:
    def __init__(self):
        self.made: list[FakeSampler] = []

    def sampler(self, version):
        self.made.append(FakeSampler(version))
        return self.made[-1], f"policy {version}"


@pytest.mark.parametrize("max_off", [0, 1, 3])
def test_snapshots_in_use_are_kept_stale_ones_cancelled_and_closed(max_off):
    """Every version gets a rollout that never ends by itself: only cancellation frees a snapshot."""
    ctx = FakeCtx()
    snaps = _Snapshots(ctx, max_off)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cancelled: list[int] = []

    async def rollout():
        task = asyncio.current_task()
        snap = snaps.acquire(task)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(snap.version)
            snaps.release(snap, task)
            raise

    snaps.loop = loop
    try:
        for version in range(12):
            snaps.publish(version)
            asyncio.run_coroutine_threadsafe(rollout(), loop)
            while not snaps.newest.tasks:  # the rollout has taken the newest snapshot
                pass
            assert sorted(snaps.live) == list(range(max(0, version - max_off), version + 1))
            open_ = [s.version for s in ctx.made if not s.closed]
            assert open_ == sorted(snaps.live), "a snapshot out of `live` is closed, one in it is not"
        assert snaps.most_live == max_off + 1
        assert cancelled == list(range(12 - max_off - 1))  # every stale rollout, in order
    finally:

        async def cancel_the_rest():
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_the_rest(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_a_superseded_snapshot_is_closed_when_its_last_rollout_ends():
    ctx = FakeCtx()
    snaps = _Snapshots(ctx, max_off_policy=4)
    snaps.publish(0)
    first = snaps.acquire("task-a")
    snaps.publish(1)
    assert not ctx.made[0].closed and sorted(snaps.live) == [0, 1]  # still sampling
    snaps.release(first, "task-a")
    assert ctx.made[0].closed and sorted(snaps.live) == [1]
    snaps.publish(2)  # nothing used 1: closed at once
    assert ctx.made[1].closed and sorted(snaps.live) == [2]


@pytest.mark.slow  # 24 async iterations of the tiny model: ~30 s idle, 90 s on a loaded 2-core machine
def test_a_long_async_run_keeps_snapshots_bounded_and_live_arrays_flat(tmp_path, monkeypatch):
    import jaxcook
    from jaxcook.sampling.client import LocalSamplingClient
    from jaxcook.workflows.training_run import TrainingRun

    samplers: weakref.WeakSet = weakref.WeakSet()
    init = LocalSamplingClient.__init__

    def tracked_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        samplers.add(self)

    monkeypatch.setattr(LocalSamplingClient, "__init__", tracked_init)
    seen: list[tuple[int, int, int]] = []  # (step, live samplers, live jax arrays)
    log = TrainingRun.log

    def log_and_count(self, metrics, step):
        log(self, metrics, step)
        if "async/staleness_mean" in metrics:  # a training step of the async loop
            gc.collect()
            seen.append((step, len(samplers), len(jax.live_arrays())))

    monkeypatch.setattr(TrainingRun, "log", log_and_count)
    max_off, steps = 1, 24
    jaxcook.run(
        "rl",
        tiny=True,
        mode="async",
        max_steps_off_policy=max_off,
        max_steps=steps,
        eval_every=0,
        **{"run.log_dir": str(tmp_path / "run"), "run.save_every": 0},
    )
    arrays = [a for _, _, a in seen]
    print("live samplers per step:", [n for _, n, _ in seen])
    print("live arrays per step:", arrays)
    assert [s for s, _, _ in seen] == list(range(steps))
    assert max(n for _, n, _ in seen) <= max_off + 1, seen
    # Flat: the count rises only with what is in flight (the KV caches of running rollouts) and
    # falls back to the same floor, whatever the number of steps taken. Keeping every snapshot
    # (as before) raised the floor by the trainable leaves (LoRA A and B of every projection,
    # 28 arrays here) at every step.
    assert min(arrays[-8:]) <= min(arrays[2:10]), arrays
