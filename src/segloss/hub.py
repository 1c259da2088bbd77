"""Where a model or dataset comes from: a local folder, the Hugging Face cache, or the hub — decided in seconds.

Without this check a hub id with no network costs about a minute of retries inside ``from_pretrained`` (and a
dataset 30 s inside ``load_dataset``) before a message about the network, and an empty folder is reported as a
missing tokenizer converter. Here:

* a local folder must hold a saved model (``config.json``) and tokenizer files; the message names what is missing;
* ``HF_HUB_OFFLINE=1`` is respected: a hub id must then be in the cache, else a clear error at once;
* online, one TCP connection to the hub endpoint (3 s timeout) decides: a failed connection is final — the cached
  copy is used if there is one, otherwise the error says how to proceed. Nothing is retried.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger("segloss.hub")

CONNECT_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@functools.lru_cache(maxsize=8)
def _connect(endpoint: str, timeout: float) -> str | None:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def hub_connection_error(timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when the hub endpoint accepts a connection, else why not (checked once per process and endpoint)."""
    return _connect(hub_endpoint(), timeout)


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or Path(name).exists()


def check_model_folder(folder: Path, field: str = "model") -> None:
    """A folder written by ``save_pretrained``: config.json and tokenizer files; else a message naming the gap."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{field}: no model directory at {str(folder)!r}; give an existing path or a hub id")
    if not any(folder.iterdir()):
        raise FileNotFoundError(
            f"{field}: {folder} is empty; point --{field.replace('_', '-')} at a folder written by save_pretrained "
            "(config.json, the weights and the tokenizer files)"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{field}: {folder} has no config.json, so it is not a saved model; point --{field.replace('_', '-')} "
            "at the folder that save_pretrained wrote"
        )
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{field}: {folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}); save the tokenizer "
            "into the same folder (tokenizer.save_pretrained(folder))"
        )


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id that is not a valid repo name is simply not cached
        return False


def resolve_model(name: str, field: str = "model") -> tuple[str, bool]:
    """``(name, local_files_only)`` for ``from_pretrained``; raises a clear ``FileNotFoundError`` in seconds.

    Local folders are checked by :func:`check_model_folder`; hub ids follow the rules of the module docstring.
    """
    if looks_like_path(name):
        check_model_folder(Path(name).expanduser(), field)
        return name, False
    flag = f"--{field.replace('_', '-')}"
    if hub_offline():
        if _cached(name):
            return name, True
        raise FileNotFoundError(
            f"{field}: {name!r} is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE is set "
            f"(no downloads); pass a local folder with {flag}, or unset HF_HUB_OFFLINE to download it once"
        )
    reason = hub_connection_error()
    if reason is None:
        return name, False
    if _cached(name):
        logger.warning("hub %s unreachable (%s): using the cached copy of %s", hub_endpoint(), reason, name)
        return name, True
    raise FileNotFoundError(
        f"{field}: cannot reach {hub_endpoint()} to download {name!r} ({reason}) and it is not cached; pass a "
        f"local folder with {flag}, or connect to the network (set HF_HUB_OFFLINE=1 to use only the cache)"
    )
