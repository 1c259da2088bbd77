from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from segloss.experiments import pretrain
from segloss.experiments.pretrain import PretrainConfig, base_model_dir, cache_root, pretrain_base_model

ARITH = {"n_train": 40, "n_validation": 4, "n_test": 4, "max_steps": 2, "max_value": 20}


def tiny(tmp_path, **overrides) -> PretrainConfig:
    values = dict(
        dataset_options=ARITH,
        skip_examples=8,
        vocab_size=300,
        tokenizer_texts=40,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        max_length=96,
        max_steps=3,
        batch_size=4,
        warmup_steps=1,
        cache_dir=str(tmp_path / "cache"),
    )
    values.update(overrides)
    return PretrainConfig(**values)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    config = tiny(root)
    return config, pretrain_base_model(config)


def _weights(path):
    model = AutoModelForCausalLM.from_pretrained(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_builds_a_loadable_base_with_its_summary(built):
    config, path = built
    assert path == base_model_dir(config)
    assert path.parent == cache_root(config.cache_dir) and path.name.startswith("base-")
    summary = json.loads((path / pretrain.MARKER).read_text())
    assert summary["n_examples"] == 40 - 8  # skip_examples are left out of the corpus
    assert summary["settings_hash"] == path.name.removeprefix("base-")
    assert [e["step"] for e in summary["log_history"] if "loss" in e]  # the Trainer logged its CE
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 1
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.pad_token is None  # Llama-style by default
    assert not list(path.parent.glob(".tmp-*"))  # the temporary build directory is gone


def test_pretraining_changes_the_initial_weights(built):
    from segloss.models import build_tiny_llama

    config, path = built
    tokenizer = AutoTokenizer.from_pretrained(path)
    init = build_tiny_llama(tokenizer, hidden_size=16, num_layers=1, num_heads=2, max_positions=96, seed=config.seed)
    trained = _weights(path)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(init.state_dict()[name], trained[name])


def test_second_call_reuses_the_cache_without_training(built, monkeypatch):
    config, path = built
    before = (path / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached base must be reused, not retrained")

    monkeypatch.setattr(pretrain, "_pretrain_into", no_training)
    assert pretrain_base_model(PretrainConfig(**vars(config))) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == before


def test_same_settings_give_identical_weights(built, tmp_path):
    _config, path = built
    steps = []
    again = pretrain_base_model(tiny(tmp_path), progress=lambda step, total: steps.append((step, total)))
    assert again.name == path.name and again != path  # same settings, another cache root
    assert steps == [(1, 3), (2, 3), (3, 3)]  # the progress hook (the demo's progress line) saw every step
    first, second = _weights(path), _weights(again)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_hash_covers_weight_settings_but_not_the_cache_location(tmp_path):
    base = tiny(tmp_path)
    assert base_model_dir(tiny(tmp_path / "elsewhere")).name == base_model_dir(base).name
    for change in (
        {"max_steps": 4},
        {"seed": 1},
        {"hidden_size": 32},
        {"dataset_options": {**ARITH, "n_train": 41}},
        {"skip_examples": 0},
    ):
        assert base_model_dir(tiny(tmp_path, **change)).name != base_model_dir(base).name, change


def _fake_training(config, out, progress=None):
    (out / "weights.bin").write_text("done")
    return {"fake": True}


def test_a_partial_directory_is_replaced_not_reused(tmp_path, monkeypatch):
    config = tiny(tmp_path)
    final = base_model_dir(config)
    final.mkdir(parents=True)
    (final / "model.safetensors").write_text("half-written")  # a crash before the marker
    monkeypatch.setattr(pretrain, "_pretrain_into", _fake_training)
    assert pretrain_base_model(config) == final
    assert (final / "weights.bin").read_text() == "done"
    assert not (final / "model.safetensors").exists()
    assert json.loads((final / pretrain.MARKER).read_text()) == {"fake": True}


def test_a_crash_leaves_no_directory_behind(tmp_path, monkeypatch):
    config = tiny(tmp_path)

    def crash(config, out, progress=None):
        (out / "model.safetensors").write_text("half-written")
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(pretrain, "_pretrain_into", crash)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain_base_model(config)
    assert not base_model_dir(config).exists()
    assert list(cache_root(config.cache_dir).iterdir()) == []


def test_cache_root_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "segloss"
    assert base_model_dir(PretrainConfig()).parent == tmp_path / "xdg" / "segloss"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "segloss"
    assert cache_root(tmp_path / "mine") == tmp_path / "mine"


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_heads", 3, "hidden_size"),
        ("max_steps", 0, "max_steps"),
        ("learning_rate", 0.0, "learning_rate"),
        ("skip_examples", -1, "skip_examples"),
        ("dataset_options", "n_train=3", "dataset_options"),
    ],
)
def test_bad_settings_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**{field: value})


def test_an_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="skip_examples"):
        pretrain_base_model(tiny(tmp_path, skip_examples=40))
