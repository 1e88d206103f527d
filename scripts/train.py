"""Run a recipe from the shell: `python scripts/train.py --recipe NAME [--tiny] [key=value ...]`.

The same call as `jaxcook.run(NAME, tiny=..., key=value, ...)`: values are parsed by the recipe
config's annotations, dotted keys reach nested configs (`model.lora.rank=16`), and the short
names (`lora_rank=16`, `model=`, `dataset=`, `epochs=`, ...) are listed by `--recipe NAME --help`.

    python scripts/train.py --help                           # the recipes
    python scripts/train.py --recipe sft --help              # sft's options and defaults
    python scripts/train.py --recipe sft --tiny --dry-run lora_rank=8   # print the config, run nothing
    python scripts/train.py --recipe supervised dataset=chats.jsonl epochs=2   # task names work too
    python scripts/train.py --recipe mypackage.my_recipe ...  # a recipe module outside the registry

With `JAXCOOK_MALLOC=tuned` the process re-executes itself once at start with glibc malloc
settings that keep XLA's step buffers mapped between steps: faster, more memory
(`jaxcook/allocator.py`).

A user error (a bad key or value, a data file with a bad line, an unknown recipe or env, a missing
file) is printed as one line `train.py: error: ...` and exits with status 2; `--debug` prints the
traceback too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

# `jaxcook` from this checkout (no install needed); a recipe given as a module path is
# looked up from the current directory too, as `python -m` would.
_ROOT = str(Path(__file__).resolve().parent.parent)
for _path in (_ROOT, os.getcwd()):
    if _path not in sys.path:
        sys.path.insert(1, _path)

# Errors that are the user's to fix (module, class): reported in one line, exit status 2. A class
# whose module was never imported cannot have been raised, so none of these is imported to check.
USER_ERRORS = (
    ("jaxcook.config_values", "OverrideError"),  # config keys and values, builder options
    ("jaxcook.recipes", "RecipeError"),  # unknown or malformed recipe
    ("jaxcook.data.errors", "DataError"),  # data files: bad lines (file:line), missing files
    ("jaxcook.rl.envs.registry", "EnvSpecError"),  # unknown env, bad import path
    ("jaxcook.models.safetensors_source", "WeightsError"),  # not a model folder
    ("jaxcook.models.config", "ConfigError"),  # a model config.json we cannot read
    ("jaxcook.engine.checkpoint", "CheckpointError"),
    ("jaxcook.renderers.base", "RendererError"),
    ("jaxcook.distill.teacher", "TokenizerMismatchError"),
    ("jaxcook.preference.dpo", "DPOPairError"),
    ("jaxcook.runs.registry", "RegistryError"),
    ("jaxcook.assets", "AssetError"),
    ("jaxcook.backends", "BackendError"),  # backend=tinker: unreachable base_url, bad key, LoRA only
    ("jaxcook.workflows.training_run", "TrainingError"),  # non-finite loss: names the last good checkpoint
    ("builtins", "FileNotFoundError"),
)


def user_error_classes() -> tuple[type, ...]:
    found = []
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message joined by spaces)."""
    return " ".join(str(error).split()) or type(error).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        usage="python scripts/train.py --recipe NAME [--tiny] [--dry-run] [key=value ...]",
        description="Run a jaxcook recipe. Overrides are key=value with dotted keys (model.lora.rank=16) "
        "or short names (lora_rank=16).",
        add_help=False,
    )
    parser.add_argument("--recipe", metavar="NAME", help="a registered recipe or a dotted module path")
    parser.add_argument("--tiny", action="store_true", help="start from the recipe's tiny() variant")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("-h", "--help", action="store_true", help="list recipes, or a recipe's options")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _recipes_help(parser: argparse.ArgumentParser) -> str:
    from jaxcook.recipes import RECIPES, TASK_ALIASES, summary

    width = max(len(name) for name in RECIPES) + 2
    lines = [parser.format_help().rstrip(), "", "recipes:"]
    lines += [f"  {name:<{width}}{summary(name)}" for name in RECIPES]
    lines += ["", "task names: " + ", ".join(f"{k} = {v}" for k, v in TASK_ALIASES.items())]
    lines += ["", "`train.py --recipe NAME --help` lists a recipe's options with their defaults."]
    return "\n".join(lines)


def _recipe_help(name: str, tiny: bool) -> str:
    from jaxcook.config import describe
    from jaxcook.config_aliases import describe_aliases
    from jaxcook.recipes import get_recipe, recipe_aliases
    from jaxcook.runner import make_config

    module = get_recipe(name)
    cfg = make_config(name, tiny=tiny)
    table = recipe_aliases(module, cfg)
    doc = (module.__doc__ or "").strip()
    variant = "tiny()" if tiny else "Config()"
    lines = [f"recipe {name} ({module.__name__})"]
    if doc:
        lines += ["", doc]
    lines += ["", f"options (key: type = value in {variant}):"]
    lines += [f"  {line}" for line in describe(cfg)]
    if table:
        lines += ["", "short names (name -> the key it sets):"]
        lines += [f"  {line}" for line in describe_aliases(table)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    if not args.help and not args.recipe:
        parser.error("--recipe NAME is required (see --help for the recipes)")
    try:
        return _main(parser, args)
    except Exception as e:
        if not isinstance(e, user_error_classes()):
            raise
        if args.debug:
            traceback.print_exc()
        parser.exit(2, f"train.py: error: {one_line(e)}\n")


def _main(parser: argparse.ArgumentParser, args) -> int:
    from jaxcook.config import config_to_dict

    if args.help:
        print(_recipe_help(args.recipe, args.tiny) if args.recipe else _recipes_help(parser))
        return 0
    from jaxcook.runner import make_config, run_config
    from jaxcook.workflows.preemption import Preempted

    cfg = make_config(args.recipe, tiny=args.tiny, overrides=args.overrides)
    if args.dry_run:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    try:
        result = run_config(args.recipe, cfg)
    except Preempted as e:  # SIGTERM / SIGINT: the checkpoint is written, the logs flushed
        print(f"{e} (checkpoint: {e.checkpoint})")
        return 0
    print(f"log dir: {result.log_dir}")
    if result.final_checkpoint:
        print(f"final checkpoint: {result.final_checkpoint}")
    if result.metrics:
        print(f"last metrics: {json.dumps(result.metrics[-1])}")
    if result.run_id:
        print(f"run id: {result.run_id} (python -m jaxcook.runs show {result.run_id})")
    return 0


if __name__ == "__main__":
    from jaxcook import allocator

    try:
        allocator.relaunch_tuned()  # JAXCOOK_MALLOC=tuned: glibc settings that reuse XLA's step buffers
    except ValueError as e:  # a bad JAXCOOK_MALLOC: one line, like the other user errors
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
