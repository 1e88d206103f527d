"""Run a recipe from the shell: `python scripts/train.py --recipe NAME [--tiny] [key=value ...]`.

The same call as `jaxcook.run(NAME, tiny=..., key=value, ...)`: values are parsed by the recipe
config's annotations, dotted keys reach nested configs (`lora.rank=16`).

    python scripts/train.py --help                           # the recipes
    python scripts/train.py --recipe sft --help              # sft's options and defaults
    python scripts/train.py --recipe sft --tiny --dry-run lora.rank=8   # print the config, run nothing
    python scripts/train.py --recipe mypackage.my_recipe ...  # a recipe module outside the registry
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# `recipes` and `jaxcook` from this checkout (no install needed); a recipe given as a module path is
# looked up from the current directory too, as `python -m` would.
_ROOT = str(Path(__file__).resolve().parent.parent)
for _path in (_ROOT, os.getcwd()):
    if _path not in sys.path:
        sys.path.insert(1, _path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        usage="python scripts/train.py --recipe NAME [--tiny] [--dry-run] [key=value ...]",
        description="Run a jaxcook recipe. Overrides are key=value with dotted keys (lora.rank=16).",
        add_help=False,
    )
    parser.add_argument("--recipe", metavar="NAME", help="a registered recipe or a dotted module path")
    parser.add_argument("--tiny", action="store_true", help="start from the recipe's tiny() variant")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("-h", "--help", action="store_true", help="list recipes, or a recipe's options")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _recipes_help(parser: argparse.ArgumentParser) -> str:
    from recipes import RECIPES, summary

    width = max(len(name) for name in RECIPES) + 2
    lines = [parser.format_help().rstrip(), "", "recipes:"]
    lines += [f"  {name:<{width}}{summary(name)}" for name in RECIPES]
    lines += ["", "`train.py --recipe NAME --help` lists a recipe's options with their defaults."]
    return "\n".join(lines)


def _recipe_help(name: str, tiny: bool) -> str:
    from jaxcook.config import describe
    from jaxcook.runner import make_config
    from recipes import get_recipe

    module = get_recipe(name)
    cfg = make_config(name, tiny=tiny)
    doc = (module.__doc__ or "").strip()
    variant = "tiny()" if tiny else "Config()"
    lines = [f"recipe {name} ({module.__name__})"]
    if doc:
        lines += ["", doc]
    lines += ["", f"options (key: type = value in {variant}):"]
    lines += [f"  {line}" for line in describe(cfg)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from jaxcook.config import OverrideError, config_to_dict
    from jaxcook.workflows.preemption import Preempted
    from recipes import RecipeError

    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    try:
        if args.help:
            print(_recipe_help(args.recipe, args.tiny) if args.recipe else _recipes_help(parser))
            return 0
        if not args.recipe:
            parser.error("--recipe NAME is required (see --help for the recipes)")
        from jaxcook.runner import make_config, run_config

        cfg = make_config(args.recipe, tiny=args.tiny, overrides=args.overrides)
        if args.dry_run:
            print(json.dumps(config_to_dict(cfg), indent=2))
            return 0
        result = run_config(args.recipe, cfg)
    except (OverrideError, RecipeError) as e:
        parser.exit(2, f"train.py: error: {e}\n")
    except Preempted as e:  # SIGTERM / SIGINT: the checkpoint is written, the logs flushed
        print(f"{e} (checkpoint: {e.checkpoint})")
        return 0
    print(f"log dir: {result.log_dir}")
    if result.final_checkpoint:
        print(f"final checkpoint: {result.final_checkpoint}")
    if result.metrics:
        print(f"last metrics: {json.dumps(result.metrics[-1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
