"""EleutherAI lm-evaluation-harness on a jaxcook model, run dir or checkpoint (`pip install jaxcook[eval]`).

    python -m jaxcook.eval.lm_harness runs/sft --tasks my_task --include-path tasks/ --limit 50
    lm = JaxcookLM("runs/sft"); lm_eval.simple_evaluate(model=lm, tasks=[...])

`JaxcookLM` is an `lm_eval` `TemplateLM` (registered as model "jaxcook"):
- `loglikelihood` / `loglikelihood_rolling` score token sequences with one jitted forward per
  batch (sequence lengths rounded up to powers of two, so a run compiles a few programs), in
  float32 log-softmax; `is_greedy` is whether every continuation token is the argmax.
- `generate_until` samples with the jaxcook sampler (greedy unless `do_sample`), stops at the
  task's `until` strings or EOS, and cuts the text at the first `until` string.
Text is encoded without special tokens; an empty context is the EOS token (lm-eval's rule).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from jaxcook.trained import load_trained
from jaxcook.types import ModelInput, SamplingParams


def _score(graphdef, state, tokens_BT, targets_BT, mask_BT):
    """log p(target) at every position and whether it is the argmax: [B, T] f32, [B, T] bool."""
    model = nnx.merge(graphdef, state)
    positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    logits_BTV = model.logits(tokens_BT, positions_BT, mask_BT).astype(jnp.float32)
    logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    target_logp_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return target_logp_BT, jnp.argmax(logits_BTV, axis=-1) == targets_BT


def _bucket(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


@register_model("jaxcook")
class JaxcookLM(TemplateLM):
    def __init__(
        self,
        path: str = "smollm2-135m-instruct",
        batch_size: int | str = 4,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__()
        self.trained = load_trained(path)
        self.tokenizer = self.trained.tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 4  # "auto" -> 4
        config = self.trained.model.config
        self.max_length = max_length or config.max_position_embeddings
        self.max_gen_toks, self.seed = max_gen_toks, seed
        self.graphdef, self.state = nnx.split(self.trained.model)
        self._score = jax.jit(partial(_score, self.graphdef))
        self._sampler = None

    # -- tokens ----------------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    # -- scoring ---------------------------------------------------------------------------------

    def score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), all greedy) per (context, continuation) token pair;
        the sequence is cut from the left to `max_length` tokens."""
        rows = []
        for context, continuation in pairs:
            if not continuation:
                raise ValueError("lm_harness: an empty continuation has no log-likelihood")
            seq = (list(context) + list(continuation))[-(self.max_length + 1) :]
            rows.append((seq[:-1], seq[1:], min(len(continuation), len(seq) - 1)))
        out: list[tuple[float, bool] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # similar lengths together
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            T = _bucket(max(len(rows[i][0]) for i in idx))
            tokens = np.zeros((self.batch_size, T), np.int32)
            targets = np.zeros((self.batch_size, T), np.int32)
            mask = np.zeros((self.batch_size, T), np.int32)
            mask[:, 0] = 1  # filler rows attend to one token (no all-masked softmax)
            for r, i in enumerate(idx):
                inputs, tgt, _ = rows[i]
                tokens[r, : len(inputs)], targets[r, : len(tgt)], mask[r, : len(inputs)] = inputs, tgt, 1
            logp_BT, greedy_BT = jax.device_get(self._score(self.state, tokens, targets, mask))
            for r, i in enumerate(idx):
                inputs, _, n = rows[i]
                span = slice(len(inputs) - n, len(inputs))
                out[i] = (float(logp_BT[r, span].sum()), bool(greedy_BT[r, span].all()))
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        results = self.score_tokens([(ctx, cont) for _, ctx, cont in requests])
        for (key, _, _), result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for (string,) in [req.args for req in requests]:
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            total = sum(logp for logp, _ in self.score_tokens(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            results.append(total)
        return results

    # -- generation ------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if self._sampler is None:
            self._sampler = self.trained.sampling_client(seed=self.seed)
        results = []
        for context, gen_kwargs in [req.args for req in requests]:
            kwargs = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or [self.tokenizer.decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_tokens = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 1.0)) if sample else 0.0
            prompt = self.tok_encode(context)[-(self.max_length - max_tokens) :] or [self.prefix_token_id]
            params = SamplingParams(
                max_tokens=max_tokens, temperature=temperature, stop=until, seed=self.seed
            )
            seq = self._sampler.sample(ModelInput.from_ints(prompt), 1, params).result().sequences[0]
            text = self.tokenizer.decode(seq.tokens, skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            results.append(text)
        return results


def main(argv: list[str] | None = None) -> int:
    import lm_eval
    from lm_eval.tasks import TaskManager

    parser = argparse.ArgumentParser(
        prog="python -m jaxcook.eval.lm_harness", description=__doc__.splitlines()[0]
    )
    parser.add_argument("path", metavar="RUN_DIR_OR_MODEL")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--include-path", default=None, help="a folder of extra task YAML files")
    parser.add_argument("--limit", type=int, default=None, help="documents per task")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--output", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)

    lm = JaxcookLM(args.path, batch_size=args.batch_size)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=args.tasks.split(","),
        task_manager=TaskManager(include_path=args.include_path),
        limit=args.limit,
        num_fewshot=args.num_fewshot,
    )
    text = json.dumps(results["results"], indent=2, default=str)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
