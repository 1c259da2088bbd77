"""Loading a base causal LM and its tokenizer: a local folder, a hub id, or a GGUF file (dequantized).

``--model`` names a folder (``config.json`` + weights), a hub id, a ``.gguf`` file, or a folder that holds GGUF files
together with ``--gguf-file NAME``. GGUF weights are read through transformers' GGUF support (the ``gguf`` package,
``pip install "segloss[gguf]"``) and dequantized to float, so LoRA trains on them like on any other model.
``torch_dtype`` picks the dtype of the base weights (``auto``: the checkpoint's own); LoRA weights and the losses
stay float32 whatever it is (see :func:`segloss.training.lora.apply_lora` and the losses' float32 rule).

**GGUF cache.** Dequantizing a GGUF file takes a minute or more on a CPU, so the first load of a ``.gguf`` writes the
dense model (float32 safetensors + config + tokenizer, ``save_pretrained``) into
``<cache root>/gguf/<sha256 of the file>-transformers-<version>/`` (cache root: ``$XDG_CACHE_HOME/segloss``, else
``~/.cache/segloss``) and later loads read that folder in seconds. The entry is built in a temporary sibling and
renamed into place; its marker ``segloss-gguf.json`` (written last) records the file's SHA-256, the transformers
version and every file's size, and an entry that does not match them, or fails to load, is rebuilt, never used. A
GGUF file that is cut short or garbled fails at once with one line naming it ("truncated/corrupt GGUF").
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from segloss.config import choice_error
from segloss.fileio import build_directory, cache_root, exclusive_lock, file_sha256  # file_sha256: re-exported

logger = logging.getLogger("segloss.models")
GGUF_MARKER = "segloss-gguf.json"

TorchDtype = Literal["auto", "float32", "bfloat16", "float16"]  # the type of every `torch_dtype` setting
TORCH_DTYPES: tuple[str, ...] = get_args(TorchDtype)


def resolve_dtype(name: str) -> torch.dtype | str:
    """``"auto"`` as is (transformers reads the checkpoint's dtype), else the ``torch`` dtype of that name."""
    if name not in TORCH_DTYPES:  # configs are checked by their parser; this is for callers in Python
        raise ValueError(choice_error("torch_dtype", name, TORCH_DTYPES))
    return name if name == "auto" else getattr(torch, name)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or Path(name).exists()


def resolve_model_source(model: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub id, GGUF file name or None)`` for ``from_pretrained``; clear errors for missing files.

    ``model`` ending in ``.gguf`` is split into its folder and file name (``gguf_file`` must then be unset).
    """
    path = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        if gguf_file:
            raise ValueError(f"gguf_file: --model already names the GGUF file {model!r}; drop --gguf-file {gguf_file}")
        if not path.is_file():
            raise FileNotFoundError(f"model: no GGUF file at {model!r}; check the path")
        return str(path.parent), path.name
    if _looks_like_path(model) and not path.is_dir():
        raise FileNotFoundError(f"model: no model directory at {model!r}; give an existing path or a hub id")
    if gguf_file and path.is_dir() and not (path / gguf_file).is_file():
        found = sorted(p.name for p in path.glob("*.gguf"))
        raise FileNotFoundError(
            f"gguf_file: {gguf_file!r} is not in {model}; GGUF files there: {', '.join(found) or 'none'}"
        )
    return (str(path) if path.is_dir() else model), gguf_file or None


def _check_gguf_installed() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ValueError('model: loading a GGUF file needs the `gguf` package; pip install "segloss[gguf]"') from err


def check_gguf(path: Path) -> None:
    """A clear one-line ``ValueError`` naming ``path`` unless its header parses and every tensor lies in the file.

    A download cut short otherwise fails deep inside transformers (a ``struct.error`` traceback, or a numpy reshape
    error after seconds of work).
    """
    _check_gguf_installed()
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as err:  # gguf raises struct.error, ValueError, IndexError… on a cut or garbled file
        reason = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"model: {path} is a truncated/corrupt GGUF file ({type(err).__name__}: {reason}); download it again"
        ) from None
    if not reader.tensors or end > path.stat().st_size:
        raise ValueError(
            f"model: {path} is a truncated/corrupt GGUF file (tensor data ends at byte {end}, the file has "
            f"{path.stat().st_size}); download it again"
        )


def gguf_cache_entry(digest: str, cache_dir: str | Path | None = None) -> Path:
    """Where the dense model of the GGUF file with content hash ``digest`` is cached (whether or not it exists)."""
    import transformers

    return cache_root(cache_dir) / "gguf" / f"{digest[:16]}-transformers-{transformers.__version__}"


def gguf_entry_is_valid(entry: Path, digest: str) -> bool:
    """The marker is there, names this file's hash and this transformers version, and every file has its size."""
    import transformers

    try:
        marker = json.loads((entry / GGUF_MARKER).read_text())
        files = marker["files"]
        ok = marker["gguf_sha256"] == digest and marker["transformers"] == transformers.__version__
        return ok and "config.json" in files and all((entry / n).stat().st_size == size for n, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, half-written or foreign marker
        return False


def _convert_gguf(path: Path, digest: str, out: Path) -> None:
    """Dequantize ``path`` through transformers' GGUF loader and ``save_pretrained`` model + tokenizer into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # Dense float weights: transformers' packed GGUF layers cannot be trained (Trainer refuses them).
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent),
        gguf_file=path.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=path.name, dequantize=True),
    )
    if hasattr(model.config, "quantization_config"):  # dense weights: the copy must load as a plain checkpoint
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    import transformers

    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    marker = {"gguf_sha256": digest, "gguf_file": str(path), "transformers": transformers.__version__, "files": files}
    (out / GGUF_MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: the entry is complete


def cached_gguf_model(path: str | Path, *, cache_dir: str | Path | None = None, rebuild: bool = False) -> Path:
    """The cache folder of the dense model of GGUF file ``path``, converting it first unless a valid entry exists.

    ``rebuild=True`` replaces an entry that exists (one that failed to load).
    """
    path = Path(path)
    digest = file_sha256(path)
    entry = gguf_cache_entry(digest, cache_dir)
    if not rebuild and gguf_entry_is_valid(entry, digest):
        return entry
    check_gguf(path)  # a cut or garbled file fails here, in one line, before any work
    entry.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(entry.with_name(entry.name + ".lock")):  # one conversion when several processes start at once
        if not rebuild and gguf_entry_is_valid(entry, digest):
            return entry  # another process built it while this one waited
        if entry.exists():
            logger.warning("GGUF cache entry %s is incomplete or stale: rebuilding it", entry)
            shutil.rmtree(entry, ignore_errors=True)
        logger.warning(
            "converting %s to dense float32 weights once (cached in %s; later loads take seconds)", path, entry
        )
        return build_directory(
            entry, lambda out: _convert_gguf(path, digest, out), lambda done: gguf_entry_is_valid(done, digest)
        )


def _valid_cached_gguf(path: Path) -> Path | None:
    digest = file_sha256(path)
    entry = gguf_cache_entry(digest)
    return entry if gguf_entry_is_valid(entry, digest) else None


def load_tokenizer(model: str, *, gguf_file: str | None = None) -> Any:
    """The tokenizer of ``model`` (folder, hub id or GGUF, as :func:`resolve_model_source`); pad → EOS if missing.

    A GGUF file's tokenizer comes from its cache entry when there is one, else straight from the file.
    """
    source, gguf = resolve_model_source(model, gguf_file)
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if gguf:
        path = Path(source) / gguf
        cached = _valid_cached_gguf(path)
        if cached is not None:
            source, extra = str(cached), {"local_files_only": True}
        else:
            check_gguf(path)
    else:
        from segloss.hub import resolve_model

        source, local_only = resolve_model(source)  # empty folders and unreachable hub ids fail here, in seconds
        extra = {"local_files_only": local_only}
    return _tokenizer_from(source, extra, model)


def _tokenizer_from(source: str, extra: dict[str, Any], model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except OSError as err:
        raise FileNotFoundError(f"model: could not load the tokenizer of {model!r} ({err}); check the path") from err
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer: Any) -> Any:
    """The pad-token policy, in this one place: a tokenizer segloss **loads** (a model's, a run's) pads with EOS when
    it has no pad token, as the paper does (the Trainer's and TRL's collators and ``generate`` read
    ``tokenizer.pad_token``). A tokenizer a caller **passes in** is never modified: segloss pads its batches with
    `segloss.data.pad_token_id` (its pad token, else EOS). Returns ``tokenizer``."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(
    name: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    gguf_file: str | None = None,
) -> tuple[Any, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a folder, hub id or GGUF file; a missing pad token → EOS.

    ``dtype`` is a ``torch.dtype`` or one of :data:`TORCH_DTYPES` (``"auto"``: the checkpoint's own dtype). A GGUF
    file is read from its cache entry (:func:`cached_gguf_model`), dequantized into it on the first load.
    """
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype)
    source, gguf = resolve_model_source(name, gguf_file)
    if gguf:
        model, tokenizer = _load_gguf(Path(source) / gguf, dtype, name)
    else:
        from segloss.hub import resolve_model

        tokenizer = load_tokenizer(name)
        source, local_only = resolve_model(source)
        model = _model_from(source, dtype, {"local_files_only": local_only}, name)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_gguf(path: Path, dtype: torch.dtype | str, name: str) -> tuple[Any, Any]:
    """Model + tokenizer of a GGUF file from its cache entry (built on first use; rebuilt once if it fails to load)."""
    entry = cached_gguf_model(path)
    local = {"local_files_only": True}
    try:
        return _model_from(str(entry), dtype, local, name), _tokenizer_from(str(entry), local, name)
    except Exception as err:  # a damaged entry (truncated weights, garbled config): rebuilt, never used
        logger.warning("GGUF cache entry %s failed to load (%s): rebuilding it", entry, type(err).__name__)
    entry = cached_gguf_model(path, rebuild=True)
    return _model_from(str(entry), dtype, local, name), _tokenizer_from(str(entry), local, name)


def _model_from(source: str, dtype: torch.dtype | str, extra: dict[str, Any], name: str) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    except OSError as err:  # hub id unknown, offline without a cache, or a directory without weights
        raise FileNotFoundError(f"model: could not load {name!r} ({err}); check the path or the hub id") from err
