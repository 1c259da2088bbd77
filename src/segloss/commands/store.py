"""Copy a grid's result store into one self-contained file, whatever its WAL still holds.

    segloss store backup --store runs/grid/results.sqlite --output backups/results-2024-06-01.sqlite

A grid writes every finished cell into results.sqlite itself (its WAL holds at most the cells in flight), so copying
that one file is safe once the grid has stopped. While workers run, or after one was killed, `backup` is the safe
copy: it reads the store read-only (nothing is written beside it) through SQLite's backup API and writes the copy
atomically, as a plain rollback-journal database that needs no -wal/-shm file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["backup"], help="backup: write one self-contained copy of the store.")
    parser.add_argument("--store", type=Path, required=True, help="The grid's SQLite store (results.sqlite).")
    parser.add_argument("--output", type=Path, required=True, help="The copy to write (replaced atomically).")


def run(args: argparse.Namespace) -> int:
    from segloss.experiments.store import backup_store

    counts = backup_store(args.store, args.output)
    cells = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    print(f"store backup: {args.output} ({cells or 'no cells'})")
    return 0
