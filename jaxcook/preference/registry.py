"""Named preference data sources, and `get_preference_builder(name_or_path)` for recipes and the CLI.

A registry name, a `.jsonl` file of labeled comparisons (`ComparisonFileBuilder`), or any other
Hugging Face dataset / local copy whose rows are in jaxcook's comparison format (`HFComparisonBuilder`,
`row_format` selects another known schema).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jaxcook.config import construct
from jaxcook.preference.builders import ComparisonBuilder, ComparisonFileBuilder
from jaxcook.preference.hub import (
    HelpSteer3ComparisonBuilder,
    HFComparisonBuilder,
    HHRLHFComparisonBuilder,
    UltraFeedbackComparisonBuilder,
    UltraFeedbackH4ComparisonBuilder,
)
from jaxcook.preference.verifiable import ReasoningGymComparisonBuilder

PREFERENCE_DATASETS: dict[str, Callable[..., ComparisonBuilder]] = {
    "reasoning_gym_math": ReasoningGymComparisonBuilder,  # the embedded default (offline)
    "hh_rlhf": HHRLHFComparisonBuilder,
    "Anthropic/hh-rlhf": HHRLHFComparisonBuilder,
    "ultrafeedback": UltraFeedbackComparisonBuilder,
    "argilla/ultrafeedback-binarized-preferences": UltraFeedbackComparisonBuilder,
    "ultrafeedback_h4": UltraFeedbackH4ComparisonBuilder,
    "HuggingFaceH4/ultrafeedback_binarized": UltraFeedbackH4ComparisonBuilder,
    "helpsteer3": HelpSteer3ComparisonBuilder,
    "nvidia/HelpSteer3": HelpSteer3ComparisonBuilder,
}

DEFAULT_PREFERENCE_DATASET = "reasoning_gym_math"


def get_preference_builder(name_or_path: str = DEFAULT_PREFERENCE_DATASET, **options) -> ComparisonBuilder:
    """The builder for a registry name, a `.jsonl` file or a Hugging Face dataset; `options` = its fields."""
    if name_or_path in PREFERENCE_DATASETS:
        cls, fixed = PREFERENCE_DATASETS[name_or_path], {}
    elif Path(name_or_path).suffix == ".jsonl":
        cls, fixed = ComparisonFileBuilder, {"path": name_or_path}
    else:
        cls, fixed = HFComparisonBuilder, {"name": name_or_path}
    return construct(cls, options, fixed=fixed, label=name_or_path)
