"""Resume compares input paths resolved: a trailing slash, a relative or absolute spelling or another working
directory is the same path; a moved copy of the same data is accepted by its content fingerprint, other data refused
naming the path; ``--resume_allow_changes FIELD...`` allows the named fields only."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import yaml
from reliability.conftest import RUN
from reliability.test_checkpoint_faults import _assert_same_adapter
from training.helpers_train import tiny_config

from segloss.cli import main
from segloss.training.config import parse_train_config, train_config_from_values
from segloss.training.resume import input_record, plan_resume
from segloss.training.train import write_run_files

GSM8K = [
    {
        "question": f"Tom has {i} apples and buys 2. How many?",
        "answer": f"{i}+2 = <<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}",
    }
    for i in range(6)
]


def _data(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    return folder


@pytest.fixture
def started(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A gsm8k run started from ``tmp_path/work`` with ``--data_path ../shared/gsm8k``, as train() leaves it before its
    first checkpoint (config.yaml and segloss.json); the working directory stays ``tmp_path/work``."""
    _data(tmp_path / "shared" / "gsm8k")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    config = _config(tiny_model_dir, "../shared/gsm8k", resume=False)
    write_run_files(config, config.run_dir, input_record(config))
    return config.run_dir


def _config(model_dir: Path, data_path: str, **overrides):
    values = {"dataset": "gsm8k", "data_path": data_path, "resume": True, **overrides}
    return tiny_config(model_dir, Path.cwd().parent / "run", **values)


def test_config_yaml_stores_paths_resolved_and_shows_them_as_given(started, tmp_path) -> None:
    text = (started / "config.yaml").read_text()
    assert "# data_path given as ../shared/gsm8k\n" in text
    assert yaml.safe_load(text)["data_path"] == str((tmp_path / "shared" / "gsm8k").resolve())
    inputs = json.loads((started / "segloss.json").read_text())["inputs"]
    assert inputs["data_path"]["given"] == "../shared/gsm8k" and inputs["data_path"]["fingerprint"].startswith(
        "sha256:"
    )


def test_every_spelling_of_the_same_path_is_the_same_setting(started, tmp_path, tiny_model_dir, monkeypatch) -> None:
    data = tmp_path / "shared" / "gsm8k"
    for spelling in ("../shared/gsm8k/", str(data), f"{data}/", "./../shared/gsm8k", "../work/../shared/gsm8k"):
        plan = plan_resume(_config(tiny_model_dir, spelling))
        assert plan.changes == {} and plan.moved == {}, spelling
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere" / "deeper")  # another working directory, relative spellings
    assert plan_resume(_config(tiny_model_dir, "../../shared/gsm8k")).changes == {}
    stored = yaml.safe_load((started / "config.yaml").read_text())  # `--config run/config.yaml` from anywhere
    assert plan_resume(train_config_from_values({**stored, "resume": True})).changes == {}


def test_a_moved_copy_of_the_same_data_is_accepted_and_recorded(started, tmp_path, tiny_model_dir, caplog) -> None:
    data = tmp_path / "shared" / "gsm8k"
    shutil.move(data, tmp_path / "moved")  # the original is gone: only the fingerprint in segloss.json remains
    with caplog.at_level(logging.WARNING, logger="segloss"):
        plan = plan_resume(_config(tiny_model_dir, str(tmp_path / "moved")))
    assert plan.changes == {} and plan.moved == {"data_path": (str(data.resolve()), str(tmp_path / "moved"))}
    assert "data_path moved from" in caplog.text and "same content" in caplog.text
    assert plan.record()["moved_inputs"]["data_path"]["after"] == str(tmp_path / "moved")


def test_other_data_at_another_path_is_refused_naming_the_path(started, tmp_path, tiny_model_dir) -> None:
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "shared" / "gsm8k", other)
    with (other / "train.jsonl").open("a") as handle:
        handle.write(json.dumps(GSM8K[0]) + "\n")
    with pytest.raises(ValueError) as err:
        plan_resume(_config(tiny_model_dir, str(other)))
    message = str(err.value)
    assert (
        f"data_path ('{(tmp_path / 'shared' / 'gsm8k').resolve()}' -> '{other}': {other} holds other content"
        in message
    )
    assert message.endswith(
        "or pass --resume_allow_changes data_path to continue anyway (the changes are recorded in train_summary.json)"
    )
    with pytest.raises(ValueError, match=rf"data_path \(.* -> '{tmp_path / 'missing'}': .* does not exist\)"):
        plan_resume(_config(tiny_model_dir, str(tmp_path / "missing")))


def test_allow_changes_allows_the_named_fields_only(started, tmp_path, tiny_model_dir) -> None:
    other = _data(tmp_path / "other")
    (other / "test.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"differ from .*: seed \(42 -> 7\)\. .* --resume_allow_changes seed to"):
        plan_resume(_config(tiny_model_dir, str(other), seed=7, resume_allow_changes=["data_path"]))
    plan = plan_resume(_config(tiny_model_dir, str(other), seed=7, resume_allow_changes=["data_path", "seed"]))
    assert set(plan.changes) == {"data_path", "seed"}
    assert set(plan_resume(_config(tiny_model_dir, str(other), seed=7, resume_allow_changes=True)).changes) == {
        "data_path",
        "seed",
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--resume_allow_changes"], True),
        (["--resume_allow_changes", "--seed", "3"], True),
        (["--resume_allow_changes", "false"], False),
        (["--resume_allow_changes", "seed", "data_path"], ["seed", "data_path"]),
        (["--resume_allow_changes", "seed,data_path", "--seed", "3"], ["seed", "data_path"]),
        (["--resume-allow-changes=seed"], ["seed"]),
        (["--resume_allow_changes", "[seed, learning_rate]"], ["seed", "learning_rate"]),
    ],
)
def test_resume_allow_changes_flag_spellings(argv, expected) -> None:
    assert parse_train_config(["--model", "m", *argv]).resume_allow_changes == expected


def test_resume_allow_changes_rejects_unknown_fields(capsys) -> None:
    assert main(["train", "--model", "m", "--resume_allow_changes", "sed"]) == 2
    assert "resume_allow_changes: unknown field(s) ['sed']" in capsys.readouterr().err


def test_resume_with_the_model_spelled_from_another_directory_trains_to_the_same_result(
    interrupted, reference_run, tiny_model_dir, tmp_path, monkeypatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    relative = os.path.relpath(tiny_model_dir) + "/"  # was refused: "model ('/abs/tiny' -> '../../tiny/')"
    config = str(interrupted / "config.yaml")
    assert main(["train", "--config", config, "--output_dir", str(interrupted), "--resume", "--model", relative]) == 0
    summary = json.loads((interrupted / "train_summary.json").read_text())
    assert summary["steps"] == RUN["max_steps"] and summary["resumes"][0]["config_changes"] == {}
    inputs = json.loads((interrupted / "segloss.json").read_text())["inputs"]  # still there after the last write
    assert inputs["model"]["given"] == relative and inputs["model"]["path"] == str(tiny_model_dir.resolve())
    _assert_same_adapter(interrupted, reference_run)


def test_own_data_file_as_dataset_is_one_setting_in_every_spelling_and_a_moved_copy_is_accepted(
    tmp_path, tiny_model_dir, monkeypatch
) -> None:
    """``--dataset my.jsonl`` (the user's own data) is an input path like ``data_path``: stored resolved, compared
    resolved from another working directory, and a moved copy with the same content is accepted."""
    rows = "".join(json.dumps({"prompt": f"{i}+2=", "completion": f"{i + 2}"}) + "\n" for i in range(6))
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "mine.jsonl").write_text(rows)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    config = tiny_config(tiny_model_dir, tmp_path / "run", dataset="../shared/mine.jsonl")
    assert config.dataset == str((tmp_path / "shared" / "mine.jsonl").resolve())
    write_run_files(config, config.run_dir, input_record(config))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = tiny_config(tiny_model_dir, tmp_path / "run", dataset="../shared/mine.jsonl", resume=True)
    assert plan_resume(again).changes == {}
    shutil.move(tmp_path / "shared" / "mine.jsonl", tmp_path / "moved.jsonl")
    moved = plan_resume(
        tiny_config(tiny_model_dir, tmp_path / "run", dataset=str(tmp_path / "moved.jsonl"), resume=True)
    )
    assert moved.changes == {} and set(moved.moved) == {"dataset"}


def test_a_builtin_dataset_name_stays_a_name_beside_a_folder_of_that_name(
    tmp_path, tiny_model_dir, monkeypatch
) -> None:
    (tmp_path / "arith").mkdir()  # a folder called like a built-in dataset in the working directory
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tiny_model_dir, tmp_path / "run", dataset="arith")
    assert config.dataset == "arith" and "dataset" not in input_record(config)
