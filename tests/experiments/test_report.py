"""The report (segloss.experiments.report): tables match the cells, the study's numbers are hand-checked, figures are
real PNGs, the command reads stores and results folders, and generated doc tables reproduce from the results."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers.results import write_cell

from segloss.cli import main
from segloss.experiments.grid import GridConfig, run_grid
from segloss.experiments.report import fill_doc_blocks, sweep_points, update_doc, write_report
from segloss.experiments.store import ResultStore
from segloss.metrics.stats import bootstrap_ci

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975 = {1: 12.706204736174705, 2: 4.302652729749464}  # Student t quantiles 0.975 (tables), by degrees of freedom
# Per-seed EM of CE; the other losses add a fixed offset per seed (hand-chosen so the tests below are exact).
CE_EM = [0.20, 0.30, 0.40, 0.25, 0.35, 0.30]
OFFSETS = {
    "ce": [0.0] * 6,
    "lovasz": [0.10, 0.12, 0.08, 0.1, 0.1, 0.1],
    "focal": [0.01, -0.01, 0.02, -0.02, 0.01, -0.01],
}


def fake_runner(cell) -> dict:
    em = CE_EM[cell.seed] + OFFSETS[cell.loss][cell.seed] + (0.05 if cell.model == "m2" else 0.0)
    return {
        "exact_match": em,
        "iou": em / 2 + 0.1,
        "missing_steps": 1 - em,
        "extra_steps": 0.1 * cell.seed,
        "wrong_operators": 0.05,
        "train_seconds": 1.0,
    }


def _grid(tmp_path, seeds, **overrides) -> GridConfig:
    values = {
        "models": ["m1", "m2"],
        "datasets": ["gsm8k"],
        "losses": ["ce", "lovasz", "focal"],
        "seeds": seeds,
        "output_dir": str(tmp_path / "grid"),
        **overrides,
    }
    config = GridConfig(**values)
    run_grid(config, runner=fake_runner, log=None)
    return config


def test_report_table_matches_the_store(tmp_path):
    config = _grid(tmp_path, [0, 1, 2])
    text = write_report(config.store_path, tmp_path / "report").read_text()
    with ResultStore(config.store_path) as store:
        rows = store.rows("done")
    with (tmp_path / "report" / "table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6  # 2 models × 3 losses × 1 dataset
    for line in table:
        key = (line["model"], line["dataset"], line["loss"])
        mine = [r for r in rows if (r["model"], r["dataset"], r["loss"]) == key]
        assert len(mine) == 3 and line["n_seeds"] == "3"
        for metric in ("exact_match", "iou", "missing_steps", "extra_steps", "wrong_operators"):
            values = [r["metrics"][metric] for r in mine]
            assert float(line[f"{metric}_mean"]) == pytest.approx(sum(values) / 3, abs=1e-12)
            _, low, high = bootstrap_ci(values, seed=0)
            assert (float(line[f"{metric}_ci_low"]), float(line[f"{metric}_ci_high"])) == pytest.approx((low, high))
        em = [r["metrics"]["exact_match"] for r in mine]
        _, low, high = bootstrap_ci(em, seed=0)
        assert (
            f"| {line['model']} | {line['loss']} | {100 * sum(em) / 3:.1f} [{100 * low:.1f}, {100 * high:.1f}] |"
            in text
        )


def test_per_seed_study_hand_checked(tmp_path):
    config = _grid(tmp_path, [0, 1, 2], models=["m1"])
    text = write_report(config.store_path, tmp_path / "report").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    lovasz, focal = summary["losses"]["lovasz"], summary["losses"]["focal"]
    # No predictions: each seed is one unit. Lovász − CE per seed: 10, 12, 8 points: mean 10, SD 2,
    # t-interval 10 ± 4.3027 · 2 / √3; t = 10 / (2 / √3) = 8.660 at 2 df: p = 0.01307 (tables).
    half = T_975[2] * 2 / math.sqrt(3)
    assert lovasz["n_seeds"] == 3 and lovasz["em_diff_points"] == pytest.approx(10.0)
    assert lovasz["em_diff_ci"] == pytest.approx([10 - half, 10 + half])
    assert lovasz["p_value_raw"] == pytest.approx(0.01307, abs=1e-4)
    # Focal − CE: +1, −1, +2 points. Holm over the two losses: Lovász's p doubles, focal's stays its own (larger).
    assert focal["em_diff_points"] == pytest.approx(2 / 3)
    assert lovasz["p_value"] == pytest.approx(2 * lovasz["p_value_raw"])
    assert focal["p_value"] == pytest.approx(max(focal["p_value_raw"], lovasz["p_value"]))
    # The seed-level MDE of 3 seeds at α/2 with the observed SD (2 points for Lovász).
    from segloss.experiments.analysis import mde_points

    assert lovasz["mde_points"] == pytest.approx(mde_points(3, 2.0, alpha=0.025))
    assert lovasz["outcome"] == "shown better" and lovasz["equivalence"]["verdict"] == "different"
    # Focal: d = +1, −1, +2 points (SD 1.53): TOST against ±5 at 3 seeds gives p = 0.0195 < 0.05, the test of a
    # difference does not reject: shown equivalent.
    assert focal["equivalence"]["p_value"] == pytest.approx(0.0195, abs=5e-4)
    assert focal["outcome"] == "shown equivalent within ±5" and focal["equivalence"]["margin_points"] == 5.0
    assert "- lovasz: shown better (lovasz vs ce; +10.0 points of EM [95 % CI" in text
    assert summary["losses"]["ce"]["p_value"] is None and summary["losses"]["ce"]["verdict"].startswith(
        "ce: the baseline"
    )
    assert set(lovasz) >= {"n_seeds", "em_diff_points", "em_diff_ci", "p_value", "equivalence", "mde_points"}


def _prediction_runner(correct: dict[str, list[set[int]]]):
    """A runner writing predictions.jsonl: loss L on seed s gets problem i right iff i in correct[L][s]."""

    def runner(cell) -> dict:
        cell.eval_dir.mkdir(parents=True, exist_ok=True)
        right = correct[cell.loss][cell.seed]
        preds = [{"id": f"p{i}", "metrics": {"exact_match": float(i in right), "iou": 0.5}} for i in range(10)]
        (cell.eval_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        (cell.run_dir / "train_summary.json").write_text(json.dumps({"tokens": 1000 + cell.seed}))
        return {"exact_match": len(right) / 10, "iou": 0.5, "train_seconds": 2.0}

    return runner


def test_study_over_seeds_and_problems_hand_checked(tmp_path):
    # 2 seeds × 10 problems. CE solves 0-3 on seed 0 and 0-4 on seed 1 (EM 0.45); lovasz solves 0-5 and 0-7
    # (0.70); focal 0-3 and 0-6 (0.55).
    correct = {
        "ce": [set(range(4)), set(range(5))],
        "lovasz": [set(range(6)), set(range(8))],
        "focal": [set(range(4)), set(range(7))],
    }
    config = GridConfig(
        models=["m"],
        datasets=["arith"],
        losses=["ce", "lovasz", "focal"],
        seeds=[0, 1],
        output_dir=str(tmp_path / "g"),
    )
    run_grid(config, runner=_prediction_runner(correct), log=None)
    write_report(config.store_path, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["n_problems"] == 10 and summary["correction"] == "holm"
    losses = summary["losses"]
    assert losses["ce"]["em_mean"] == pytest.approx(0.45) and losses["ce"]["train_tokens"] == 1000.5
    assert losses["lovasz"]["em_per_seed"] == {"0": pytest.approx(0.6), "1": pytest.approx(0.8)}
    # Lovász − CE per seed: +20, +30 points: mean 25, SD 7.07; t-interval 25 ± 12.706 · 5 (SE = 7.07 / √2 = 5).
    assert losses["lovasz"]["em_diff_points"] == pytest.approx(25.0)
    assert losses["lovasz"]["em_diff_ci"] == pytest.approx([25 - 5 * T_975[1], 25 + 5 * T_975[1]])
    assert losses["lovasz"]["p_value_raw"] == pytest.approx(2 * (0.5 - math.atan(5) / math.pi))  # t = 5, 1 df
    assert losses["lovasz"]["rel_change_vs_ce"] == pytest.approx(0.70 / 0.45 - 1)
    # The arm's level: mean 0.70; its CI from two-way clustered SEs lies around it within [0, 1].
    low, high = losses["lovasz"]["em_ci"]
    assert 0.0 <= low < 0.70 < high <= 1.0
    [lovasz_vs_ce, _] = summary["comparisons"]
    assert lovasz_vs_ce["model"]["diff_points"] == pytest.approx(25.0)  # the fixed-effects model: same difference
    assert lovasz_vs_ce["n_problems"] == 10 and lovasz_vs_ce["rel_change"] == pytest.approx(0.70 / 0.45 - 1)
    assert (tmp_path / "report" / "em_per_seed.png").read_bytes()[:8] == PNG_MAGIC


def test_plots_are_valid_pngs(tmp_path):
    config = _grid(tmp_path, [0, 1, 2])
    text = write_report(config.store_path, tmp_path / "report").read_text()
    for name in ("differences.png", "em_per_loss.png", "em_per_seed.png", "step_errors.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
        assert f"]({name})" in text
    assert not list((tmp_path / "report").glob("*.tmp"))


def test_failed_cells_are_listed_and_qa_sets_get_no_step_error_plot(tmp_path):
    def runner(cell):
        if cell.loss == "focal":
            raise RuntimeError("CUDA out of memory")
        return {"accuracy": 0.5 + 0.1 * (cell.loss == "lovasz"), "acc": 0.3}

    config = GridConfig(
        models=["m"], datasets=["openbookqa"], losses=["ce", "lovasz", "focal"], seeds=[0], output_dir=str(tmp_path)
    )
    run_grid(config, runner=runner, log=None)
    text = write_report(config.store_path, tmp_path / "report").read_text()
    assert "Cells: 2 done, 1 failed" in text
    assert "- m / openbookqa / focal / seed 0: RuntimeError: CUDA out of memory" in text
    assert "no step-error plot" in text and not (tmp_path / "report" / "step_errors.png").exists()
    # QA sets: accuracy is the compared metric; one seed: no test, and the report says so.
    assert "| Model | Loss | openbookqa Acc | openbookqa Acc (LL) | Seeds |" in text
    assert "| m | ce | 50.0 [50.0, 50.0] | 30.0 [30.0, 30.0] | 1 |" in text
    assert "| lovasz | 60.0 [60.0, 60.0] | 60.0 | +10.0 pts – | – | 1 | inconclusive (–) |" in text
    assert "no test with fewer than 2 paired seeds" in text


def test_roscoe_scores_in_predictions_get_their_section(tmp_path):
    pytest.importorskip("segloss.metrics.roscoe")

    def runner(cell):
        cell.eval_dir.mkdir(parents=True)
        preds = [
            {
                "id": str(i),
                "metrics": {"exact_match": float(i % 2), "iou": 0.5, "roscoe_faithfulness_step": 0.2 + 0.6 * (i % 2)},
            }
            for i in range(4)
        ]
        (cell.eval_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        return {"exact_match": 0.5, "iou": 0.5}

    config = GridConfig(models=["m"], datasets=["gsm8k"], losses=["ce", "lovasz"], seeds=[0], output_dir=str(tmp_path))
    run_grid(config, runner=runner, log=None)
    text = write_report(config.store_path, tmp_path / "report").read_text()
    assert "## ROSCOE" in text
    assert "| m | gsm8k | ce | 0.500 |" in text  # mean of 0.2, 0.8, 0.2, 0.8
    assert "| roscoe_faithfulness_step | 1.000 |" in text  # a perfect linear relation with exact_match
    config = _grid(tmp_path / "other", [0])
    assert "ROSCOE" not in write_report(config.store_path, tmp_path / "other" / "report").read_text()


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="result store not found"):
        write_report(tmp_path / "nope.sqlite", tmp_path / "out")
    with ResultStore(tmp_path / "empty.sqlite") as store:
        store.register([{"config_hash": "h", "cell_index": 0, "model": "m", "dataset": "d", "loss": "ce", "seed": 0}])
    with pytest.raises(ValueError, match="no done cells"):
        write_report(tmp_path / "empty.sqlite", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_command_reads_a_store_or_a_results_folder(tmp_path, capsys):
    config = _grid(tmp_path, [0, 1])
    assert main(["report", "--store", str(config.store_path)]) == 0
    assert (tmp_path / "grid" / "report" / "report.md").is_file()
    assert "report.md" in capsys.readouterr().out
    exported = tmp_path / "results" / "grid"
    assert (
        main(
            [
                "report",
                "--store",
                str(config.store_path),
                "--export-results",
                str(exported),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert "exported 12 new cell(s)" in capsys.readouterr().out and (exported / "m1__gsm8k__lovasz-s1").is_dir()
    plan = tmp_path / "plan.yaml"
    plan.write_text("margin_points: 2.0\ncomparisons: [{treatment: lovasz, family: primary}]\n")
    assert main(["report", "--results", str(exported), "--plan", str(plan), "--out", str(tmp_path / "r2")]) == 0
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["margin_points"] == 2.0 and [c["family"] for c in summary["studies"][0]["comparisons"]] == [
        "primary"
    ]
    assert main(["report", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "result store not found" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "missing")]) == 2
    assert "results folder not found" in capsys.readouterr().err
    assert main(["report", "--export-results", str(exported)]) == 2
    assert "add --store" in capsys.readouterr().err
    assert math.isfinite(json.loads((tmp_path / "r" / "table.json").read_text())["table"][0]["metrics"]["iou"]["mean"])


def test_lambda_sweep_table_and_figure(tmp_path):
    # EM rises as the CE weight falls, for lovasz only (hand-chosen: 0.4 at λ = 1 up to 0.7 at λ = 0).
    em = {"ce": 4, "ce=0.8,lovasz=0.2": 5, "lovasz": 6, "lovasz=1": 7, "ce=0.8,focal=0.2": 4, "focal=1": 4}
    correct = {label: [set(range(n))] * 3 for label, n in em.items()}
    config = GridConfig(
        models=["m"],
        datasets=["arith"],
        losses=["ce", {"ce": 0.8, "lovasz": 0.2}, "lovasz", {"lovasz": 1.0}, {"ce": 0.8, "focal": 0.2}, {"focal": 1}],
        seeds=[0, 1, 2],
        train={"ce_weight": 0.6},
        output_dir=str(tmp_path / "grid"),
    )
    run_grid(config, runner=_prediction_runner(correct), log=None)  # `lovasz` runs at the grid's ce_weight 0.6
    with ResultStore(config.store_path) as store:
        points = sweep_points(store.rows("done"))
    assert points[("m", "arith")] == {
        "lovasz": {0.0: "lovasz=1", 0.6: "lovasz", 0.8: "ce=0.8,lovasz=0.2", 1.0: "ce"},
        "focal": {0.0: "focal=1", 0.8: "ce=0.8,focal=0.2", 1.0: "ce"},
    }
    text = write_report(config.store_path, tmp_path / "report").read_text()
    assert "| Task loss | λ = 1 | λ = 0.8 | λ = 0.6 | λ = 0 |" in text
    assert "| lovasz | 40.0 | 50.0 | 60.0 | 70.0 |" in text
    assert "| focal | 40.0 | 40.0 | – | 40.0 |" in text
    assert (tmp_path / "report" / "lambda_sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_cells_filter_reports_only_those_cells(tmp_path):
    config = _grid(tmp_path, [0, 1, 2, 3], models=["m1"])
    keep = [c.config_hash for c in config.cells() if c.loss in ("ce", "lovasz") and c.seed < 3]
    write_report(config.store_path, tmp_path / "report", cells=keep)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert list(summary["losses"]) == ["ce", "lovasz"] and summary["losses"]["ce"]["seeds"] == [0, 1, 2]
    lovasz = summary["losses"]["lovasz"]
    assert lovasz["p_value"] == lovasz["p_value_raw"]  # one comparison: Holm changes nothing


def test_doc_blocks_reproduce_the_results_they_name(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(4):
        for loss in ("ce", "lovasz"):
            write_cell(tmp_path / "results" / "toy", loss, seed, list(rng.integers(0, 2, size=20)))
    page = tmp_path / "page.md"
    header = "<!-- segloss-report results=results/toy table=comparisons -->\n"
    page.write_text(f"# Results\n\n{header}| stale | table |\n<!-- /segloss-report -->\n\nText after.\n")
    assert fill_doc_blocks(page.read_text(), tmp_path) != page.read_text()  # the stale table is caught
    assert update_doc(page, tmp_path) is True
    text = page.read_text()
    assert "| lovasz vs ce | vs-ce | EM | 4 × 20 |" in text and text.endswith("Text after.\n")
    assert fill_doc_blocks(text, tmp_path) == text and update_doc(page, tmp_path) is False
    (tmp_path / "bad.md").write_text("<!-- segloss-report table=losses -->\nx\n<!-- /segloss-report -->\n")
    with pytest.raises(ValueError, match="give results=DIR"):
        update_doc(tmp_path / "bad.md", tmp_path)


def test_the_results_page_prints_what_the_committed_results_give():
    """Every generated table of docs/results.md equals what `segloss report` computes from results/ today."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "results.md").read_text()
    assert fill_doc_blocks(text, root) == text
