"""RL environments: single-turn problems, message-level multi-turn envs, and their datasets."""

from jaxcook.rl.envs.arithmetic import (
    ArithmeticDatasetBuilder,
    ArithmeticEnv,
    ArithmeticProblem,
    make_problem,
)
from jaxcook.rl.envs.calculator import CalculatorDatasetBuilder, CalculatorEnv, run_calculator
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder, load_renderer
from jaxcook.rl.envs.grading import answers_match, extract_boxed, grade_boxed, normalize_answer, parse_number
from jaxcook.rl.envs.gsm8k import Gsm8kDatasetBuilder, Gsm8kEnv, load_gsm8k_jsonl
from jaxcook.rl.envs.guess_number import GuessNumberDatasetBuilder, GuessNumberEnv
from jaxcook.rl.envs.message_env import EnvFromMessageEnv, MessageEnv, MessageStepResult
from jaxcook.rl.envs.problem import ProblemDataset, ProblemEnv, ProblemGroupBuilder, SeededDataset
from jaxcook.rl.envs.reasoning_gym_env import ReasoningGymDatasetBuilder, ReasoningGymEnv
from jaxcook.rl.envs.safe_eval import UnsafeExpressionError, safe_eval

__all__ = [
    "ArithmeticDatasetBuilder",
    "ArithmeticEnv",
    "ArithmeticProblem",
    "CalculatorDatasetBuilder",
    "CalculatorEnv",
    "EnvDatasetBuilder",
    "EnvFromMessageEnv",
    "Gsm8kDatasetBuilder",
    "Gsm8kEnv",
    "GuessNumberDatasetBuilder",
    "GuessNumberEnv",
    "MessageEnv",
    "MessageStepResult",
    "ProblemDataset",
    "ProblemEnv",
    "ProblemGroupBuilder",
    "ReasoningGymDatasetBuilder",
    "ReasoningGymEnv",
    "SeededDataset",
    "UnsafeExpressionError",
    "answers_match",
    "extract_boxed",
    "grade_boxed",
    "load_gsm8k_jsonl",
    "load_renderer",
    "make_problem",
    "normalize_answer",
    "parse_number",
    "run_calculator",
    "safe_eval",
]
