"""Writing output files so that an error, Ctrl-C or a kill never leaves a half-written file in place of a good one.

* :func:`atomic_write` writes a per-process temporary file beside the target and renames it into place. Any Python
  exception (Ctrl-C and SIGTERM included: the CLI turns SIGTERM into one) removes the temporary file; a file left
  by a process killed with SIGKILL is removed by the next write of the same target on the same host, once that
  process is gone.
* :func:`write_pair` writes two files that only make sense together (predictions and their metrics): the second is
  removed first and written last, so whenever it exists it belongs to the first.
* :func:`content_fingerprint` identifies a file or folder by its content, so that a resumed run can tell a moved
  copy of its data from other data.
* :func:`build_directory` builds a whole directory (a cached model) in a temporary sibling and renames it into place
  once complete, under :func:`cache_root` (``$XDG_CACHE_HOME/segloss``, else ``~/.cache/segloss``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _temporary(path: Path) -> Path:
    # Host and pid in the name: workers on several machines may share the folder, and only this machine can tell
    # whether one of its own processes is gone.
    return path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete ``<name>.<host>.<pid>.tmp`` files beside ``path`` left by processes of this host that are gone."""
    path = Path(path)
    prefix = f"{path.name}.{socket.gethostname()}."
    removed = []
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid_text = candidate.name[len(prefix) : -len(".tmp")]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to a per-process temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX, and the per-process name keeps concurrent writers (grid workers) from sharing a
    temporary file. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_pair(first: str | Path, first_data: str | bytes, second: str | Path, second_data: str | bytes) -> None:
    """Write ``first`` then ``second``, each atomically, so that an existing ``second`` always matches ``first``.

    An older ``second`` is removed before ``first`` changes: an interruption in between leaves ``first`` alone
    (the sign of an unfinished write), never ``first`` beside a ``second`` from another run.
    """
    Path(second).unlink(missing_ok=True)
    atomic_write(first, first_data)
    atomic_write(second, second_data)


# Files above this size are fingerprinted by their size and evenly spaced samples, so that fingerprinting a model
# folder of several GB at every training start costs milliseconds; smaller files (datasets, configs) are read whole.
FINGERPRINT_FULL_BYTES = 64 << 20
_SAMPLES, _SAMPLE_BYTES = 64, 64 << 10


def read_json_object(path: str | Path, *, required: bool = True) -> dict[str, Any]:
    """A JSON object file (``{}`` for a missing one unless ``required``); a missing, unreadable or non-object file
    raises one line naming it."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path}: not found")
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(err).split())})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks (about 0.3 s for 100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_digest(path: Path, size: int) -> str:
    if size <= FINGERPRINT_FULL_BYTES:
        return file_sha256(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for i in range(_SAMPLES):
            handle.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def content_fingerprint(path: str | Path) -> str | None:
    """``sha256:<hex>`` of a file or folder's content: every file's path (relative to the folder), size and bytes, in
    sorted order; hidden files and folders (``.cache``, ``.git``) are left out. The same data at another path gives
    the same fingerprint. None when ``path`` does not exist."""
    path = Path(path)
    if path.is_file():
        files = [("", path)]  # a single file: its name is not content (a renamed copy is the same data)
    elif path.is_dir():
        files = sorted(
            (p.relative_to(path).as_posix(), p)
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    else:
        return None
    digest = hashlib.sha256()
    for name, file in files:
        size = file.stat().st_size
        digest.update(f"{name}\0{size}\0{_file_digest(file, size)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$XDG_CACHE_HOME/segloss``, else ``~/.cache/segloss``."""
    if cache_dir is not None:
        return Path(cache_dir)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "segloss"


def build_directory(final: Path, build: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Run ``build(tmp)`` in a fresh temporary sibling of ``final`` and rename it to ``final``; returns ``final``.

    ``build`` must write its completion marker last, and ``is_complete`` check it: an interrupted build leaves no
    ``final`` (its temporary directory is removed), and a ``final`` that is not complete (an older crash, a stale
    entry) is replaced. When another process finished ``final`` first, its directory is kept and this one dropped.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        build(tmp)
        if final.exists() and not is_complete(final):
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):  # another process finished first: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the block, so that processes of
    one host take turns (``flock``; where it does not exist the block runs unlocked)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; a duplicate build is the only cost
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
