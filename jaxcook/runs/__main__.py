"""`python -m jaxcook.runs list|show|lineage`: browse the run registry.

    python -m jaxcook.runs list [--recipe sft] [--status finished]
    python -m jaxcook.runs show RUN_ID [--json]     # config, metrics, checkpoints (sha256), parents
    python -m jaxcook.runs lineage RUN_ID           # the runs it descends from, and those from it

A RUN_ID may be a unique prefix. `--registry PATH` reads another file than `$JAXCOOK_REGISTRY`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxcook.runs.registry import RegistryError, RunRegistry, registry_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxcook.runs", description="Browse the jaxcook run registry."
    )
    parser.add_argument("--registry", metavar="PATH", help="the registry file (default: $JAXCOOK_REGISTRY)")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="runs, newest first")
    ls.add_argument("--recipe")
    ls.add_argument("--status", choices=("running", "finished", "failed"))
    show = sub.add_parser("show", help="one run: config, metrics, checkpoints, parents")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print it as one JSON object")
    lineage = sub.add_parser("lineage", help="a run's ancestors and descendants")
    lineage.add_argument("run_id")
    return parser


HEADLINE_WORDS = ("nll", "loss", "kl", "accuracy", "correct", "reward")


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds)) if seconds else "-"


def _headline(metrics: dict | None) -> str:
    """The first few held-out metrics of a run, for one line of `list`."""
    held_out = [(k, v) for k, v in (metrics or {}).items() if k.startswith("test/")]
    known = [(k, v) for k, v in held_out if any(w in k for w in HEADLINE_WORDS)]
    shown = (known or held_out)[:2]
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown)


def cmd_list(reg: RunRegistry, args) -> None:
    runs = reg.runs(recipe=args.recipe, status=args.status)
    if not runs:
        print(f"no runs in {reg.path}")
        return
    for r in runs:
        print(
            f"{r['id']}  {r['status']:<8}  {_when(r['started_at'])}  {r['base_model'] or '-'}  "
            f"{r['log_dir'] or '-'}  {_headline(r['final_metrics'])}".rstrip()
        )


def cmd_show(reg: RunRegistry, args) -> None:
    run = reg.get(args.run_id)
    detail = {
        **run,
        "checkpoints": reg.checkpoints(run["id"]),
        "parents": reg.parents(run["id"]),
        "children": reg.children(run["id"]),
    }
    if args.json:
        print(json.dumps(detail, indent=2, sort_keys=True))
        return
    print(f"run {run['id']} ({run['recipe']}, {run['status']})")
    print(f"  started {_when(run['started_at'])}, finished {_when(run['finished_at'])}")
    for key in ("log_dir", "base_model", "error"):
        if run.get(key):
            print(f"  {key}: {run[key]}")
    print(f"  dataset: {json.dumps(run['dataset'])}")
    for p in detail["parents"]:
        print(f"  {p['role']}: {p['checkpoint']} (run {p['parent_run'] or 'not registered'})")
    for c in detail["checkpoints"]:
        final = " (final)" if c["final"] else ""
        print(f"  checkpoint step {c['step']}{final}: {c['path']} sha256 {c['sha256']}")
    for key, value in (run["final_metrics"] or {}).items():
        print(f"  final {key} = {value}")
    for key, value in (run["best_metrics"] or {}).items():
        print(f"  best {key} = {value['value']} (step {value['step']})")
    print(f"  config: {json.dumps(run['config'], sort_keys=True)}")


def cmd_lineage(reg: RunRegistry, args) -> None:
    run = reg.get(args.run_id)
    print(f"{run['id']}  {run['recipe']}  {run['status']}  base {run['base_model'] or '-'}")
    for p in reg.lineage(run["id"]):
        indent = "  " * p["depth"]
        if p["parent_run"]:
            parent = reg.get(p["parent_run"])
            about = f"{parent['recipe']}  {parent['status']}  {p['checkpoint']}"
            print(f"{indent}{p['role']} <- {parent['id']}  {about}")
        else:
            print(f"{indent}{p['role']} <- (not registered) {p['checkpoint']}")
    for c in reg.children(run["id"]):
        print(f"  used as {c['role']} by {c['run_id']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = Path(args.registry) if args.registry else registry_path()
    if path is None:
        print("python -m jaxcook.runs: error: the registry is off (JAXCOOK_REGISTRY=off)", file=sys.stderr)
        return 2
    if not path.exists():
        print(f"python -m jaxcook.runs: error: no registry at {path} (no run recorded yet)", file=sys.stderr)
        return 2
    try:
        with RunRegistry(path) as reg:
            {"list": cmd_list, "show": cmd_show, "lineage": cmd_lineage}[args.command](reg, args)
    except RegistryError as e:
        print(f"python -m jaxcook.runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
