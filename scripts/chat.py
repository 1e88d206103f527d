"""Chat with a trained model in the terminal: `python scripts/chat.py RUN_DIR_OR_MODEL`.

    python scripts/chat.py runs/sft                       # the run's newest checkpoint, its renderer
    python scripts/chat.py smollm2-135m-instruct --temperature 0.7 --system "Be brief."

The reply streams as it is sampled (a chunk of tokens at a time). Commands: `/reset` starts the
conversation over, `/system TEXT` sets the system prompt (`/system` alone clears it) and starts
over, `/quit` (or end of input) leaves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(1, _ROOT)
_SCRIPTS = str(Path(__file__).resolve().parent)
if _SCRIPTS not in sys.path:
    sys.path.insert(1, _SCRIPTS)

HELP = "commands: /reset, /system TEXT, /quit"


def repl(session, stdin, stdout) -> None:
    """Read user lines from `stdin`, write streamed replies to `stdout`, until /quit or EOF."""
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session.reset()
            stdout.write("(conversation reset)\n")
        elif text == "/system" or text.startswith("/system "):
            session.set_system(text[len("/system") :].strip())
            shown = f"system prompt set: {session.system}" if session.system else "system prompt cleared"
            stdout.write(f"({shown}; conversation reset)\n")
        elif text.startswith("/"):
            stdout.write(f"(unknown command {text.split()[0]}; {HELP})\n")
        else:
            session.reply(text, on_text=lambda delta: (stdout.write(delta), stdout.flush()))
            stdout.write("\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> int:
    from sample import add_sampling_args

    parser = argparse.ArgumentParser(prog="chat.py", description=__doc__.splitlines()[0])
    parser.add_argument("path", metavar="RUN_DIR_OR_MODEL")
    parser.add_argument("--system", default=None, help="system prompt to start with")
    parser.add_argument("--chunk-tokens", type=int, default=8, help="tokens sampled per streamed chunk")
    add_sampling_args(parser)
    args = parser.parse_args(argv)

    from jaxcook.chat import ChatSession
    from jaxcook.trained import TrainedModelError, load_trained
    from jaxcook.types import SamplingParams

    try:
        trained = load_trained(args.path, renderer=args.renderer)
    except TrainedModelError as e:
        parser.exit(2, f"chat.py: error: {e}\n")
    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    session = ChatSession(
        trained.sampling_client(seed=args.seed),
        trained.renderer(),
        params,
        system=args.system,
        chunk_tokens=args.chunk_tokens,
    )
    where = trained.checkpoint or trained.model_name
    print(f"chatting with {where} (renderer {trained.renderer_name}); {HELP}", flush=True)
    if sys.stdin.isatty():
        import readline  # noqa: F401 - line editing and history for input lines

    try:
        repl(session, sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
