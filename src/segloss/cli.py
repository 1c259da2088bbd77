"""The `segloss` command line: one entry point, thin subcommands that call plain functions.

Each subcommand lives in `segloss.commands.<name>` and exposes two functions:

* ``parse(argv, prog) -> parsed`` — its config from ``argv`` through the typed parser of `segloss.config`
  (jsonargparse: YAML file + flags, every value checked against its field's type; user errors raise ``ValueError``);
  commands without a config (`losses`, `report`) define ``add_arguments(parser: argparse.ArgumentParser)`` instead;
* ``run(parsed) -> int`` — does the work (exit code).

Modules are imported lazily so that ``segloss --help`` stays fast and a broken optional command cannot break the
others.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from typing import Any

from segloss import __version__

# name -> one-line help. The module is segloss.commands.<name>.
COMMANDS: dict[str, str] = {
    "losses": "Show the available losses and evaluate them on a toy batch.",
    "data": "Show examples and statistics of the datasets.",
    "train": "Fine-tune a causal LM with a combined segmentation objective.",
    "eval": "Generate answers and score them.",
    "grid": "Run a grid of train+eval cells into an SQLite store.",
    "report": "Write the paper-style report of a grid store.",
    "store": "Back up a grid store into one self-contained file.",
    "demo": "The embedded default: the whole method on a laptop CPU in minutes.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segloss", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segloss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        # Parsers are declared lazily: only the chosen command's module is imported.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# What to do after an interruption, per command (the outputs themselves are never half-written).
RESUME_HINTS: dict[str, str] = {
    "train": "; continue from the last complete checkpoint with --resume",
    "grid": "; run the same command again to go on (done cells are skipped)",
    "demo": "; run it again (the cached base model is reused)",
}
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report it


class _Interrupted:
    """Turns SIGTERM into KeyboardInterrupt while a command runs, so that `finally`/cleanup code runs for both."""

    def __init__(self) -> None:
        self.signal = signal.SIGINT
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum)
        raise KeyboardInterrupt

    def __enter__(self) -> _Interrupted:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    with _Interrupted() as interrupted:
        try:
            return _run_command(name, rest)
        except (ValueError, FileNotFoundError) as err:
            # User errors: a clear message, no traceback.
            print(f"segloss {name}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            how = "Ctrl-C" if interrupted.signal == signal.SIGINT else interrupted.signal.name
            print(f"segloss {name}: interrupted ({how}){RESUME_HINTS.get(name, '')}", file=sys.stderr)
            return EXIT_CODES.get(interrupted.signal, 130)


def _run_command(name: str, rest: list[str]) -> int:
    module = importlib.import_module(f"segloss.commands.{name}")
    if hasattr(module, "parse"):  # commands with a config: the typed parser of segloss.config
        args = module.parse(rest, prog=f"segloss {name}")
    else:
        sub = argparse.ArgumentParser(
            prog=f"segloss {name}",
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        args = sub.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
