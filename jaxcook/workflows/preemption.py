"""Preemption: SIGTERM / SIGINT end a run cleanly at a step boundary, with a checkpoint to resume from.

Spot and preemptible machines get a SIGTERM some seconds before they are taken away; a user
stops a run with Ctrl-C (SIGINT). While a `TrainingRun` is open, the first such signal only
sets a flag: the loop finishes the step in flight, `TrainingRun.maybe_save` sees the flag at the
next step boundary, writes a checkpoint, flushes the logs and raises `Preempted`, which
`scripts/train.py` turns into exit status 0 and the line "preempted at step N; rerun the same
command to resume". A second signal exits at once (status 128 + signal number), for a run
that must die now; in a notebook a second SIGINT (interrupt) raises `KeyboardInterrupt`
instead, so the kernel survives.

Multi-host: every process must save the same step (an Orbax save is a collective). A signal
may reach some processes only, or reach them between different steps, so the decision is
made together: at each step boundary every process calls `Preemption.requested(step)`, which
for `jax.process_count() > 1` all-gathers the local flags (`multihost_utils.process_allgather`)
and stops every process when any one was signalled. The loops call it once per step in every
process, in the same order, so the collectives match. Single-process runs skip the collective.
(Tested with two JAX processes on one CPU host, gloo collectives; on CPU a multi-process run
needs `jax_cpu_collectives_implementation="gloo"`, set by whoever calls
`jax.distributed.initialize`.)

Handlers are installed only from the main thread (Python delivers signals there) and the
previous handlers are put back when the run closes, so a notebook's Ctrl-C behaves as before
once the run is over.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint at `step`; rerunning resumes there."""

    def __init__(self, step: int, checkpoint: str, signal_name: str):
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name
        super().__init__(resume_line(step))


def resume_line(step: int) -> str:
    return f"preempted at step {step}; rerun the same command to resume"


class Preemption:
    """The stop flag a signal sets, and the step at which every process agrees to stop."""

    def __init__(self, signals=SIGNALS, *, exit_now: Callable[[int], None] = os._exit):
        self.signals = tuple(signals)
        self.signal_name: str | None = None  # the first signal received, None while running
        self._exit_now = exit_now
        self._previous: dict[int, object] = {}
        self._decided: tuple[int, bool] | None = None  # (step, agreed flag) of the last decision

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> Preemption:
        """Take over the signals (a no-op outside the main thread, where Python cannot)."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            if signum == signal.SIGINT and "ipykernel" in sys.modules:
                raise KeyboardInterrupt  # a notebook's second interrupt stops the cell, not the kernel
            # stderr directly: a logging handler may hold the lock the interrupted code was using
            sys.stderr.write(f"\n{name} again: exiting now without a checkpoint\n")
            sys.stderr.flush()
            self._exit_now(128 + signum)
            return
        self.signal_name = name
        sys.stderr.write(
            f"\n{name}: finishing the current step, then saving a checkpoint and exiting "
            f"(send it again to exit at once)\n"
        )
        sys.stderr.flush()

    def requested(self, step: int) -> bool:
        """Whether to stop at the boundary before `step`; the same answer in every process.

        Every process must call this at the same steps (it is a collective when there are
        several); asking twice for the same step gives the first answer without a collective.
        """
        if self._decided is not None and self._decided[0] == step:
            return self._decided[1]
        flag = self.signal_name is not None
        flag = _any_process(flag)
        self._decided = (step, flag)
        if flag and self.signal_name is None:
            self.signal_name = "a signal to another process"
        return flag


def _any_process(flag: bool) -> bool:
    import jax

    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
    return bool(np.asarray(flags).any())
