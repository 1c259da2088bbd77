from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from segloss.cli import main
from segloss.experiments.demo import (
    ALL_LOSSES,
    FULL,
    SMOKE,
    DemoConfig,
    grid_config,
    pretrain_config,
    resolve_losses,
)
from segloss.experiments.pretrain import load_corpus

SUMMARY_FIELDS = {"n_seeds", "em_mean", "em_ci", "rel_change_vs_ce", "rel_change_ci", "p_value"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`segloss demo --smoke` (two losses to keep it fast) from the command line with two fine-tuning workers, then a
    second run in one process that must reuse the cached base; what the first run printed (stdout, stderr)."""
    root = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--smoke", "--losses", "ce,lovasz", "--output-dir", str(root / "out")]
    argv += ["--cache-dir", str(root / "cache")]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        first_code = main([*argv, "--workers", "2"])
    first = json.loads((root / "out" / "demo.json").read_text())
    second_code = main([*argv, "--workers", "1"])  # starts over (no --resume): base from the cache
    second = json.loads((root / "out" / "demo.json").read_text())
    return root, (first_code, first), (second_code, second), (stdout.getvalue(), stderr.getvalue())


@pytest.mark.slow
def test_smoke_demo_prints_the_table_and_writes_the_report(smoke):
    root, (code, result), _, _ = smoke
    assert code == 0
    out = root / "out"
    for name in (
        "table.md",
        "demo.json",
        "results.sqlite",
        "report/report.md",
        "report/summary.json",
        "report/em_per_loss.png",
        "report/em_per_seed.png",
        "report/step_errors.png",
        "report/table.csv",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "report/em_per_seed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| Loss | EM % [95 % CI] | EM % per seed | vs CE [95 % CI] | p (Holm) |")
    assert lines[2].startswith("| ce |") and lines[3].startswith("| lovasz |")
    assert lines[5].startswith("- ce: the baseline") and lines[6].startswith("- lovasz: ")  # one verdict per loss
    summary = json.loads((out / "report/summary.json").read_text())
    assert summary["correction"] == "holm"  # (the file is the second run's; the first run's is in demo.json)
    assert summary["losses"]["lovasz"]["em_per_seed"] == result["summary"]["losses"]["lovasz"]["em_per_seed"]
    assert list(summary["losses"]) == ["ce", "lovasz"]
    for entry in summary["losses"].values():
        assert set(entry) >= SUMMARY_FIELDS
        assert entry["n_seeds"] == SMOKE.n_seeds == 2  # --smoke keeps two seeds
        low, high = entry["em_ci"]
        assert 0.0 <= low <= entry["em_mean"] <= high <= 1.0
        assert entry["train_seconds"] > 0.0 and entry["train_tokens"] > 0
    assert summary["n_problems"] == SMOKE.arith["n_test"] == 16
    assert summary["losses"]["ce"]["p_value"] is None  # CE is the baseline
    assert result["seeds"] == [0, 1]
    assert result["base_model"].startswith(str(root / "cache"))
    # The base never saw the formula format: nothing it writes is a well-formed `<<…>> #### n` answer.
    assert result["base"]["well_formed"] == 0.0 and result["base"]["exact_match"] == 0.0
    assert "### " in (out / "report/report.md").read_text()  # the grid report has the study section


@pytest.mark.slow
def test_smoke_demo_is_deterministic_and_reuses_the_base(smoke):
    """Same numbers with two worker processes and with one: every cell runs on one torch thread wherever it runs."""
    _, (_, first), (code, second), _ = smoke
    assert code == 0
    assert not first["base_cached"] and second["base_cached"]
    assert second["base_model"] == first["base_model"]
    for loss in ("ce", "lovasz"):
        a, b = first["summary"]["losses"][loss], second["summary"]["losses"][loss]
        assert a["em_per_seed"] == b["em_per_seed"] and a["iou"] == b["iou"]
    assert second["table"].splitlines()[:2] == first["table"].splitlines()[:2]


@pytest.mark.slow
def test_smoke_demo_prints_one_line_per_stage_and_no_library_output(smoke):
    root, (code, result), _, (stdout, stderr) = smoke
    assert code == 0 and stderr == ""  # warnings, notices and progress bars went to the log file
    stages = [line for line in stdout.splitlines() if line.startswith("[demo]")]
    assert [line.split()[1] for line in stages] == ["1/4", "2/4", "the", "3/4", "4/4", "report:"]
    assert "2 worker(s): 4 done, 0 failed" in stages[3]
    assert stages[-1].startswith("[demo] report: ") and str(root / "out" / "demo.log") in stages[-1]
    table = result["table"].splitlines()
    others = [line for line in stdout.splitlines() if line and not line.startswith("[demo]")]
    assert others == table + result["verdicts"]  # nothing but the stages, the table and the verdicts
    log = (root / "out" / "demo.log").read_text()
    assert "exact_match" in log and "[grid] cell" in log  # the evaluations' and the grid's own output is kept


def test_pretraining_never_shows_the_target_format():
    """The embedded task: the base's corpus writes the steps in words; the fine-tuning/test data is the formula
    format that the metrics score."""
    for preset_config in (DemoConfig(smoke=True), DemoConfig()):
        pre = pretrain_config(preset_config)
        assert pre.dataset_options["answer_format"] == "tagged"
        if preset_config.smoke:  # the full corpus takes seconds to draw; the smoke one is the same code
            corpus = load_corpus(pre)
            assert corpus and all("####" not in ex.answer and "<<" not in ex.answer for ex in corpus)
        grid = grid_config(preset_config, Path("base"))
        assert grid.datasets[0]["train"]["dataset_options"].get("answer_format", "formula") == "formula"


def test_every_loss_runs_on_the_same_seeds_and_settings(tmp_path):
    config = DemoConfig(seed=4)
    assert config.seeds == [4, 5, 6] and FULL.n_seeds == 3
    cells = grid_config(config, tmp_path / "base").cells()
    assert len(cells) == len(ALL_LOSSES) * 3
    by_loss = {}
    for cell in cells:
        settings = {k: v for k, v in cell.train.items() if k != "loss"}
        by_loss.setdefault(cell.loss, []).append((cell.seed, json.dumps(settings, sort_keys=True), cell.eval))
    assert len({json.dumps(v, sort_keys=True) for v in by_loss.values()}) == 1  # identical but for the loss
    assert DemoConfig(n_seeds=5).seeds == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="n_seeds"):
        DemoConfig(n_seeds=0)


def test_losses_all_and_strings_resolve_with_ce_first():
    assert resolve_losses("all") == list(ALL_LOSSES)
    assert resolve_losses("lovasz, ce") == ["ce", "lovasz"]
    assert resolve_losses(["focal", "focal"]) == ["ce", "focal"]  # ce is always the baseline
    assert DemoConfig().losses == ["ce", "focal", "gdice", "sadl", "lovasz"]  # all five by default


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"losses": "ce,bogus"}, "bogus"),
        ({"losses": ["ce"]}, "task loss"),
        ({"losses": 3}, "losses"),
        ({"ce_weight": 1.0}, "ce_weight"),
        ({"finetune_steps": 0}, "finetune_steps"),
        ({"n_test": -5}, "n_test"),
        ({"output_dir": " "}, "output_dir"),
    ],
)
def test_bad_settings_name_the_field(values, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**values)


def test_bad_flag_is_a_clean_cli_error(capsys, tmp_path):
    assert main(["demo", "--smoke", "--losses", "ce,nope", "--output-dir", str(tmp_path)]) == 2
    assert "segloss demo: error: losses: unknown loss name(s) ['nope']" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written before the config is valid


def test_fine_tuning_data_is_left_out_of_pretraining(tmp_path):
    config = DemoConfig(cache_dir=str(tmp_path))
    pre = pretrain_config(config)
    grid = grid_config(config, tmp_path / "base")
    assert pre.skip_examples == FULL.n_finetune == grid.train["train_limit"]
    options = grid.datasets[0]["train"]["dataset_options"]
    assert pre.dataset_options == {**options, "answer_format": "tagged"}  # same arith draw, another answer format
    assert pre.data_seed == config.seed == grid.seeds[0]
    assert FULL.arith["n_train"] > FULL.n_finetune
    overridden = DemoConfig(pretrain_steps=7, finetune_steps=3, n_test=11)
    assert pretrain_config(overridden).max_steps == 7
    grid = grid_config(overridden, tmp_path / "base")
    assert grid.train["max_steps"] == 3 and grid.eval["limit"] == 11


def test_lambda_sweep_config_is_the_demo_grid_over_ce_weights(tmp_path):
    """configs/grid/lambda-sweep.yaml runs the demo's own cells: same data, training and evaluation settings, so
    its CE and λ = 0.6 cells are exactly (same config hash) the demo's, and the other cells differ only in λ."""
    from segloss.config import config_from_values, load_yaml
    from segloss.experiments.grid import GridConfig
    from segloss.losses import LossSpec

    path = Path(__file__).parents[2] / "configs" / "grid" / "lambda-sweep.yaml"
    values = load_yaml(path)
    values["models"] = [str(tmp_path / "base")]
    sweep = config_from_values(GridConfig, values, str(path))
    demo = grid_config(DemoConfig(n_seeds=5, output_dir=sweep.output_dir), tmp_path / "base")
    demo_cells = {(c.loss, c.seed): c.config_hash for c in demo.cells()}
    sweep_cells = {(c.loss, c.seed): c.config_hash for c in sweep.cells()}
    shared = set(demo_cells) & set(sweep_cells)
    assert {loss for loss, _ in shared} == set(ALL_LOSSES) and {s for _, s in shared} == {0, 1, 2}
    assert all(demo_cells[k] == sweep_cells[k] for k in shared)  # the very cells of the demo
    weights: dict[float, set[str]] = {}
    for cell in sweep.cells():
        ce = LossSpec.parse(cell.loss, ce_weight=sweep.train["ce_weight"]).weights.get("ce", 0.0)
        weights.setdefault(ce, set()).add(cell.loss)
    assert sorted(weights) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert all(len(v) == 4 for k, v in weights.items() if k < 1.0)  # each task loss at each λ < 1
