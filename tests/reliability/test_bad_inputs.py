"""Bad data, models and flags: each gets a message naming the file and line (or the field) and the fix, in seconds."""

from __future__ import annotations

import json
import time

import pytest

from segloss.cli import main
from segloss.data import load_examples
from segloss.data.base import read_records, validation_indices
from segloss.hub import _connect, resolve_model

GSM8K = {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4 = <<3+4=7>>7\n#### 7"}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def _write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def online_without_network(monkeypatch):
    """As on a machine with no network and HF_HUB_OFFLINE unset."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    _connect.cache_clear()
    yield
    _connect.cache_clear()


@pytest.mark.parametrize("split", ["train", "validation"])
def test_missing_field_names_the_file_line_after_the_validation_split(tmp_path, split) -> None:
    records = [dict(GSM8K) for _ in range(20)]
    held_out = sorted(validation_indices(20, 42))
    bad = held_out[0] if split == "validation" else next(i for i in range(20) if i not in held_out)
    del records[bad]["answer"]
    _write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(ValueError) as err:
        load_examples("gsm8k", split, tmp_path, seed=42)
    message = str(err.value)
    assert f"train.jsonl:{bad + 1} is missing field 'answer'" in message  # the file's line, not the split's index
    assert "add the field or remove that record" in message


def test_non_utf8_jsonl_names_file_line_and_column(tmp_path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_bytes(json.dumps(GSM8K).encode() + b"\n" + b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 18\); re-save"):
        load_examples("gsm8k", "test", tmp_path)


def test_non_utf8_json_array_names_the_line(tmp_path) -> None:
    path = tmp_path / "dev.json"
    path.write_bytes(b'[\n  {"Problem": "ok"},\n  {"Problem": "\xff"}\n]\n')
    with pytest.raises(ValueError, match=r"dev\.json:3: not UTF-8 text \(byte 0xff at column 16\)"):
        read_records(path)


def test_utf8_bom_is_accepted(tmp_path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GSM8K).encode() + b"\n")
    assert read_records(path) == [GSM8K]


def test_empty_folder_as_model_says_it_is_empty(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = main(["train", "--model", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "model:" in err and "is empty" in err and "save_pretrained" in err
    assert "sentencepiece" not in err and not (tmp_path / "out").exists()


def test_folder_without_config_or_tokenizer_names_the_missing_file(tmp_path, tiny_model_dir) -> None:
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        resolve_model(str(folder))
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has no tokenizer files"):
        resolve_model(str(folder))


def test_hub_id_with_hub_offline_fails_at_once(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code = main(["eval", "--model", "someorg/no-such-model", "--dataset", "arith", "--output-dir", str(tmp_path)])
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert code == 2 and "not in the Hugging Face cache" in err and "HF_HUB_OFFLINE" in err


def test_hub_id_without_network_fails_within_seconds(tmp_path, capsys, online_without_network) -> None:
    start = time.perf_counter()
    code = main(["train", "--model", "someorg/no-such-model", "--output-dir", str(tmp_path / "out")])
    assert time.perf_counter() - start < 10  # was 55-60 s of retries inside from_pretrained
    err = capsys.readouterr().err
    assert code == 2 and f"cannot reach {UNREACHABLE}" in err and "pass a local folder with --model" in err


def test_dataset_without_data_path_and_without_network_fails_within_seconds(online_without_network) -> None:
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"unreachable .*pass --data-path pointing at local gsm8k files"):
        load_examples("gsm8k", "test")
    assert time.perf_counter() - start < 10  # was 30 s inside load_dataset


def test_dataset_without_data_path_offline_asks_for_data_path(capsys) -> None:
    assert main(["data", "show", "gsm8k"]) == 2
    assert "hub is offline; pass --data-path" in capsys.readouterr().err


def _parsed(command: str, argv: list[str]):
    """The config a command builds from ``argv`` (its ``parse``; ``report`` has argparse flags and no config)."""
    import argparse
    import importlib

    module = importlib.import_module(f"segloss.commands.{command}")
    if hasattr(module, "parse"):
        parsed = module.parse(argv)
        if command == "grid":  # (GridConfig, GridRunOptions)
            return parsed[0]
        return parsed.config if command == "data" else parsed  # data: DataArgs(action, dataset, config)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


COMMAND_ARGS = {
    "train": ["--model", "m"],
    "eval": ["--model", "m", "--dataset", "arith"],
    "data": ["show", "arith"],
}


@pytest.mark.parametrize("command", ["train", "eval", "data"])
@pytest.mark.parametrize("spelling", ["--data-path", "--data_path"])
def test_data_path_is_spelled_the_same_in_every_command(command, spelling) -> None:
    args = _parsed(command, [*COMMAND_ARGS[command], spelling, "/some/data", "--dataset-options", "{n_train: 3}"])
    assert args.data_path == "/some/data" and args.dataset_options == {"n_train": 3}


@pytest.mark.parametrize("command", ["train", "eval", "grid", "demo", "report"])
def test_output_folder_flag_is_output_dir_everywhere(command) -> None:
    grid = ["--models", "[m]", "--datasets", "[arith]", "--losses", "[ce]"]
    argv = {"grid": grid, "demo": [], "report": ["--store", "s.sqlite"]}.get(command, COMMAND_ARGS.get(command, []))
    args = _parsed(command, [*argv, "--output-dir", "/some/out"])
    assert str(getattr(args, "output_dir", getattr(args, "out", None))) == "/some/out"


def test_ce_weight_1_with_a_task_loss_is_refused_not_trained_as_ce(tmp_path, capsys) -> None:
    argv = ["train", "--model", "m", "--loss", "lovasz", "--ce_weight", "1.0", "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ce_weight: 1.0 gives lovasz the weight 0" in err and "write `loss: ce` for CE alone" in err
    assert not (tmp_path / "o").exists()
    from segloss.training.config import parse_train_config

    assert parse_train_config(["--model", "m", "--loss", "ce", "--ce_weight", "1.0"]).loss_weights() == {"ce": 1.0}
    assert parse_train_config(["--model", "m", "--loss", "lovasz", "--ce_weight", "0"]).loss_weights() == {
        "ce": 0.0,
        "lovasz": 1.0,
    }


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comments-only"])
def test_an_empty_config_file_is_named_as_empty(tmp_path, capsys, text) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"segloss train: error: {path}: the config file is empty (no settings); write one `field: value` per line "
        "(e.g. `model: PATH`) or leave out --config\n"
    )


def test_a_json_line_with_a_raw_control_character_names_the_column_and_the_fix(tmp_path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GSM8K) + "\n" + '{"question": "a\tb", "answer": "#### 1"}\n')
    with pytest.raises(ValueError) as err:
        read_records(path)
    assert str(err.value) == (
        f"{path}:2: malformed JSON line (Invalid control character at column 16: raw control character '\\t' inside "
        "a string; write it escaped (\\t)); fix or remove that line"
    )
