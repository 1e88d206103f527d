"""lm-evaluation-harness adapter: its log-likelihoods and generations against the jaxcook sampler's
own prefill scores and greedy samples, and a local YAML task run through `simple_evaluate`."""

import json
import math

import pytest

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from jaxcook.eval.lm_harness import JaxcookLM  # noqa: E402
from jaxcook.types import ModelInput, SamplingParams  # noqa: E402


@pytest.fixture(scope="module")
def lm():
    return JaxcookLM("tiny-random-smollm2", batch_size=2)


@pytest.fixture(scope="module")
def sampler(lm):
    return lm.trained.sampling_client(seed=0)


def encode(lm, text):
    return lm.tokenizer.encode(text, add_special_tokens=False)


def prefill_logprob(sampler, context_ids, continuation_ids):
    """sum log p(continuation | context) from the sampler's prefill (another code path)."""
    logprobs = sampler.compute_logprobs(ModelInput.from_ints(context_ids + continuation_ids)).result()
    return sum(logprobs[len(context_ids) :])


def test_loglikelihood_matches_the_sampler_prefill(lm, sampler):
    pairs = [("The capital of France is", " Paris"), ("2 + 2 =", " 4, of course"), ("Hello", " world")]
    pairs += [("A much longer context that has quite a few more tokens in it than the others", " ok")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])
    for (context, continuation), (logp, _) in zip(pairs, got):
        whole, ctx = encode(lm, context + continuation), encode(lm, context)
        assert whole[: len(ctx)] == ctx  # these texts split cleanly at the boundary
        assert math.isclose(logp, prefill_logprob(sampler, ctx, whole[len(ctx) :]), abs_tol=1e-4)
        assert logp < 0


def test_is_greedy_is_whether_the_continuation_is_the_argmax(lm, sampler):
    ctx = encode(lm, "Once upon a time")
    greedy = sampler.sample(
        ModelInput.from_ints(ctx), 1, SamplingParams(max_tokens=3, temperature=0.0, stop=[])
    )
    greedy = greedy.result().sequences[0].tokens
    other = [(greedy[0] + 1) % 49152, *greedy[1:]]
    (lp_g, is_g), (lp_o, is_o) = lm.score_tokens([(ctx, greedy), (ctx, other)])
    assert is_g and not is_o and lp_g > lp_o


def test_loglikelihood_rolling_is_the_whole_text_after_eos(lm, sampler):
    text = "jaxcook scores every token of this sentence."
    (total,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert math.isclose(total, prefill_logprob(sampler, [lm.eot_token_id], encode(lm, text)), abs_tol=1e-4)


def test_generate_until_is_greedy_sampling_cut_at_until(lm, sampler):
    context = "Q: what is one plus one?\nA:"
    kwargs = {"until": ["\n", "Q:"], "max_gen_toks": 8, "do_sample": False}
    (text,) = lm.generate_until([Instance("generate_until", {}, (context, kwargs), 0)])
    params = SamplingParams(max_tokens=8, temperature=0.0, stop=["\n", "Q:"])
    tokens = sampler.sample(ModelInput.from_ints(encode(lm, context)), 1, params).result().sequences[0].tokens
    expected = lm.tokenizer.decode(tokens, skip_special_tokens=True).split("\n")[0].split("Q:")[0]
    assert text == expected and "\n" not in text


def test_simple_evaluate_runs_a_local_yaml_task(lm, sampler, tmp_path):
    docs = [
        {"question": "The sky is", "choices": [" blue", " green", " loud"], "answer": 0},
        {"question": "Two plus two is", "choices": [" four", " five"], "answer": 1},
        {"question": "Cats say", "choices": [" meow", " moo", " quack"], "answer": 2},
    ]
    data = tmp_path / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: jaxcook_tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "target_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n"
    )
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model=lm, tasks=["jaxcook_tiny_mc"], task_manager=TaskManager(include_path=str(tmp_path))
    )
    acc = results["results"]["jaxcook_tiny_mc"]["acc,none"]
    # The same accuracy from the sampler's prefill scores: argmax over choices of log p(choice | question).
    correct = 0
    for d in docs:
        ctx = encode(lm, d["question"])
        scores = [
            prefill_logprob(sampler, ctx, encode(lm, d["question"] + c)[len(ctx) :]) for c in d["choices"]
        ]
        correct += max(range(len(scores)), key=scores.__getitem__) == d["answer"]
    assert acc == pytest.approx(correct / len(docs))
