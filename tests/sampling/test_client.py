"""LocalSamplingClient on a tiny random decoder with a character tokenizer: stop semantics,
max_tokens, prompt logprobs, context errors, snapshots, adapters off, on-policy logprobs."""

import numpy as np
import pytest

from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.sampling import LocalSamplingClient, SamplerBuckets
from jaxcook.types import AdamParams, Datum, ModelInput, SamplingParams
from tests.engine.tiny import random_datums, tiny_model
from tests.sampling.tiny import AB, EOS, CharTokenizer, full_forward_logprobs

BUCKETS = SamplerBuckets(rows=(4, 8), prompts=(2, 4), prompt_len=(16, 32), new_tokens=(16, 32))
TOK = CharTokenizer()
PROMPT = ModelInput.from_ints(TOK.encode("Hello, sampler"))


def make_client(model=None, **kw):
    kw.setdefault("buckets", BUCKETS)
    return LocalSamplingClient.from_model(model or tiny_model(seed=5), TOK, **kw)


@pytest.fixture(scope="module")
def client():
    return make_client()


def sample(client, n=4, prompt=PROMPT, **params):
    params.setdefault("max_tokens", 16)
    return client.sample(prompt, n, SamplingParams(**params)).result()


def test_max_tokens_ends_with_length(client):
    for seq in sample(client, max_tokens=7, stop=[]).sequences:
        assert len(seq.tokens) == len(seq.logprobs) == 7 and seq.stop_reason == "length"


def test_same_seed_same_samples_and_seeds_differ(client):
    a, b, c = (sample(client, seed=s, stop=[]) for s in (1, 1, 2))
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    assert [s.tokens for s in a.sequences] != [s.tokens for s in c.sequences]


def test_stop_token_ends_at_its_first_occurrence_and_is_included(client):
    ref = sample(client, n=8, seed=3, stop=[]).sequences
    stop = ref[0].tokens[5]
    out = sample(client, n=8, seed=3, stop=[stop]).sequences
    stops = {stop, EOS}  # a list of stop tokens keeps EOS
    assert any(EOS in r.tokens for r in ref)  # (so that the EOS case is exercised)
    for r, o in zip(ref, out):
        ends = [i + 1 for i, t in enumerate(r.tokens) if t in stops]
        if ends:
            end = ends[0]
            assert o.tokens == r.tokens[:end] and o.stop_reason == "stop"
            np.testing.assert_allclose(o.logprobs, r.logprobs[:end], atol=1e-6)
        else:
            assert o.tokens == r.tokens and o.stop_reason == "length"


def first_containing(tokens, text):
    """Shortest prefix length whose decoded text contains `text` (linear reference), or None."""
    return next((n for n in range(1, len(tokens) + 1) if text in TOK.decode(tokens[:n])), None)


def string_stop_end(tokens, *texts):
    """Where a completion stopped by stop strings (and EOS, which they keep) ends, or None."""
    ends = [first_containing(tokens, t) for t in texts]
    ends += [tokens.index(EOS) + 1] if EOS in tokens else []
    return min((e for e in ends if e is not None), default=None)


def test_stop_string_cuts_at_the_token_completing_it(client):
    ref = sample(client, seed=4, stop=[]).sequences
    stop = TOK.decode(ref[1].tokens[3:5])  # two tokens of sample 1, as text
    out = sample(client, seed=4, stop=stop).sequences
    for r, o in zip(ref, out):
        end = string_stop_end(r.tokens, stop)
        want = r.tokens if end is None else r.tokens[:end]
        assert o.tokens == want and o.stop_reason == ("length" if end is None else "stop")
        assert len(o.logprobs) == len(o.tokens)


def test_stop_string_spelled_with_another_token_is_cut_on_the_host(client):
    # Find a sample whose first "ab" is the single token AB, not the tokens "a" "b" that the
    # device-side check looks for.
    for seed in range(40):
        ref = sample(client, n=8, seed=seed, stop=[]).sequences
        hits = [r for r in ref if (e := string_stop_end(r.tokens, "ab")) and r.tokens[e - 1] == AB]
        if hits:
            break
    else:
        pytest.skip("no sample spelled 'ab' with the AB token")
    out = sample(client, n=8, seed=seed, stop=["ab", "zzz"]).sequences
    for r, o in zip(ref, out):
        end = string_stop_end(r.tokens, "ab", "zzz")
        assert o.tokens == (r.tokens if end is None else r.tokens[:end])
        assert o.stop_reason == ("length" if end is None else "stop")


def test_prompt_logprobs_and_compute_logprobs_equal_full_forward(client):
    model = tiny_model(seed=5)
    tokens = PROMPT.to_ints()
    lp_TV = full_forward_logprobs(model, tokens)
    want = [lp_TV[i - 1, tokens[i]] for i in range(1, len(tokens))]
    resp = client.sample(PROMPT, 2, SamplingParams(max_tokens=3), include_prompt_logprobs=True).result()
    assert resp.prompt_logprobs[0] is None and len(resp.prompt_logprobs) == len(tokens)
    np.testing.assert_allclose(resp.prompt_logprobs[1:], want, atol=1e-5)
    scored = client.compute_logprobs(PROMPT).result()
    assert scored[0] is None
    np.testing.assert_allclose(scored[1:], want, atol=1e-5)


def test_context_window_errors_and_caps():
    client = make_client(context_window=20)
    with pytest.raises(ValueError, match="context window is 20"):
        client.sample(ModelInput.from_ints([3] * 25), 1, SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="context window is 20"):
        client.sample(ModelInput.from_ints([3] * 20), 1, SamplingParams(max_tokens=4))
    # 15 prompt tokens leave room for 5: max_tokens=10 is capped there.
    seq = sample(client, n=1, prompt=ModelInput.from_ints([3] * 15), max_tokens=10, stop=[]).sequences[0]
    assert len(seq.tokens) == 5 and seq.stop_reason == "length"
    assert len(client.compute_logprobs(ModelInput.from_ints([3] * 20)).result()) == 20


@pytest.mark.parametrize(
    "prompt,params,match",
    [
        (ModelInput.empty(), SamplingParams(max_tokens=2), "empty"),
        (PROMPT, SamplingParams(max_tokens=0), "max_tokens"),
        (PROMPT, SamplingParams(max_tokens=2, top_p=0.0), "top_p"),
        (PROMPT, SamplingParams(max_tokens=2, temperature=-1.0), "temperature"),
        (PROMPT, SamplingParams(max_tokens=2, stop=[500]), "outside the vocabulary"),
        (ModelInput.from_ints([1, 200]), SamplingParams(max_tokens=2), "token ids"),
    ],
)
def test_bad_requests_raise_at_the_call(client, prompt, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        client.sample(prompt, 1, params)


LORA = LoraConfig(rank=4)


def trained_client():
    tc = LocalTrainingClient(
        tiny_model(LORA, seed=6), lora=LORA, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    )
    for _ in range(3):
        tc.forward_backward(random_datums(8, seed=1))
        tc.optim_step(AdamParams(learning_rate=5e-2))
    return tc


def test_snapshot_is_frozen_adapters_off_is_the_base_and_logprobs_are_on_policy():
    tc = trained_client()
    sc = LocalSamplingClient.from_training_client(tc, buckets=BUCKETS)
    greedy = SamplingParams(max_tokens=12, temperature=0.0, stop=[])
    before = sc.sample(PROMPT, 1, greedy).result().sequences[0]

    # On-policy: the trainer's log-probs of sampled sequences equal the sampler's.
    resp = sc.sample(PROMPT, 4, SamplingParams(max_tokens=12, stop=[], seed=0)).result()
    n = PROMPT.length
    data = []
    for seq in resp.sequences:
        full = PROMPT.to_ints() + seq.tokens
        inputs = {"target_tokens": full[1:], "weights": np.ones(len(full) - 1, np.float32)}
        data.append(Datum(ModelInput.from_ints(full[:-1]), inputs))
    trainer = tc.forward(data).result().loss_fn_outputs
    for seq, out in zip(resp.sequences, trainer):
        np.testing.assert_allclose(seq.logprobs, out["logprobs"][n - 1 :], atol=1e-4)

    # Training on does not change the snapshot; a new snapshot sees the new weights.
    tc.forward_backward(random_datums(8, seed=2))
    tc.optim_step(AdamParams(learning_rate=5e-2)).result()
    after = sc.sample(PROMPT, 1, greedy).result().sequences[0]
    assert after.tokens == before.tokens and after.logprobs == before.logprobs
    fresh = LocalSamplingClient.from_training_client(tc, buckets=BUCKETS).sample(PROMPT, 1, greedy).result()
    assert not np.allclose(fresh.sequences[0].logprobs, before.logprobs, atol=1e-4)

    # Adapters off: exactly the untrained base (LoRA B = 0).
    base = LocalSamplingClient.from_training_client(tc, adapters=False, buckets=BUCKETS)
    untrained = LocalSamplingClient.from_model(tiny_model(LORA, seed=6), buckets=BUCKETS)
    a, b = (c.sample(PROMPT, 1, greedy).result().sequences[0] for c in (base, untrained))
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)


def test_full_fine_tuning_snapshot_samples_like_the_model():
    tc = LocalTrainingClient(tiny_model(seed=7), lora=None)
    greedy = SamplingParams(max_tokens=12, temperature=0.0, stop=[])
    a = LocalSamplingClient.from_training_client(tc, buckets=BUCKETS).sample(PROMPT, 1, greedy).result()
    b = make_client(tiny_model(seed=7)).sample(PROMPT, 1, greedy).result()
    assert a.sequences[0].tokens == b.sequences[0].tokens
    np.testing.assert_allclose(a.sequences[0].logprobs, b.sequences[0].logprobs, atol=1e-6)
    with pytest.raises(ValueError, match="needs a LoRA training client"):
        LocalSamplingClient.from_training_client(tc, adapters=False)
