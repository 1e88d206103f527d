"""A tiny HF-format model folder for server tests: a 2-layer random Llama and a byte-level BPE
tokenizer (320 tokens) trained here on a few sentences, so the folder loads with
`jaxcook.models.load` and `AutoTokenizer.from_pretrained` alike, offline."""

from pathlib import Path

from flax import nnx

from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.models.export import save_hf

VOCAB = 320
CONTEXT = 256
CORPUS = [
    "The capital of France is Paris.",
    "user: What is 2 + 3?\nassistant: 2 + 3 = 5.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "0123456789 + - * / = ( ) ? ! , . : ; ' \" \n",
]


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def write_tiny_model(folder: Path) -> Path:
    tok = tokenizer()
    cfg = ModelConfig(
        model_type="llama",
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_position_embeddings=CONTEXT,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    return save_hf(Decoder(cfg, rngs=nnx.Rngs(params=0)), folder, tokenizer=tok)
