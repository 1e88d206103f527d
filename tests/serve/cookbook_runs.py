"""tinker-cookbook 0.6.1's own loops, unchanged, pointed at a `jaxcook serve` URL: its supervised
loop on the chat JSONL its wheel ships and its RL loop on its synthetic arithmetic environment.
Shared by the tiny-model tests (`test_cookbook.py`) and the SmolLM2-135M ones
(`test_cookbook_smollm2.py`); each passes its own model name, renderer and sizes.

The model name the cookbook sees is a local folder (the model folder, or the server's tokenizer
folder), which its `get_tokenizer` loads offline: no hub.
"""

import asyncio
import json
import os
from pathlib import Path

CONVERSATIONS = "example_data/conversations.jsonl"  # shipped in the tinker_cookbook wheel


def metrics(log_path) -> list[dict]:
    return [json.loads(line) for line in (Path(log_path) / "metrics.jsonl").read_text().splitlines()]


def checkpoints(log_path) -> list[dict]:
    return [json.loads(x) for x in (Path(log_path) / "checkpoints.jsonl").read_text().splitlines()]


def cut_after(log_path, name: str, new_log_path) -> dict:
    """A log dir as a run killed right after checkpoint `name` leaves it (its checkpoints.jsonl up
    to that line); returns that checkpoint's record."""
    lines = (Path(log_path) / "checkpoints.jsonl").read_text().splitlines()
    kept = lines[: [json.loads(x)["name"] for x in lines].index(name) + 1]
    Path(new_log_path).mkdir()
    (Path(new_log_path) / "checkpoints.jsonl").write_text("\n".join(kept) + "\n")
    return json.loads(kept[-1])


def sft_data(
    model_name: str,
    *,
    renderer: str = "role_colon",
    max_length: int = 128,
    batch_size: int = 16,
    test_size: int = 0,
):
    """The cookbook's builder of the shipped conversations (`test_size` of the 128 held out, so
    the rest is what a run trains on)."""
    import tinker_cookbook
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    common = ChatDatasetBuilderCommonConfig(
        model_name_for_tokenizer=model_name,
        renderer_name=renderer,
        max_length=max_length,
        batch_size=batch_size,
    )
    data = os.path.join(os.path.dirname(tinker_cookbook.__file__), CONVERSATIONS)
    return FromConversationFileBuilder(file_path=data, common_config=common, test_size=test_size)


def run_sft(
    url: str,
    model_name: str,
    log_path,
    *,
    renderer: str = "role_colon",
    max_length: int = 128,
    batch_size: int = 16,
    test_size: int = 0,
    **overrides,
) -> list[dict]:
    """The cookbook's `supervised.train.main` on the shipped conversations; its metrics rows."""
    from tinker_cookbook.supervised import train

    cfg = dict(
        log_path=str(log_path),
        model_name=model_name,
        recipe_name="jaxcook_serve_test",
        renderer_name=renderer,
        dataset_builder=sft_data(
            model_name, renderer=renderer, max_length=max_length, batch_size=batch_size, test_size=test_size
        ),
        learning_rate=3e-3,
        lr_schedule="constant",
        lora_rank=8,
        base_url=url,
        save_every=4,
        eval_every=0,
        infrequent_eval_every=0,
    )
    asyncio.run(train.main(train.Config(**{**cfg, **overrides})))
    return metrics(log_path)


def run_rl(
    url: str,
    model_name: str,
    log_path,
    steps: int,
    *,
    renderer: str = "role_colon",
    batch_size: int = 8,
    group_size: int = 4,
    **overrides,
) -> list[dict]:
    """The cookbook's `rl.train.main` on its arithmetic environment with `importance_sampling`."""
    from tinker_cookbook.recipes.math_rl.arithmetic_env import ArithmeticDatasetBuilder
    from tinker_cookbook.rl import train

    builder = ArithmeticDatasetBuilder(
        batch_size=batch_size,
        model_name_for_tokenizer=model_name,
        renderer_name=renderer,
        n_batches=100,
        group_size=group_size,
    )
    cfg = dict(
        learning_rate=1e-3,
        dataset_builder=builder,
        model_name=model_name,
        recipe_name="jaxcook_serve_test",
        max_tokens=5,
        log_path=str(log_path),
        eval_every=0,
        save_every=2,
        renderer_name=renderer,
        lora_rank=8,
        base_url=url,
        loss_fn="importance_sampling",
        max_steps=steps,
    )
    asyncio.run(train.main(train.Config(**{**cfg, **overrides})))
    return metrics(log_path)
