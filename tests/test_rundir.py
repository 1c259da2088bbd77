"""`RunDir`: a run folder's file names and its config.yaml as the typed `TrainConfig`, for resume and eval alike."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from segloss.evaluation import EvalConfig, evaluate
from segloss.rundir import CONFIG_NAME, SUMMARY_NAME, RunDir
from segloss.training.config import TrainConfig
from segloss.training.resume import compare_settings, plan_resume, save_run_config

RUN = {"model": "tiny-model", "dataset": "arith", "loss": "lovasz", "seed": 7, "max_steps": 3}


def _run(tmp_path: Path, **overrides) -> tuple[TrainConfig, RunDir]:
    config = TrainConfig(**{**RUN, "output_dir": str(tmp_path / "run"), **overrides})
    run = RunDir(config.output_dir)
    run.path.mkdir(parents=True)
    save_run_config(config, run.config_path, "segloss train")
    return config, run


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_run_folder_loads_as_the_typed_config(tmp_path) -> None:
    config, run = _run(tmp_path, learning_rate=3e-4, dataset_options={"n_train": 5})
    loaded = run.config()
    assert isinstance(loaded, TrainConfig)
    assert (loaded.seed, loaded.learning_rate, loaded.max_steps) == (7, 3e-4, 3)
    assert loaded.loss_spec.weights == {"ce": 0.6, "lovasz": pytest.approx(0.4)}
    assert loaded.dataset_options == {"n_train": 5} and loaded.to_dict() == config.to_dict()
    assert run.config_path == run.path / "config.yaml" and run.summary_path.name == "train_summary.json"
    assert (run.info_path.name, run.card_path.name) == ("segloss.json", "README.md")
    assert run.eval_dir("test") == run.path / "eval" / "test"
    assert run.summary() is None and not run.has_model()


def test_checkpoints_newest_first_and_their_config_when_the_run_has_none(tmp_path) -> None:
    _, run = _run(tmp_path)
    for step in (2, 10, 4):
        run.checkpoint_path(step).mkdir()
    (run.path / "checkpoint-x").mkdir()  # not a checkpoint
    assert [step for step, _ in run.checkpoints()] == [10, 4, 2]
    run.config_path.rename(run.checkpoint_path(4) / CONFIG_NAME)
    assert run.stored_config_path() == run.checkpoint_path(4) / CONFIG_NAME
    assert RunDir(tmp_path / "nowhere").checkpoints() == []


def test_a_missing_config_is_one_line_naming_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        RunDir(tmp_path).config()
    assert _one_line(err).startswith(f"{tmp_path / CONFIG_NAME}: not found; give a run directory")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [unclosed\n", "not readable YAML"),
        ("- model\n- x\n", "expected a mapping of field: value, got list"),
        ("model: x\nlerning_rate: 0.1\n", "unknown key(s) ['lerning_rate']"),
        ("model: x\nmax_length: many\n", "max_length:"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_file(tmp_path, text, expected) -> None:
    (tmp_path / CONFIG_NAME).write_text(text)
    with pytest.raises(ValueError) as err:
        RunDir(tmp_path).config()
    message = _one_line(err)
    assert expected in message and str(tmp_path / CONFIG_NAME) in message
    assert "command line" not in message  # a run's config.yaml is read alone, without flags


def test_an_unreadable_summary_is_one_line_naming_the_file(tmp_path) -> None:
    (tmp_path / SUMMARY_NAME).write_text('{"steps": 3')
    with pytest.raises(ValueError) as err:
        RunDir(tmp_path).summary()
    assert _one_line(err).startswith(f"{tmp_path / SUMMARY_NAME}: not valid JSON")
    (tmp_path / SUMMARY_NAME).write_text('{"steps": 3}')
    assert RunDir(tmp_path).summary() == {"steps": 3}


def test_resume_compares_typed_values_not_yaml_text(tmp_path, caplog) -> None:
    _, run = _run(tmp_path)
    # PyYAML reads `1e-4` as the string '1e-4'; typed, it is the float 0.0001 the new run asks for. A key of an
    # older segloss is left out of the comparison, with a warning naming it.
    text = run.config_path.read_text().replace("seed: 7", "seed: 7\nlearning_rate: 1e-4\nold_setting: 1")
    run.config_path.write_text(text)
    same = TrainConfig(**{**RUN, "output_dir": str(run.path), "learning_rate": 0.0001, "resume": True})
    with caplog.at_level(logging.WARNING, logger="segloss.resume"):
        assert plan_resume(same).changes == {}
    assert "old_setting" in caplog.text
    changed = TrainConfig(**{**RUN, "output_dir": str(run.path), "learning_rate": 0.001, "resume": True})
    with pytest.raises(ValueError, match=r"learning_rate \(0\.0001 -> 0\.001\)"):
        plan_resume(changed)


def test_resume_of_a_run_whose_config_does_not_load_names_the_file(tmp_path) -> None:
    _, run = _run(tmp_path)
    run.config_path.write_text(run.config_path.read_text() + "max_length: many\n")
    with pytest.raises(ValueError) as err:
        plan_resume(TrainConfig(**{**RUN, "output_dir": str(run.path), "resume": True}))
    assert "max_length:" in _one_line(err) and str(run.config_path) in str(err.value)


def test_the_same_objective_written_two_ways_is_no_change(tmp_path) -> None:
    config, _ = _run(tmp_path)
    other = TrainConfig(**{**RUN, "output_dir": config.output_dir, "loss": "ce=0.6,lovasz=0.4"})
    assert compare_settings(config, other).changes == {}
    third = TrainConfig(**{**RUN, "output_dir": config.output_dir, "ce_weight": 0.5})
    assert set(compare_settings(config, third).changes) == {"ce_weight"}


def test_eval_reads_the_run_config_typed(tmp_path) -> None:
    _, run = _run(tmp_path, dataset_options={"n_train": 3, "n_test": 3}, template="instruction", max_length=77)
    (run.path / "adapter_config.json").write_text("{}")
    seen: list[str] = []

    def generate(prompts, max_new_tokens):
        seen.extend(prompts)
        return ["" for _ in prompts]

    result = evaluate(EvalConfig(run=str(run.path)), generate_fn=generate)
    assert result["n_examples"] == 3 and result["template"] == "instruction"
    assert all(p.startswith("### Instruction:") for p in seen)
    assert Path(result["output_dir"]) == run.eval_dir("test")
    run.config_path.write_text(run.config_path.read_text() + "max_length: many\n")
    with pytest.raises(ValueError) as err:
        evaluate(EvalConfig(run=str(run.path)), generate_fn=generate)
    assert "max_length:" in _one_line(err) and str(run.config_path) in str(err.value)
