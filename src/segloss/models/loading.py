"""Loading a base causal LM and its tokenizer: a local folder, a hub id, or a GGUF file (dequantized).

``--model`` names a folder (``config.json`` + weights), a hub id, a ``.gguf`` file, or a folder that holds GGUF files
together with ``--gguf-file NAME``. GGUF weights are read through transformers' GGUF support (the ``gguf`` package,
``pip install "segloss[gguf]"``) and dequantized to float, so LoRA trains on them like on any other model.
``torch_dtype`` picks the dtype of the base weights (``auto``: the checkpoint's own); LoRA weights and the losses
stay float32 whatever it is (see :func:`segloss.training.lora.apply_lora` and the losses' float32 rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(name: str) -> torch.dtype | str:
    """``"auto"`` as is (transformers reads the checkpoint's dtype), else the ``torch`` dtype of that name."""
    if name not in TORCH_DTYPES:
        raise ValueError(f"torch_dtype: unknown dtype {name!r}; valid: {', '.join(TORCH_DTYPES)}")
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


def load_tokenizer(model: str, *, gguf_file: str | None = None) -> Any:
    """The tokenizer of ``model`` (folder, hub id or GGUF, as :func:`resolve_model_source`); pad → EOS if missing."""
    from transformers import AutoTokenizer

    source, gguf = resolve_model_source(model, gguf_file)
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if gguf:
        _check_gguf_installed()
    else:
        from segloss.hub import resolve_model

        source, local_only = resolve_model(source)  # empty folders and unreachable hub ids fail here, in seconds
        extra = {"local_files_only": local_only}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except OSError as err:
        raise FileNotFoundError(f"model: could not load the tokenizer of {model!r} ({err}); check the path") from err
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

    ``dtype`` is a ``torch.dtype`` or one of :data:`TORCH_DTYPES` (``"auto"``: the checkpoint's own dtype).
    """
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype)
    source, gguf = resolve_model_source(name, gguf_file)
    tokenizer = load_tokenizer(name, gguf_file=gguf_file)
    extra: dict[str, Any]
    if gguf:
        from transformers import GgufConfig

        # Dense float weights: transformers' packed GGUF layers cannot be trained (Trainer refuses them).
        extra = {"gguf_file": gguf, "quantization_config": GgufConfig(gguf_file=gguf, dequantize=True)}
    else:
        from segloss.hub import resolve_model

        source, local_only = resolve_model(source)
        extra = {"local_files_only": local_only}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    except OSError as err:  # hub id unknown, offline without a cache, or a directory without weights
        raise FileNotFoundError(f"model: could not load {name!r} ({err}); check the path or the hub id") from err
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
