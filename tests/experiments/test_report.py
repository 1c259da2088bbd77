"""write_report: the table matches the store, relative gains and tests are hand-checked, plots are real PNGs."""

from __future__ import annotations

import csv
import json
import math

import pytest

from segloss.cli import main
from segloss.experiments.grid import GridConfig, run_grid
from segloss.experiments.report import write_report
from segloss.experiments.store import ResultStore
from segloss.metrics.stats import bootstrap_ci

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Per-seed EM of CE; the other losses add a fixed offset per seed (hand-chosen so the tests below are exact).
CE_EM = [0.20, 0.30, 0.40, 0.25, 0.35, 0.30]
OFFSETS = {"ce": [0.0] * 6, "lovasz": [0.10] * 6, "focal": [0.01, -0.01, 0.02, -0.02, 0.01, -0.01]}


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
    report = write_report(config.store_path, tmp_path / "report")
    text = report.read_text()
    with ResultStore(config.store_path) as store:
        rows = store.rows("done")
    with (tmp_path / "report" / "table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6  # 2 models × 3 losses × 1 dataset
    for line in table:
        mine = [
            r for r in rows if (r["model"], r["dataset"], r["loss"]) == (line["model"], line["dataset"], line["loss"])
        ]
        assert len(mine) == 3 and line["n_seeds"] == "3"
        for metric in ("exact_match", "iou", "missing_steps", "extra_steps", "wrong_operators"):
            values = [r["metrics"][metric] for r in mine]
            expected = sum(values) / len(values)
            assert float(line[f"{metric}_mean"]) == pytest.approx(expected, abs=1e-12)
            _, low, high = bootstrap_ci(values, seed=0)
            assert float(line[f"{metric}_ci_low"]) == pytest.approx(low)
            assert float(line[f"{metric}_ci_high"]) == pytest.approx(high)
        em = [r["metrics"]["exact_match"] for r in mine]
        _, low, high = bootstrap_ci(em, seed=0)
        cell = f"{100 * sum(em) / 3:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
        assert f"| {line['model']} | {line['loss']} | {cell} |" in text  # the markdown row starts with EM
    # m1: CE mean EM = 0.30, lovasz 0.40 (+33.3 %), focal 0.3067 (+2.2 %); m2: CE 0.35, lovasz 0.45 (+28.6 %).
    m1, m2 = text.split("### m1 / gsm8k")[1].split("### m2 / gsm8k")
    assert "| lovasz | 40.0 [" in m1 and "| 30.0, 40.0, 50.0 | +33.3 % [" in m1
    assert "| focal | 30.7 [" in m1 and "| +2.2 % [" in m1
    assert "| lovasz | 45.0 [" in m2 and "| +28.6 % [" in m2
    payload = json.loads((tmp_path / "report" / "table.json").read_text())
    head = payload["headline"]
    assert [b["loss"] for b in head["best"]] == ["lovasz", "lovasz"]
    assert head["mean_relative_gain"] == pytest.approx((0.1 / 0.3 + 0.1 / 0.35) / 2)
    assert "of the best loss over CE: **+31.0 %**" in text


def test_three_seeds_are_reported_as_not_significant_and_why(tmp_path):
    config = _grid(tmp_path, [0, 1, 2])
    text = write_report(config.store_path, tmp_path / "report").read_text()
    # lovasz beats CE on every seed, but 3 seeds (the only units: no predictions) cannot show it: raw p = 2/8.
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    lovasz = summary["studies"][0]["losses"]["lovasz"]
    assert lovasz["p_value_raw"] == 0.25 and lovasz["p_value"] == 0.5  # Holm over two losses: 2 × 0.25
    assert "- lovasz: no significant difference from CE (+33.3 % relative EM" in text
    assert "smallest attainable p-value is 0.250" in text
    comparisons = json.loads((tmp_path / "report" / "table.json").read_text())["comparisons"]
    assert {c["loss"] for c in comparisons} == {"lovasz", "focal"}
    assert all(c["significant"] is False and c["n_pairs"] == 3 for c in comparisons)


def test_six_seeds_separate_a_consistent_gain_from_noise(tmp_path):
    config = _grid(tmp_path, [0, 1, 2, 3, 4, 5], models=["m1"])
    text = write_report(config.store_path, tmp_path / "report").read_text()
    # All 6 differences positive: exact sign-flip p = 2 / 2**6 = 0.03125. Focal's differences cancel: p = 1.
    # Holm over the two losses: 2 × 0.03125 = 0.0625 for lovasz — the correction takes its significance away.
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())["losses"]
    assert summary["lovasz"]["p_value_raw"] == pytest.approx(0.03125) and summary["focal"]["p_value_raw"] == 1.0
    assert summary["lovasz"]["p_value"] == pytest.approx(0.0625) and summary["focal"]["p_value"] == 1.0
    assert "- lovasz: no significant difference from CE" in text and "Holm-adjusted p = 0.0625" in text
    assert "smallest attainable" not in text


def test_plots_are_valid_pngs(tmp_path):
    config = _grid(tmp_path, [0, 1])
    write_report(config.store_path, tmp_path / "report")
    for name in ("em_per_loss.png", "step_errors.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
        assert f"]({name})" in (tmp_path / "report" / "report.md").read_text()
    assert not list((tmp_path / "report").glob("*.tmp"))


def test_failed_cells_are_listed_and_qa_sets_get_no_step_error_plot(tmp_path):
    def runner(cell):
        if cell.loss == "focal":
            raise RuntimeError("CUDA out of memory")
        return {"accuracy": 0.5 + 0.1 * (cell.loss == "lovasz"), "acc": 0.3}

    config = GridConfig(
        models=["m"],
        datasets=["openbookqa"],
        losses=["ce", "lovasz", "focal"],
        seeds=[0],
        output_dir=str(tmp_path / "grid"),
    )
    run_grid(config, runner=runner, log=None)
    text = write_report(config.store_path, tmp_path / "report").read_text()
    assert "Cells: 2 done, 1 failed" in text
    assert "- m / openbookqa / focal / seed 0: RuntimeError: CUDA out of memory" in text
    assert "no step-error plot" in text and not (tmp_path / "report" / "step_errors.png").exists()
    # QA sets: accuracy is the compared metric, and there are no IoU/step-error columns.
    assert "| Model | Loss | openbookqa Acc | openbookqa Acc (LL) | Seeds |" in text
    assert "| m | ce | 50.0 [50.0, 50.0] | 30.0 [30.0, 30.0] | 1 |" in text
    assert "| lovasz | 60.0 [60.0, 60.0] | 60.0 | +20.0 % [+20.0, +20.0] | 1 |" in text


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

    config = GridConfig(
        models=["m"], datasets=["gsm8k"], losses=["ce", "lovasz"], seeds=[0], output_dir=str(tmp_path / "grid")
    )
    run_grid(config, runner=runner, log=None)
    text = write_report(config.store_path, tmp_path / "report").read_text()
    assert "## ROSCOE" in text
    assert "| m | gsm8k | ce | 0.500 |" in text  # mean of 0.2, 0.8, 0.2, 0.8
    assert "| roscoe_faithfulness_step | 1.000 |" in text  # a perfect linear relation with exact_match


def test_no_roscoe_section_without_scores(tmp_path):
    config = _grid(tmp_path, [0])
    assert "ROSCOE" not in write_report(config.store_path, tmp_path / "report").read_text()


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="result store not found"):
        write_report(tmp_path / "nope.sqlite", tmp_path / "out")
    with ResultStore(tmp_path / "empty.sqlite") as store:
        store.register([{"config_hash": "h", "cell_index": 0, "model": "m", "dataset": "d", "loss": "ce", "seed": 0}])
    with pytest.raises(ValueError, match="no done cells"):
        write_report(tmp_path / "empty.sqlite", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_command(tmp_path, capsys):
    config = _grid(tmp_path, [0, 1])
    assert main(["report", "--store", str(config.store_path)]) == 0
    assert (tmp_path / "grid" / "report" / "report.md").is_file()
    assert "report.md" in capsys.readouterr().out
    assert main(["report", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "result store not found" in capsys.readouterr().err
    assert math.isfinite(
        json.loads((tmp_path / "grid" / "report" / "table.json").read_text())["table"][0]["metrics"]["exact_match"][
            "mean"
        ]
    )


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
    # 2 seeds × 10 problems. CE solves problems 0-3 on both seeds (EM 0.4); lovasz solves 0-5 (0.6, +50 %) on both;
    # focal solves 0-3 on seed 0 and 0-4 on seed 1 (0.45, +12.5 %).
    correct = {
        "ce": [set(range(4)), set(range(4))],
        "lovasz": [set(range(6)), set(range(6))],
        "focal": [set(range(4)), set(range(5))],
    }
    config = GridConfig(
        models=["m"],
        datasets=["arith"],
        losses=["ce", "lovasz", "focal"],
        seeds=[0, 1],
        output_dir=str(tmp_path / "grid"),
    )
    run_grid(config, runner=_prediction_runner(correct), log=None)
    write_report(config.store_path, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["correction"] == "holm" and summary["n_problems"] == 10
    losses = summary["losses"]
    for loss in ("ce", "lovasz", "focal"):
        assert set(losses[loss]) >= {"n_seeds", "em_mean", "em_ci", "rel_change_vs_ce", "rel_change_ci", "p_value"}
        assert losses[loss]["n_seeds"] == 2 and losses[loss]["train_tokens"] == 1000.5
    assert losses["ce"]["em_mean"] == pytest.approx(0.4) and losses["ce"]["p_value"] is None
    assert losses["lovasz"]["em_mean"] == pytest.approx(0.6) and losses["lovasz"]["rel_change_vs_ce"] == pytest.approx(
        0.5
    )
    assert losses["focal"]["rel_change_vs_ce"] == pytest.approx(0.125)
    low, high = losses["lovasz"]["em_ci"]
    assert low < 0.6 < high
    # Lovász's 4 differing pairs are all +1 and the other 16 pairs are 0: the sign-flip test sees only those four,
    # exact p = 2 / 2**4 = 0.125 (20 pairs, 2**20 flips: sampled, so within sampling error).
    assert losses["lovasz"]["p_value_raw"] == pytest.approx(0.125, abs=0.015)
    # Focal: one +1 pair → p = 1. Holm: lovasz 2 × p, focal max(that, 1 × 1) = 1.
    assert losses["focal"]["p_value_raw"] == 1.0
    assert losses["lovasz"]["p_value"] == pytest.approx(2 * losses["lovasz"]["p_value_raw"])
    assert losses["focal"]["p_value"] == 1.0
    assert losses["lovasz"]["em_per_seed"] == {"0": pytest.approx(0.6), "1": pytest.approx(0.6)}
    data = (tmp_path / "report" / "em_per_seed.png").read_bytes()
    assert data[:8] == PNG_MAGIC


def test_lambda_sweep_table_and_figure(tmp_path):
    from segloss.experiments.report import sweep_points

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
    assert "](lambda_sweep.png)" in text


def test_cells_filter_reports_only_those_cells(tmp_path):
    config = _grid(tmp_path, [0, 1, 2, 3], models=["m1"])
    keep = [c.config_hash for c in config.cells() if c.loss in ("ce", "lovasz") and c.seed < 3]
    write_report(config.store_path, tmp_path / "report", cells=keep)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert list(summary["losses"]) == ["ce", "lovasz"] and summary["losses"]["ce"]["seeds"] == [0, 1, 2]
    # Holm over one comparison only: the adjusted p is the raw one (three seeds, all positive: 2/8).
    assert summary["losses"]["lovasz"]["p_value"] == summary["losses"]["lovasz"]["p_value_raw"] == 0.25


def test_a_significant_pooled_test_whose_ci_includes_no_change_is_not_called_established():
    from segloss.experiments.report import verdict

    ce = {"em_mean": 0.10, "n_seeds": 3}
    entry = {
        "em_mean": 0.07,
        "p_value": 0.0165,
        "significant": True,
        "difference": -0.03,
        "rel_change_vs_ce": -0.311,
        "rel_change_ci": (-0.64, 0.06),
        "n_seeds": 3,
    }
    assert verdict("sadl", entry, ce, "exact_match").endswith("not established.")
    entry["rel_change_ci"] = (-0.64, -0.05)  # the CI now excludes no change
    assert verdict("sadl", entry, ce, "exact_match").startswith("sadl: worse than CE (")
