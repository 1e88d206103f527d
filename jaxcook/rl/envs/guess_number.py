"""Guess the number: a multi-turn game with "Higher."/"Lower." feedback after each guess.

The secret is an integer in [lo, hi]. Each assistant message is one guess (the last integer it
writes). Reward 1 if the secret is found within `max_guesses` guesses, else 0. A message with no
integer still costs a guess and gets a reminder of the rules. Metrics: `correct` and
`num_guesses` at the end of an episode, `invalid_guess` per turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from jaxcook.renderers import Message, Renderer, get_text_content
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.grading import extract_last_number, parse_number
from jaxcook.rl.envs.message_env import EnvFromMessageEnv, MessageEnv, MessageStepResult
from jaxcook.rl.envs.problem import ProblemGroupBuilder, seeded_train_test
from jaxcook.rl.types import Env, EnvGroupBuilder, RLDataset


def parse_guess(text: str) -> int | None:
    """The last integer in `text`, or None."""
    number = extract_last_number(text)
    value = parse_number(number) if number is not None else None
    return int(value) if value is not None and value.denominator == 1 else None


class GuessNumberEnv(MessageEnv):
    def __init__(self, secret: int, lo: int, hi: int, max_guesses: int):
        if not lo <= secret <= hi:
            raise ValueError(f"secret {secret} is outside [{lo}, {hi}]")
        self.secret, self.lo, self.hi, self.max_guesses = secret, lo, hi, max_guesses
        self.messages: list[Message] = []
        self.num_guesses = 0

    def rules(self) -> str:
        return (
            f"I am thinking of an integer between {self.lo} and {self.hi}. Guess it! After each guess "
            f"I will tell you whether my number is higher or lower. You have {self.max_guesses} "
            "guesses. Reply with only your guess, a single integer."
        )

    async def initial_observation(self) -> list[Message]:
        self.messages = [{"role": "user", "content": self.rules()}]
        return list(self.messages)

    async def step(self, message: Message) -> MessageStepResult:
        self.messages.append(message)
        self.num_guesses += 1
        guess = parse_guess(get_text_content(message))
        done_metrics = {"num_guesses": float(self.num_guesses)}
        if guess == self.secret:
            return MessageStepResult(1.0, True, [], {"invalid_guess": 0.0, "correct": 1.0, **done_metrics})
        invalid = float(guess is None)
        if self.num_guesses >= self.max_guesses:
            metrics = {"invalid_guess": invalid, "correct": 0.0, **done_metrics}
            return MessageStepResult(0.0, True, [], metrics, {"secret": self.secret})
        if guess is None:
            feedback = f"Please reply with a single integer between {self.lo} and {self.hi}."
        else:
            feedback = "Higher." if self.secret > guess else "Lower."
        self.messages.append({"role": "user", "content": feedback})
        return MessageStepResult(0.0, False, list(self.messages), {"invalid_guess": invalid})


def make_guess_number_env(
    renderer: Renderer, secret: int, lo: int, hi: int, max_guesses: int, max_trajectory_tokens: int | None
) -> Env:
    return EnvFromMessageEnv(
        renderer,
        GuessNumberEnv(secret, lo, hi, max_guesses),
        max_trajectory_tokens=max_trajectory_tokens,
        failed_parse_reward=0.0,
    )


def _guess_number_group(
    cfg: GuessNumberDatasetBuilder, renderer: Renderer, rng: np.random.Generator, group_size: int
) -> EnvGroupBuilder:
    secret = int(rng.integers(cfg.lo, cfg.hi + 1))
    env_thunk = partial(
        make_guess_number_env, renderer, secret, cfg.lo, cfg.hi, cfg.max_guesses, cfg.max_trajectory_tokens
    )
    return ProblemGroupBuilder(env_thunk, group_size, "guess_number")


@dataclass(frozen=True, kw_only=True)
class GuessNumberDatasetBuilder(EnvDatasetBuilder):
    lo: int = 1
    hi: int = 20
    max_guesses: int = 5
    max_trajectory_tokens: int | None = None
    n_batches: int = 100
    n_test_problems: int = 64

    def __post_init__(self):
        super().__post_init__()
        if self.lo > self.hi or self.max_guesses < 1:
            raise ValueError(
                f"GuessNumberDatasetBuilder: need lo <= hi and max_guesses >= 1, got lo={self.lo}, "
                f"hi={self.hi}, max_guesses={self.max_guesses}"
            )

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        return seeded_train_test(
            partial(_guess_number_group, self, self.get_renderer()),
            seed=self.seed,
            n_batches=self.n_batches,
            groups_per_batch=self.groups_per_batch,
            group_size=self.group_size,
            n_test_problems=self.n_test_problems,
        )
