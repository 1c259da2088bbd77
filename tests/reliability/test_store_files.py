"""The result store on disk: one file holds every finished cell even after a kill -9, `segloss report` reads a store
with its WAL beside it or on read-only media and writes nothing beside it, `segloss store backup` writes one
self-contained copy, and a store this user may not read is named as such (not as "not a store")."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from experiments.test_grid import DYING_WORKER, ROOT, _config

from segloss.cli import main
from segloss.experiments.store import ResultStore

NOBODY = 65534


@pytest.fixture(scope="module")
def killed_grid() -> Iterator[Path]:
    """A grid whose worker was killed with SIGKILL in its third cell, after two cells finished; returns its folder
    (results.sqlite with the -wal and -shm the kill left beside it). In a folder every user may read: the report
    looks for the cells' predictions at the paths the store records."""
    tmp = Path(tempfile.mkdtemp(prefix="segloss-killed-grid-"))
    tmp.chmod(0o755)
    config = _config(tmp, models=["m1"], losses=["ce", "lovasz"])  # 4 cells
    (tmp / "grid.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))
    (tmp / "worker.py").write_text(DYING_WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(tmp / "worker.py"), str(tmp / "grid.yaml"), str(tmp / "calls.jsonl"), "2"]
    assert subprocess.run(cmd, env=env, timeout=120).returncode == -signal.SIGKILL
    folder = Path(config.output_dir)
    assert {"results.sqlite-wal", "results.sqlite-shm"} <= {p.name for p in folder.iterdir()}
    yield folder
    shutil.rmtree(tmp)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _reported_cells(out: Path) -> int:
    return sum(len(row["seeds"]) for row in json.loads((out / "table.json").read_text())["table"])


def test_a_copy_of_the_main_file_alone_holds_the_cells_finished_before_a_kill(killed_grid, tmp_path, capsys) -> None:
    copy = tmp_path / "copied" / "results.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(killed_grid / "results.sqlite", copy)  # the documented single file, without its WAL
    assert main(["report", "--store", str(copy), "--output-dir", str(tmp_path / "report")]) == 0, capsys.readouterr()
    assert _reported_cells(tmp_path / "report") == 2  # both finished cells
    assert _listing(copy.parent) == ["results.sqlite"]  # the report wrote nothing beside the store


@pytest.mark.parametrize("side_files", [("-wal", "-shm"), ("-wal",)], ids=["wal-and-shm", "wal-only"])
def test_report_reads_a_store_with_its_wal_beside_it_and_adds_nothing(killed_grid, tmp_path, side_files) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    for suffix in ("", *side_files):
        shutil.copyfile(killed_grid / f"results.sqlite{suffix}", folder / f"results.sqlite{suffix}")
    before = _listing(folder)
    with ResultStore.open_readonly(folder / "results.sqlite") as store:
        assert store.counts() == {"pending": 1, "running": 1, "done": 2, "failed": 0}  # the WAL's claim included
    assert main(["report", "--store", str(folder / "results.sqlite"), "--output-dir", str(tmp_path / "r")]) == 0
    assert _reported_cells(tmp_path / "r") == 2 and _listing(folder) == before


def test_store_backup_writes_one_self_contained_file(killed_grid, tmp_path, capsys) -> None:
    target = tmp_path / "backup" / "results.sqlite"
    assert main(["store", "backup", "--store", str(killed_grid / "results.sqlite"), "--output", str(target)]) == 0
    assert "1 pending, 1 running, 2 done" in capsys.readouterr().out
    assert _listing(target.parent) == ["results.sqlite"]
    assert target.read_bytes()[18:20] == b"\x01\x01"  # rollback journal, not WAL: no side file is ever needed
    with ResultStore.open_readonly(target) as store:
        assert store.counts()["done"] == 2
    assert _listing(target.parent) == ["results.sqlite"]
    assert main(["store", "backup", "--store", str(target), "--output", str(target)]) == 2
    assert "is the store itself" in capsys.readouterr().err


@contextlib.contextmanager
def _as_another_user() -> Iterator[None]:
    """Run the block without root's right to read anything: as ``nobody`` when this is root (the effective ids
    only, so root comes back), as the user itself otherwise."""
    if os.geteuid() != 0:
        yield
        return
    # The interpreter may live under /root (pyenv), which nobody cannot enter: load what the report imports lazily
    # (matplotlib's font manager needs plistlib) while still root, whatever ran before on this worker.
    import matplotlib.font_manager  # noqa: F401

    import segloss.experiments.plots  # noqa: F401

    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="segloss-readonly-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    shutil.rmtree(folder)


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except PermissionError:
        return False
    return True


@pytest.mark.parametrize("side_files", [(), ("-wal", "-shm"), ("-wal",)], ids=["clean", "wal-and-shm", "wal-only"])
def test_report_reads_a_store_on_read_only_media_and_writes_nothing(killed_grid, public_dir, side_files) -> None:
    media = public_dir / "media"  # read-only: neither the folder nor the files may be written by this user
    media.mkdir()
    for suffix in ("", *side_files):
        shutil.copyfile(killed_grid / f"results.sqlite{suffix}", media / f"results.sqlite{suffix}")
        (media / f"results.sqlite{suffix}").chmod(0o444)
    media.chmod(0o555)
    out = public_dir / "report"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    with _as_another_user():
        with pytest.raises(PermissionError):
            (media / "probe").write_bytes(b"")
        code = main(["report", "--store", str(media / "results.sqlite"), "--output-dir", str(out)])
    assert code == 0 and _reported_cells(out) == 2
    assert _listing(media) == sorted(f"results.sqlite{suffix}" for suffix in ("", *side_files))


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_a_store_this_user_may_not_read_is_named_as_such(killed_grid, public_dir, capsys, locked) -> None:
    folder = public_dir / "private"
    folder.mkdir()
    store = folder / "results.sqlite"
    shutil.copyfile(killed_grid / "results.sqlite", store)
    (store if locked == "file" else folder).chmod(0o000)
    with _as_another_user():
        if _readable(store):
            pytest.skip("this user reads files whatever their mode")
        code = main(["report", "--store", str(store), "--output-dir", str(public_dir / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "permission denied" in err and "not a segloss result store" not in err
    assert ("cannot be read" if locked == "file" else "cannot be reached") in err and err.count("\n") == 1
