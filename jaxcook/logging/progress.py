"""A run's progress: a tqdm bar with loss, tokens/s and ETA on a terminal, periodic log lines elsewhere.

    with ProgressBar(total_steps, start_step=resume_step) as progress:
        for step in range(resume_step, total_steps):
            ...
            progress.update(step + 1, loss=loss, tokens=n_tokens)

Rates are measured over the last `window` updates, so the first step's compilation time stops
weighing on tokens/s and the ETA once the window has moved past it.
"""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

logger = logging.getLogger(__name__)


class ProgressBar:
    """Progress over `total_steps` steps, `start_step` of them done before (a resumed run).

    On a terminal (or in Jupyter) a tqdm bar; otherwise (output redirected to a file, a batch job) an
    INFO log line at the first update, then every `log_every_s` seconds, and at the last step.
    """

    def __init__(
        self,
        total_steps: int,
        *,
        start_step: int = 0,
        desc: str = "train",
        log_every_s: float = 60.0,
        window: int = 20,
        file: TextIO | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if total_steps < 0 or not 0 <= start_step <= max(total_steps, 0):
            raise ValueError(f"need 0 <= start_step <= total_steps, got {start_step} and {total_steps}")
        self.total_steps, self.desc, self.log_every_s = total_steps, desc, log_every_s
        self._clock = clock
        self._start_time = clock()
        self._step, self._tokens = start_step, 0
        # (time s, steps done, tokens so far) at each of the last `window` updates, plus the start.
        self._history = collections.deque([(self._start_time, start_step, 0)], maxlen=window + 1)
        self._last_line_time: float | None = None
        file = file if file is not None else sys.stderr
        if interactive is None:
            interactive = _isatty(file) or "ipykernel" in sys.modules
        self._bar = None
        self._redirect = None
        from jaxcook.engine.distributed import is_main_process

        self._silent = not is_main_process()  # multi-host: process 0 shows progress
        if interactive and not self._silent:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc=desc, file=file, unit="step", dynamic_ncols=True
            )
            # Log lines printed to the console while the bar is shown go above it, not through it.
            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self._redirect.__enter__()

    def update(self, step: int, *, loss: float | None = None, tokens: int = 0, **extra: float) -> None:
        """`step` steps are now done (absolute count); `tokens` were processed since the last update.

        `extra` values are shown after the loss (e.g. `reward=0.73`).
        """
        if step < self._step:
            raise ValueError(f"progress went back from step {self._step} to {step}")
        now = self._clock()
        done = step - self._step
        self._step, self._tokens = step, self._tokens + tokens
        self._history.append((now, step, self._tokens))
        fields = {"loss": loss, **extra}
        postfix = [f"{k} {v:.4g}" for k, v in fields.items() if v is not None]
        if self._tokens:
            postfix.append(f"{self.tokens_per_s():,.0f} tok/s")
        if self._bar is not None:
            self._bar.set_postfix_str(" | ".join(postfix), refresh=False)
            self._bar.update(done)
            return
        due = self._last_line_time is None or now - self._last_line_time >= self.log_every_s
        if (due or step >= self.total_steps) and not self._silent:
            self._last_line_time = now
            eta = self.eta_s()
            timing = [f"elapsed {format_duration(now - self._start_time)}"]
            if eta is not None:
                timing.append(f"eta {format_duration(eta)}")
            percent = 100.0 * step / self.total_steps if self.total_steps else 100.0
            head = f"{self.desc} step {step}/{self.total_steps} ({percent:.1f}%)"
            logger.info(" | ".join([head, *postfix, *timing]))

    def tokens_per_s(self) -> float:
        """Tokens per second over the window (0 before any time has passed)."""
        (t0, _, tok0), (t1, _, tok1) = self._history[0], self._history[-1]
        return (tok1 - tok0) / (t1 - t0) if t1 > t0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the window's step rate; None before any step was timed."""
        (t0, s0, _), (t1, s1, _) = self._history[0], self._history[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return (self.total_steps - self._step) * (t1 - t0) / (s1 - s0)

    def close(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_duration(seconds: float) -> str:
    """3723.4 -> '1h02m03s', 125 -> '2m05s', 7.2 -> '7s'."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _isatty(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False
