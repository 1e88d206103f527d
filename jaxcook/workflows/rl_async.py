"""The two overlapping RL modes: streaming minibatches, and asynchronous off-policy training.

Streaming (one iteration): every group's rollout starts at once; finished groups queue up, and
each of the `num_substeps` substeps takes its share of groups in `stream_minibatches` chunks,
issuing a forward/backward as soon as a chunk is complete (the trainer works while the other
rollouts finish) and one optimizer step per substep.

Async: a background thread runs an event loop that keeps up to
`groups_per_batch * (max_steps_off_policy + 1)` groups in flight or waiting, each sampled by the
newest snapshot at its start and tagged with that snapshot's version (the number of optimizer
steps it had seen). The trainer, at step s, takes finished groups, discards (and counts) any
with `s - version > max_steps_off_policy`, trains on `groups_per_batch` fresh ones and publishes
a new snapshot. At most `max_steps_off_policy + 1` snapshots are alive (`_Snapshots`): one
that no step can train on any more is closed and its rollouts cancelled, so memory stays flat
over a long run (`async/live_snapshots` is logged per step).

Resume is not exact, and cannot be: which groups finish first depends on thread timing, so two
uninterrupted async runs already differ. A resumed run restarts sampling from the restored
weights at the restored step: the rollouts in flight when it stopped (up to
`groups_per_batch * (max_steps_off_policy + 1)` groups) are lost and sampled again from the
restored snapshot, so the first `max_steps_off_policy` steps after a resume are more on-policy
than they would have been. `sync` and `stream` modes resume exactly. Measured with
`python -m benchmarks.async_resume` (tiny model, 12 steps, resumed at 6, on a loaded 2-core
CPU): the groups trained differ from an uninterrupted run's in 2 of 12 steps, where a second
uninterrupted run already differs in 1 of 12; `--mode sync`: 0 of 12.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import numpy as np

from jaxcook.logging import trace
from jaxcook.rl import compute_trajectory_metrics
from jaxcook.rl.rollouts import GroupRolloutError, do_group_rollout, rollout_error_metrics
from jaxcook.workflows.rl_train import _chunks, groups_to_data, numerics_metrics, submit_forward_backward


async def _group_or_error(builder, policy, ctx):
    try:
        return await do_group_rollout(builder, policy, ctx.strategy, ctx.rollout_config)
    except GroupRolloutError as e:
        return e


def _shape(ctx, data, meta, metrics):
    for shape in ctx.shapers:
        data, shaped = shape(data, meta)
        metrics.update(shaped)
    return data


def stream_iteration(ctx, builders, policy, step: int):
    """Roll out one iteration's groups and train on them as they finish.

    Returns (groups, rollout metrics, training metrics)."""
    cfg = ctx.cfg
    adam = cfg.optim.adam_params(step, ctx.total)
    t0 = time.perf_counter()
    results: list = []
    metrics: dict[str, float] = {"train/loss": 0.0}
    plan = [
        [len(mb) for mb in _chunks(members, cfg.stream_minibatches)]
        for members in _chunks(list(range(len(builders))), cfg.num_substeps)
    ]

    async def main():
        pending = [asyncio.ensure_future(_group_or_error(b, policy, ctx)) for b in builders]
        arrivals = asyncio.as_completed(pending)
        remaining, buffer, first = len(pending), [], True
        for sizes in plan:
            submitted = []
            for size in sizes:
                while len(buffer) < size and remaining:
                    result = await next(arrivals)
                    remaining -= 1
                    results.append(result)
                    if not isinstance(result, GroupRolloutError):
                        buffer.append(result)
                chunk, buffer[:] = buffer[:size], buffer[size:]
                data, meta, _ = groups_to_data(chunk, remove_constant=cfg.remove_constant_reward_groups)
                data = _shape(ctx, data, meta, metrics)
                if data:
                    futures = submit_forward_backward(
                        ctx.client,
                        data,
                        loss_fn=cfg.loss_fn,
                        loss_fn_config=cfg.loss_fn_config,
                        max_rows=cfg.microbatch_size,
                    )
                    submitted.append((data, futures))
            if not submitted:
                continue
            optim = ctx.client.optim_step(adam)
            for data, futures in submitted:
                outputs = [await asyncio.wrap_future(f) for f in futures]
                metrics["train/loss"] += sum(o.metrics["loss:sum"] for o in outputs)
                if first:
                    metrics.update(numerics_metrics(data, outputs))
                    first = False
            metrics.update(await asyncio.wrap_future(optim))
        while remaining:  # groups the plan did not need (normally none)
            results.append(await next(arrivals))
            remaining -= 1

    with trace.scope("rl/sampling_and_training", step=step):
        asyncio.run(main())
    metrics["time/sampling_and_training_s"] = time.perf_counter() - t0
    groups = [r for r in results if not isinstance(r, GroupRolloutError)]
    return groups, rollout_error_metrics(results), metrics


class _Snapshot:
    """One sampler snapshot: its version, its client and policy, and the rollouts using it."""

    def __init__(self, version: int, sampler, policy):
        self.version, self.sampler, self.policy = version, sampler, policy
        self.tasks: set[asyncio.Task] = set()  # rollouts sampling with it (the producer's loop)
        self.superseded = False


class _Snapshots:
    """The sampler snapshots alive, at most `max_steps_off_policy + 1` of them at any time.

    Rollouts take the newest (`acquire` / `release`). Publishing version v first retires the
    snapshots no trainer step can use any more (version < v - max_off: their groups would be
    discarded as stale): their rollouts are cancelled, and the snapshots closed once released,
    before the new one is made; a superseded snapshot that nothing uses is closed at once. So
    the weights copies alive are the newest and the ones still sampling fresh-enough groups,
    never one per step of the run (with full fine-tuning a snapshot is a copy of the model).
    """

    def __init__(self, ctx, max_off_policy: int):
        self.ctx, self.max_off = ctx, max_off_policy
        self.cond = threading.Condition()
        self.live: dict[int, _Snapshot] = {}
        self.newest: _Snapshot | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the producer's, to cancel rollouts
        self.most_live = 0  # the high-water mark, for tests and metrics

    def publish(self, version: int, *, timeout_s: float = 120.0) -> None:
        with self.cond:
            stale = [s for v, s in self.live.items() if v < version - self.max_off]
            for snap in stale:
                snap.superseded = True
                if self.loop is not None:
                    for task in list(snap.tasks):
                        self.loop.call_soon_threadsafe(task.cancel)
            if not self.cond.wait_for(lambda: all(not s.tasks for s in stale), timeout_s):
                raise RuntimeError(
                    f"async RL: rollouts of snapshot(s) {[s.version for s in stale]} did not stop "
                    f"within {timeout_s}s of being cancelled"
                )
            for snap in stale:
                self._close(snap)
        sampler, policy = self.ctx.sampler(version)
        with self.cond:
            old, self.newest = self.newest, _Snapshot(version, sampler, policy)
            self.live[version] = self.newest
            if old is not None:
                old.superseded = True
                if not old.tasks:
                    self._close(old)
            self.most_live = max(self.most_live, len(self.live))

    def acquire(self, task: asyncio.Task) -> _Snapshot:
        with self.cond:
            self.newest.tasks.add(task)
            return self.newest

    def release(self, snap: _Snapshot, task: asyncio.Task) -> None:
        with self.cond:
            snap.tasks.discard(task)
            if snap.superseded and not snap.tasks:
                if snap.version >= self.newest.version - self.max_off:
                    self._close(snap)  # a fresh-enough one ran out of users; a stale one: publish closes
                self.cond.notify_all()

    def _close(self, snap: _Snapshot) -> None:
        if self.live.pop(snap.version, None) is not None:
            snap.sampler.close()

    def close(self) -> None:
        with self.cond:
            for snap in list(self.live.values()):
                self._close(snap)
            self.newest = None


def _producer(
    ctx,
    snapshots: _Snapshots,
    ready: queue.Queue,
    slots: threading.Semaphore,
    stop: threading.Event,
    first_batch: int,
):
    async def run():
        loop = asyncio.get_running_loop()
        snapshots.loop = loop
        tasks: set[asyncio.Task] = set()
        batch = first_batch

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            if task.cancelled():  # never put in `ready`, so its slot is given back here
                slots.release()

        async def one(builder):
            task = asyncio.current_task()
            snap = snapshots.acquire(task)
            try:
                result = await _group_or_error(builder, snap.policy, ctx)
            finally:
                snapshots.release(snap, task)
            ready.put((snap.version, result))

        while not stop.is_set():
            for builder in ctx.train.get_batch(batch % len(ctx.train)):
                while not await loop.run_in_executor(None, slots.acquire, True, 0.1):
                    if stop.is_set():
                        break
                if stop.is_set():
                    break
                task = asyncio.ensure_future(one(builder))
                tasks.add(task)
                task.add_done_callback(finished)
            batch += 1
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def async_loop(ctx, start: int) -> None:
    from jaxcook.logging import ProgressBar

    cfg, run = ctx.cfg, ctx.run
    G = cfg.groups_per_batch
    ready: queue.Queue = queue.Queue()
    slots = threading.Semaphore(G * (cfg.max_steps_off_policy + 1))
    stop = threading.Event()
    snapshots = _Snapshots(ctx, cfg.max_steps_off_policy)
    snapshots.publish(start)
    thread = threading.Thread(target=_producer, args=(ctx, snapshots, ready, slots, stop, start), daemon=True)
    thread.start()
    progress = ProgressBar(ctx.total, start_step=start, desc="rl-async")
    try:
        for step in range(start, ctx.total):
            t_iter = time.perf_counter()
            if ctx.has_evals and (step == 0 or (cfg.eval_every and step % cfg.eval_every == 0)):
                run.log(ctx.evaluate(step), step)
            with trace.scope("rl/waiting_for_groups", step=step):
                kept, versions, results, discarded = take_fresh_groups(
                    ready, slots, step, G, cfg.max_steps_off_policy
                )
            metrics = {
                "time/waiting_for_groups_s": time.perf_counter() - t_iter,
                "async/discarded_stale_groups": float(discarded),
                "async/live_snapshots": float(len(snapshots.live)),
                **staleness_metrics(versions, step),
                **rollout_error_metrics(results),
            }
            with trace.scope("rl/train", step=step):
                metrics.update(ctx.train_on_groups(kept, step))
            snapshots.publish(step + 1)
            metrics.update(compute_trajectory_metrics(kept))
            ctx.report(kept, step)
            metrics.update(
                {
                    "progress/batch": step,
                    "progress/done_frac": (step + 1) / ctx.total,
                    "time/total_s": time.perf_counter() - t_iter,
                }
            )
            run.log(metrics, step)
            trace.record("rl/step", t_iter, time.perf_counter(), step=step, mode="async")
            progress.update(step + 1, loss=metrics.get("env/all/reward/total"))
            run.maybe_save(step + 1, ctx.client, {"renderer_name": ctx.setup.renderer_name})
    finally:
        stop.set()
        thread.join(timeout=60)
        snapshots.close()
        progress.close()


def take_fresh_groups(
    ready: queue.Queue, slots: threading.Semaphore, step: int, count: int, max_off_policy: int
):
    """Take finished groups until `count` are fresh enough for trainer step `step`.

    Returns (kept groups, their versions, every result taken, number discarded as too stale).
    A group sampled by the snapshot of version v is kept iff `step - v <= max_off_policy`."""
    kept, versions, results, discarded = [], [], [], 0
    while len(kept) < count:
        version, result = ready.get()
        slots.release()
        results.append(result)
        if isinstance(result, GroupRolloutError):
            continue
        if step - version > max_off_policy:
            discarded += 1  # too stale: never trained on
            continue
        kept.append(result)
        versions.append(version)
    return kept, versions, results, discarded


def staleness_metrics(versions: list[int], step: int) -> dict[str, float]:
    """How many optimizer steps behind the trainer the sampled groups are (0 = on-policy)."""
    stale = [step - v for v in versions]
    return {
        "async/staleness_mean": float(np.mean(stale)) if stale else 0.0,
        "async/staleness_max": float(max(stale, default=0)),
    }
