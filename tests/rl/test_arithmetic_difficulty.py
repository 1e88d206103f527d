"""The default arithmetic task suits RL on SmolLM2-135M-Instruct: neither solved nor hopeless.

Samples the real model (HF transformers, from the offline GGUF; temperature 1 as in RL) on the
default `ArithmeticDatasetBuilder` test problems and checks the starting accuracy lies in a band
where groups have mixed rewards. Measured by this test on CPU (torch 2.13, transformers 5.24, the
64 default test problems, torch seed 0): 2-digit `a + b`, "equation" answers, 3-shot:
correct 0.172, format 0.906. Takes ~3 minutes on 2 cores.
"""

import asyncio

import numpy as np
import pytest

from jaxcook.rl.envs.arithmetic import ArithmeticDatasetBuilder


@pytest.mark.slow
def test_default_arithmetic_starts_between_5_and_60_percent():
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from jaxcook import assets
    from jaxcook.renderers import get_renderer
    from jaxcook.renderers.tokenizers import offline_tokenizer

    tok = offline_tokenizer("smollm2")
    renderer = get_renderer("chatml", tok)
    gguf = assets.fetch_file("smollm2-135m-instruct-gguf")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    _, test = asyncio.run(ArithmeticDatasetBuilder(renderer=renderer, n_test_problems=64)())
    envs = [asyncio.run(b.make_envs())[0] for b in test.get_batch(0)]
    prompts = [asyncio.run(e.initial_observation())[0].to_ints() for e in envs]
    (stop,) = renderer.get_stop_sequences()

    width = max(map(len, prompts))
    ids = torch.tensor([[stop] * (width - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=16,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            eos_token_id=stop,
            pad_token_id=stop,
        )
    correct, fmt = [], []
    for env, row in zip(envs, out[:, width:].tolist()):
        action = row[: row.index(stop) + 1] if stop in row else row
        result = asyncio.run(env.step(action))
        correct.append(result.metrics["correct"])
        fmt.append(result.metrics["format"])
    print(f"arithmetic default: correct={np.mean(correct):.3f} format={np.mean(fmt):.3f}")
    assert 0.05 <= np.mean(correct) <= 0.6, np.mean(correct)
    assert np.mean(fmt) >= 0.5, np.mean(fmt)
