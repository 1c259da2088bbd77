"""The GGUF cache of segloss.models.loading on a tiny GGUF file: the first load converts and writes the cache entry,
later loads read it without touching transformers' GGUF reader; stale, half-written or damaged entries are rebuilt;
a cut or garbled GGUF file fails with one line that names it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from segloss.cli import main
from segloss.models import loading
from segloss.models.loading import GGUF_MARKER, cached_gguf_model, file_sha256, gguf_cache_entry


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty segloss cache for the test ($XDG_CACHE_HOME is where the default cache root lives)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "segloss"


@pytest.fixture
def conversions(monkeypatch):
    """Counts the GGUF conversions (dequantize + save) that the loads below run."""
    calls = []
    convert = loading._convert_gguf

    def counting(path, digest, out):
        calls.append(path)
        convert(path, digest, out)

    monkeypatch.setattr(loading, "_convert_gguf", counting)
    return calls


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_first_load_writes_the_entry_and_later_loads_never_read_the_gguf(tiny_gguf, cache, conversions, monkeypatch):
    first, tokenizer = loading.load_model_and_tokenizer(str(tiny_gguf))
    entry = gguf_cache_entry(file_sha256(tiny_gguf))
    import transformers

    assert entry.parent == cache / "gguf" and entry.name.endswith(f"-transformers-{transformers.__version__}")
    marker = json.loads((entry / GGUF_MARKER).read_text())
    assert marker["gguf_sha256"] == file_sha256(tiny_gguf) and {"config.json", "model.safetensors"} <= set(
        marker["files"]
    )
    assert conversions == [tiny_gguf]

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF file was read again")

    monkeypatch.setattr("transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint", no_gguf)
    from transformers import AutoTokenizer

    with pytest.raises(AssertionError, match="read again"):  # the patch does catch a GGUF read
        AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    second, tokenizer2 = loading.load_model_and_tokenizer(str(tiny_gguf))
    assert conversions == [tiny_gguf]  # no second conversion
    reference = _weights(first)
    assert all(torch.equal(reference[k], v) for k, v in second.state_dict().items())
    assert second.dtype == torch.float32 and second.config.model_type == "llama"
    text = "Question: 3+4?\nAnswer: <<3+4=7>> #### 7"
    assert tokenizer(text).input_ids == tokenizer2(text).input_ids and tokenizer2.pad_token is not None
    assert loading.load_tokenizer(str(tiny_gguf))(text).input_ids == tokenizer(text).input_ids  # from the entry
    half, _ = loading.load_model_and_tokenizer(str(tiny_gguf), dtype="bfloat16")  # dtype applies to the cached copy
    assert half.dtype == torch.bfloat16


def test_the_entry_is_keyed_by_content_not_by_path(tiny_gguf, tmp_path, cache, conversions):
    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(tiny_gguf, copy)
    assert cached_gguf_model(tiny_gguf) == cached_gguf_model(copy)
    assert len(conversions) == 1
    with copy.open("ab") as f:  # other content (trailing bytes are ignored by the reader): another entry
        f.write(b"\0" * 64)
    assert cached_gguf_model(copy) != cached_gguf_model(tiny_gguf) and len(conversions) == 2


@pytest.mark.parametrize(
    "damage",
    ["no-marker", "truncated-weights", "other-transformers", "other-gguf-hash", "garbled-config"],
)
def test_a_stale_or_half_written_entry_is_rebuilt_never_used(tiny_gguf, cache, conversions, damage):
    entry = cached_gguf_model(tiny_gguf)
    reference = _weights(loading.load_model_and_tokenizer(str(tiny_gguf))[0])
    marker = json.loads((entry / GGUF_MARKER).read_text())
    if damage == "no-marker":  # as a build interrupted before its marker (it would not have been renamed, but still)
        (entry / GGUF_MARKER).unlink()
    elif damage == "truncated-weights":
        weights = entry / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage in ("other-transformers", "other-gguf-hash"):
        key = "transformers" if damage == "other-transformers" else "gguf_sha256"
        (entry / GGUF_MARKER).write_text(json.dumps({**marker, key: "0.0.0"}))
    else:  # same size, so only loading it shows the damage
        config = entry / "config.json"
        config.write_bytes(b"{" * config.stat().st_size)
    model, _ = loading.load_model_and_tokenizer(str(tiny_gguf))
    assert len(conversions) == 2  # the entry was rebuilt ...
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())  # ... and this is the rebuilt one
    assert json.loads((entry / GGUF_MARKER).read_text()) == marker
    assert not list(entry.parent.glob(".tmp-*"))  # no temporary directory left behind


@pytest.mark.parametrize("cut", ["header", "tensor-data", "not-gguf"])
def test_a_truncated_or_corrupt_gguf_fails_with_one_line_naming_the_file(tiny_gguf, tmp_path, cache, cut, capsys):
    data = tiny_gguf.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"header": data[:300], "tensor-data": data[: len(data) - 5000], "not-gguf": b"<html>" * 100}[cut])
    with pytest.raises(
        ValueError, match=r"^model: .*bad\.gguf is a truncated/corrupt GGUF file \(.*\); download it"
    ) as err:
        loading.load_model_and_tokenizer(str(bad))
    assert "\n" not in str(err.value)
    assert not (cache / "gguf").exists() or not any((cache / "gguf").iterdir())  # nothing cached
    with pytest.raises(ValueError, match="truncated/corrupt GGUF"):
        loading.load_tokenizer(str(bad))
    code = main(["eval", "--model", str(bad), "--dataset", "arith", "--output-dir", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "truncated/corrupt GGUF" in lines[0] and str(bad) in lines[0]


def test_loads_started_together_convert_once(tiny_gguf, cache, conversions):
    """Two loaders on a cold cache (xdist workers, grid workers): one converts, the other waits and reads its entry."""
    import threading

    entries = []
    threads = [threading.Thread(target=lambda: entries.append(cached_gguf_model(tiny_gguf))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(conversions) == 1 and len(entries) == 2 and entries[0] == entries[1]
