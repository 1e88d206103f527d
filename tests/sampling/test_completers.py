"""Completers batch concurrent calls into one sampler call and dedupe identical prompts."""

import asyncio

import pytest

from jaxcook.ports import MessageCompleter, TokenCompleter, TokensWithLogprobs
from jaxcook.renderers.role_colon import RoleColonRenderer
from jaxcook.sampling import LocalMessageCompleter, LocalSamplingClient, LocalTokenCompleter
from jaxcook.types import ModelInput, SamplingParams
from tests.engine.tiny import tiny_model
from tests.sampling.test_client import BUCKETS, TOK
from tests.sampling.tiny import EOS


@pytest.fixture(scope="module")
def client():
    return LocalSamplingClient.from_model(tiny_model(seed=8), TOK, buckets=BUCKETS, seed=0)


def spy_on(client, monkeypatch) -> list:
    """Record the prompts and sample counts of every `sample_many` call of `client`."""
    calls, inner = [], client.sample_many

    def sample_many(prompts, num_samples, params, *args, **kw):
        calls.append(([p.to_ints() for p in prompts], list(num_samples)))
        return inner(prompts, num_samples, params, *args, **kw)

    monkeypatch.setattr(client, "sample_many", sample_many)
    return calls


def test_sixteen_concurrent_calls_make_one_sampler_call(client, monkeypatch):
    calls = spy_on(client, monkeypatch)
    completer = LocalTokenCompleter(client, max_tokens=6)
    assert isinstance(completer, TokenCompleter)
    prompts = [ModelInput.from_ints(TOK.encode(f"prompt {i % 4}")) for i in range(16)]
    calls_before = client.decode_calls

    async def main():
        return await asyncio.gather(*(completer(p, [EOS]) for p in prompts))

    results = asyncio.run(main())
    assert client.decode_calls - calls_before == 1
    # One call, 4 distinct prompts with 4 samples each (one shared prefill per prompt).
    assert calls == [([p.to_ints() for p in prompts[:4]], [4, 4, 4, 4])]
    for r in results:
        assert isinstance(r, TokensWithLogprobs) and len(r.tokens) == len(r.logprobs) <= 6
        assert r.stop_reason == ("stop" if r.tokens[-1] == EOS else "length")
    same_prompt = [tuple(r.tokens) for r in results[0::4]]
    assert len(set(same_prompt)) > 1  # the 4 samples of one prompt are distinct draws


def test_calls_arriving_during_a_sampler_call_go_into_the_next_one(client):
    completer = LocalTokenCompleter(client, max_tokens=6)
    calls_before = client.decode_calls
    prompt = ModelInput.from_ints(TOK.encode("later"))

    async def main():
        first = [asyncio.ensure_future(completer(prompt, [], max_tokens=3)) for _ in range(8)]
        await asyncio.sleep(0.05)  # the first batch is being sampled
        second = [asyncio.ensure_future(completer(prompt, [], max_tokens=5)) for _ in range(8)]
        return await asyncio.gather(*first, *second)

    results = asyncio.run(main())
    assert client.decode_calls - calls_before == 2
    assert [len(r.tokens) for r in results] == [3] * 8 + [5] * 8  # stop=[]: exactly max_tokens


def test_completer_caps_max_tokens_at_the_context_window(client):
    completer = LocalTokenCompleter(client, max_tokens=50, context_window=20)
    prompt = ModelInput.from_ints([3] * 16)
    out = asyncio.run(completer(prompt, []))
    assert len(out.tokens) == 4 and out.stop_reason == "length"
    with pytest.raises(ValueError, match="no room"):
        asyncio.run(completer(ModelInput.from_ints([3] * 20), []))


def test_a_sampler_error_reaches_every_caller(client):
    completer = LocalTokenCompleter(client, max_tokens=4)

    async def main():
        bad = completer(ModelInput.from_ints([500]), [])  # outside the vocabulary
        good = completer(ModelInput.from_ints([3]), [])
        return await asyncio.gather(bad, good, return_exceptions=True)

    errors = asyncio.run(main())
    assert all(isinstance(e, ValueError) and "token ids" in str(e) for e in errors)


def test_message_completer_renders_samples_and_parses(client):
    renderer = RoleColonRenderer(TOK)
    completer = LocalMessageCompleter(client, renderer, max_tokens=8, temperature=0.0)
    assert isinstance(completer, MessageCompleter)
    conversations = [[{"role": "user", "content": q}] for q in ("hi", "2+2?", "name?")]
    calls_before = client.decode_calls
    replies = asyncio.run(completer.complete_many(conversations))
    assert client.decode_calls - calls_before == 1
    for convo, reply in zip(conversations, replies):
        greedy = SamplingParams(max_tokens=8, temperature=0.0, stop=renderer.get_stop_sequences())
        tokens = (
            client.sample(renderer.build_generation_prompt(convo), 1, greedy).result().sequences[0].tokens
        )
        assert reply == renderer.parse_response(tokens)[0]
        assert reply["role"] == "assistant"
