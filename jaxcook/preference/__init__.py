"""Preferences: comparisons, DPO pairs, reward-model data, preference models and win-rate evaluation.

from jaxcook.preference import get_preference_builder, ComparisonRenderer
dpo = get_preference_builder("reasoning_gym_math").build_dpo(renderer, batch_size=8, max_length=256)
dpo.train.set_epoch(0); batch = dpo.train.get_batch(0)   # [chosen_0, rejected_0, chosen_1, ...]
check_pairs(batch)                                        # what the DPO loss path calls

rm = builder.build_reward_model(ComparisonRenderer(renderer), batch_size=8, max_length=1024)
pm = LogprobPreferenceModel(ComparisonRenderer(renderer), scorer)   # scorer: NextTokenScorer
metrics = await ComparisonEvaluator(pm, comparisons)(policy)        # policy: MessageCompleter
"""

from jaxcook.preference.builders import ComparisonBuilder, ComparisonFileBuilder, ComparisonSplits
from jaxcook.preference.data import (
    ComparisonsRead,
    labeled_comparison_from_json,
    labeled_comparison_to_json,
    read_comparisons_jsonl,
    write_comparisons_jsonl,
)
from jaxcook.preference.dpo import (
    DPODataset,
    DPOPairError,
    PairConverter,
    check_pairs,
    comparison_to_dpo_datums,
    completion_datum,
)
from jaxcook.preference.evaluator import ComparisonEvaluator, win_rate_metrics
from jaxcook.preference.hub import (
    ROW_FORMATS,
    HelpSteer3ComparisonBuilder,
    HFComparisonBuilder,
    HFComparisonRecords,
    HHRLHFComparisonBuilder,
    UltraFeedbackComparisonBuilder,
    UltraFeedbackH4ComparisonBuilder,
    helpsteer3_row,
    hh_rlhf_row,
    ultrafeedback_row,
)
from jaxcook.preference.preference_model import (
    CompleterPreferenceModel,
    LogprobPreferenceModel,
    NextTokenScorer,
    NextTokenScorerFromPromptLogprobs,
    PreferenceModel,
    label_to_preference,
    preference_from_logprobs,
)
from jaxcook.preference.registry import (
    DEFAULT_PREFERENCE_DATASET,
    PREFERENCE_DATASETS,
    get_preference_builder,
)
from jaxcook.preference.reward_model import ComparisonRenderer, ComparisonRMDataset
from jaxcook.preference.types import LABELS, Comparison, ComparisonRecord, Label, LabeledComparison
from jaxcook.preference.verifiable import (
    ReasoningGymComparisonBuilder,
    VerifiablePair,
    boxed_answer_grader,
    comparisons_from_samples,
    reasoning_gym_pairs,
)

__all__ = [
    "DEFAULT_PREFERENCE_DATASET",
    "LABELS",
    "PREFERENCE_DATASETS",
    "ROW_FORMATS",
    "Comparison",
    "ComparisonBuilder",
    "ComparisonEvaluator",
    "ComparisonFileBuilder",
    "ComparisonRMDataset",
    "ComparisonRecord",
    "ComparisonRenderer",
    "ComparisonSplits",
    "ComparisonsRead",
    "CompleterPreferenceModel",
    "DPODataset",
    "DPOPairError",
    "HFComparisonBuilder",
    "HFComparisonRecords",
    "HHRLHFComparisonBuilder",
    "HelpSteer3ComparisonBuilder",
    "Label",
    "LabeledComparison",
    "LogprobPreferenceModel",
    "NextTokenScorer",
    "NextTokenScorerFromPromptLogprobs",
    "PairConverter",
    "PreferenceModel",
    "ReasoningGymComparisonBuilder",
    "UltraFeedbackComparisonBuilder",
    "UltraFeedbackH4ComparisonBuilder",
    "VerifiablePair",
    "boxed_answer_grader",
    "check_pairs",
    "comparison_to_dpo_datums",
    "comparisons_from_samples",
    "completion_datum",
    "get_preference_builder",
    "helpsteer3_row",
    "hh_rlhf_row",
    "label_to_preference",
    "labeled_comparison_from_json",
    "labeled_comparison_to_json",
    "preference_from_logprobs",
    "read_comparisons_jsonl",
    "reasoning_gym_pairs",
    "ultrafeedback_row",
    "win_rate_metrics",
    "write_comparisons_jsonl",
]
