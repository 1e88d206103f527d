"""Supervised data: conversation sources, conversation -> Datum, datasets, builders and NLL/BPB.

from jaxcook.data import get_sft_builder
data = get_sft_builder("reasoning_gym_math").build(renderer, batch_size=8, max_length=256)
for epoch in range(n_epochs):
    data.train.set_epoch(epoch)
    for i in range(len(data.train)):
        batch = data.train.get_batch(i)   # same (epoch, i) -> same datums, in any process
"""

from jaxcook.data.builders import (
    ChatDatasetBuilder,
    ConversationFileBuilder,
    HFChatBuilder,
    InMemoryChatBuilder,
    NoRobotsBuilder,
    SupervisedData,
    TinkerConversationsBuilder,
    Tulu3Builder,
    split_records,
)
from jaxcook.data.dataset import (
    ConversationDataset,
    StreamingSupervisedDataset,
    SupervisedDataset,
    epoch_permutation,
)
from jaxcook.data.datum import (
    DatumConverter,
    DatumPolicy,
    conversation_to_datum,
    datum_from_model_input_weights,
)
from jaxcook.data.errors import (
    DataError,
    DataFormatError,
    DataSourceError,
    ExampleTooLongError,
    TruncatedAwayError,
    UntrainableExampleError,
)
from jaxcook.data.messages import KNOWN_ROLES, parse_conversation, parse_record
from jaxcook.data.metrics import compute_bpb, compute_mean_nll
from jaxcook.data.reasoning_gym_sft import ReasoningGymSFTBuilder, reasoning_gym_records
from jaxcook.data.registry import DEFAULT_SFT_DATASET, SFT_DATASETS, get_sft_builder
from jaxcook.data.sources import HFRecords, JsonlConversations, load_hf_dataset, read_conversations_jsonl

__all__ = [
    "DEFAULT_SFT_DATASET",
    "KNOWN_ROLES",
    "SFT_DATASETS",
    "ChatDatasetBuilder",
    "ConversationDataset",
    "ConversationFileBuilder",
    "DataError",
    "DataFormatError",
    "DataSourceError",
    "DatumConverter",
    "DatumPolicy",
    "ExampleTooLongError",
    "HFChatBuilder",
    "HFRecords",
    "InMemoryChatBuilder",
    "JsonlConversations",
    "NoRobotsBuilder",
    "ReasoningGymSFTBuilder",
    "StreamingSupervisedDataset",
    "SupervisedData",
    "SupervisedDataset",
    "TinkerConversationsBuilder",
    "Tulu3Builder",
    "TruncatedAwayError",
    "UntrainableExampleError",
    "compute_bpb",
    "compute_mean_nll",
    "conversation_to_datum",
    "datum_from_model_input_weights",
    "epoch_permutation",
    "get_sft_builder",
    "load_hf_dataset",
    "parse_conversation",
    "parse_record",
    "read_conversations_jsonl",
    "reasoning_gym_records",
    "split_records",
]
