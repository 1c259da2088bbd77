"""Checkpoints verified by content: a corrupt pickle inside an intact zip, or flipped bytes in tensor data, in the
optimizer state, the RNG state or the adapter, sends the resume to the previous checkpoint (named, with the reason)
and the final adapter equals the uninterrupted run's. A checkpoint without checksums (an older segloss) whose file
fails to load is a fall back too, never a traceback and never PyTorch's advice to load unsafely."""

from __future__ import annotations

import io
import json
import logging
import struct
import zipfile
from pathlib import Path

import pytest
from reliability.conftest import RUN
from reliability.test_checkpoint_faults import _assert_same_adapter
from training.helpers_train import tiny_config

from segloss.training import train
from segloss.training.checkpoints import MANIFEST, inspect_checkpoint, load_error_text, manifest_problems


def corrupt_pickle(path: Path) -> None:
    """Garbage opcodes in the pickle of a ``torch.save`` zip; the zip itself (headers, directory, CRCs) stays valid."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info, data in entries:
            archive.writestr(info, data[:2] + b"\xff" * 8 + data[10:] if info.filename.endswith("data.pkl") else data)
    path.write_bytes(out.getvalue())
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # intact as a zip


def corrupt_header(path: Path) -> None:
    """Garbage inside the JSON header of a safetensors file, its length unchanged."""
    raw = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    raw[8 + length // 2 : 8 + length // 2 + 8] = b"\x00\xff" * 4
    path.write_bytes(bytes(raw))


def _tensor_span(path: Path) -> tuple[int, int]:
    """(offset, size) of the largest tensor's bytes inside the file."""
    if path.suffix == ".safetensors":
        (length,) = struct.unpack("<Q", path.read_bytes()[:8])
        return 8 + length, path.stat().st_size - 8 - length
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def flip_tensor_bytes(path: Path) -> None:
    """Bit-rot: 8 bytes inverted in the middle of tensor data (every header still reads)."""
    offset, size = _tensor_span(path)
    raw = bytearray(path.read_bytes())
    for i in range(offset + size // 2, offset + size // 2 + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


CONTENT_FAULTS = {
    "optimizer.pt-corrupt-pickle": ("optimizer.pt", corrupt_pickle),
    "optimizer.pt-flipped-tensor-bytes": ("optimizer.pt", flip_tensor_bytes),
    "rng_state.pth-corrupt-pickle": ("rng_state.pth", corrupt_pickle),
    "rng_state.pth-flipped-tensor-bytes": ("rng_state.pth", flip_tensor_bytes),
    "adapter-corrupt-header": ("adapter_model.safetensors", corrupt_header),
    "adapter-flipped-tensor-bytes": ("adapter_model.safetensors", flip_tensor_bytes),
}


def _resume(run: Path, model_dir: Path, caplog: pytest.LogCaptureFixture) -> dict:
    with caplog.at_level(logging.WARNING, logger="segloss"):
        result = train(tiny_config(model_dir, run, resume=True, **RUN))
    assert result.global_step == 6
    (record,) = result.summary["resumes"]
    return record


@pytest.mark.parametrize("fault", list(CONTENT_FAULTS))
def test_changed_content_falls_back_to_the_previous_checkpoint_with_the_same_result(
    fault, interrupted, reference_run, tiny_model_dir, caplog
) -> None:
    name, breaker = CONTENT_FAULTS[fault]
    breaker(interrupted / "checkpoint-4" / name)
    record = _resume(interrupted, tiny_model_dir, caplog)
    assert record["checkpoint"] == "checkpoint-2" and record["checkpoint_verified"] is True
    reason = record["skipped_checkpoints"]["checkpoint-4"]
    assert reason.startswith(name) and f"skipped checkpoint-4: {name}" in caplog.text
    assert "Traceback" not in caplog.text and "weights_only" not in caplog.text
    _assert_same_adapter(interrupted, reference_run)


@pytest.mark.parametrize("name", ["optimizer.pt", "rng_state.pth"])
def test_a_load_error_in_an_unverified_checkpoint_is_a_fall_back_not_a_traceback(
    name, interrupted, reference_run, tiny_model_dir, caplog
) -> None:
    """Without checksums.json (an older segloss) the corrupt pickle passes every check and fails only when the
    Trainer loads it: the checkpoint is skipped then, with a one-line reason, and the model rebuilt."""
    (interrupted / "checkpoint-4" / MANIFEST).unlink()
    corrupt_pickle(interrupted / "checkpoint-4" / name)
    assert not inspect_checkpoint(interrupted / "checkpoint-4").problems  # nothing to see before loading
    record = _resume(interrupted, tiny_model_dir, caplog)
    assert record["checkpoint"] == "checkpoint-2" and record["at_step"] == 2
    reason = record["skipped_checkpoints"]["checkpoint-4"]
    assert reason == f"{name} cannot be loaded (UnpicklingError: Unsupported operand 255)"
    assert f"resume: checkpoint-4 failed to load: {reason}" in caplog.text
    assert "weights_only" not in caplog.text
    _assert_same_adapter(interrupted, reference_run)


def test_every_checkpoint_file_is_in_its_manifest_and_any_changed_byte_is_named(interrupted) -> None:
    folder = interrupted / "checkpoint-4"
    recorded = json.loads((folder / MANIFEST).read_text())["files"]
    assert set(recorded) == {p.name for p in folder.iterdir()} - {MANIFEST}
    assert manifest_problems(folder) == [] and inspect_checkpoint(folder).verified
    config = folder / "config.yaml"
    raw = bytearray(config.read_bytes())
    raw[-2] ^= 0x01  # one bit of any file, not only of tensors
    config.write_bytes(bytes(raw))
    assert manifest_problems(folder) == [
        f"config.yaml does not match its checksum in {MANIFEST} (its bytes changed after the save)"
    ]
    config.write_bytes(bytes(raw[:-1]))
    assert manifest_problems(folder) == [
        f"config.yaml has {len(raw) - 1} bytes, {MANIFEST} recorded {len(raw)} (a partial copy?)"
    ]
    (folder / MANIFEST).write_text("{")
    assert manifest_problems(folder)[0].startswith(f"{MANIFEST} is unreadable")


def test_pytorch_advice_to_load_unsafely_is_never_repeated() -> None:
    import pickle

    advice = (
        "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely succeed, "
        "but it can result in arbitrary code execution. Do it only if you got the file from a trusted source.\n"
        "Please file an issue with the following so that we can make `weights_only=True` compatible with your use "
        "case: WeightsUnpickler error: \n\nUnsupported operand 255\n\nCheck the documentation of torch.load to learn "
        "more about types accepted by default with weights_only https://pytorch.org/docs/stable/torch.load.html."
    )
    assert load_error_text(pickle.UnpicklingError(advice)) == "UnpicklingError: Unsupported operand 255"
    assert load_error_text(
        RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")
    ) == ("RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory")
