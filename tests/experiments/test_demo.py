from __future__ import annotations

import json

import pytest

from segloss.cli import main
from segloss.experiments.demo import (
    ALL_LOSSES,
    FULL,
    DemoConfig,
    format_table,
    grid_config,
    pretrain_config,
    resolve_losses,
    table_rows,
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One `segloss demo --smoke` from the command line, then a second run that must reuse the cached base."""
    root = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--smoke", "--output-dir", str(root / "out"), "--cache-dir", str(root / "cache")]
    first_code = main(argv)
    first = json.loads((root / "out" / "demo.json").read_text())
    second_code = main(argv)  # starts over (no --resume): fine-tunes and evaluates again, base from the cache
    second = json.loads((root / "out" / "demo.json").read_text())
    return root, (first_code, first), (second_code, second)


@pytest.mark.slow
def test_smoke_demo_prints_the_table_and_writes_the_report(smoke, capsys):
    root, (code, result), _ = smoke
    assert code == 0
    out = root / "out"
    for name in (
        "table.md",
        "demo.json",
        "results.sqlite",
        "report/report.md",
        "report/em_per_loss.png",
        "report/step_errors.png",
        "report/table.csv",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "report/em_per_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "| Loss | EM % | IoU % | Missing | Extra | EM 95 % CI | EM vs CE | Train s |"
    assert lines[2].startswith("| CE (baseline) |") and lines[3].startswith("| 0.6 CE + 0.4 lovasz |")
    assert len(lines) == 4
    assert [r["loss"] for r in result["rows"]] == ["ce", "lovasz"]
    for row in result["rows"]:
        assert 0.0 <= row["exact_match"] <= 1.0 and 0.0 <= row["iou"] <= 1.0
        assert row["missing_steps"] >= 0.0 and row["extra_steps"] >= 0.0
        assert row["train_seconds"] > 0.0
        low, high = row["exact_match_ci"]  # read from the cell's metrics.json
        assert 0.0 <= low <= row["exact_match"] <= high <= 1.0
    assert result["rows"][0]["relative_em_change"] is None  # CE is the baseline
    assert result["n_test"] == 16
    assert result["base_model"].startswith(str(root / "cache"))
    report = (out / "report/report.md").read_text()
    assert "| ce |" in report and "| lovasz |" in report  # the grid report's table has both losses


@pytest.mark.slow
def test_smoke_demo_is_deterministic_and_reuses_the_base(smoke):
    _, (_, first), (code, second) = smoke
    assert code == 0
    assert not first["base_cached"] and second["base_cached"]
    assert second["base_model"] == first["base_model"]
    metrics = ("exact_match", "iou", "missing_steps", "extra_steps")
    assert [[r[m] for m in metrics] for r in first["rows"]] == [[r[m] for m in metrics] for r in second["rows"]]
    assert second["table"].splitlines()[:2] == first["table"].splitlines()[:2]


def test_losses_all_and_strings_resolve_with_ce_first():
    assert resolve_losses("all") == list(ALL_LOSSES)
    assert resolve_losses("lovasz, ce") == ["ce", "lovasz"]
    assert resolve_losses(["focal", "focal"]) == ["ce", "focal"]  # ce is always the baseline
    assert DemoConfig(losses="all").losses == ["ce", "focal", "gdice", "sadl", "lovasz"]


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
    assert pre.dataset_options == grid.datasets[0]["train"]["dataset_options"]  # same arith draw
    assert pre.data_seed == config.seed == grid.seeds[0]
    assert FULL.arith["n_train"] > FULL.n_finetune
    overridden = DemoConfig(pretrain_steps=7, finetune_steps=3, n_test=11)
    assert pretrain_config(overridden).max_steps == 7
    grid = grid_config(overridden, tmp_path / "base")
    assert grid.train["max_steps"] == 3 and grid.eval["limit"] == 11


def test_table_rows_and_format_hand_computed(tmp_path):
    cells = [
        {
            "loss": "ce",
            "status": "done",
            "metrics": {
                "exact_match": 0.40,
                "iou": 0.5,
                "missing_steps": 0.25,
                "extra_steps": 0.125,
                "train_seconds": 61.4,
            },
        },
        {
            "loss": "lovasz",
            "status": "done",
            "metrics": {
                "exact_match": 0.50,
                "iou": 0.625,
                "missing_steps": 0.2,
                "extra_steps": 0.0,
                "train_seconds": 70.6,
            },
        },
        {"loss": "focal", "status": "failed", "metrics": None},
    ]
    rows = table_rows(cells, ["ce", "lovasz", "focal"])
    assert [r["loss"] for r in rows] == ["ce", "lovasz"]  # a failed cell has no row
    assert rows[0]["relative_em_change"] is None
    assert rows[1]["relative_em_change"] == pytest.approx(0.25)  # (0.50 - 0.40) / 0.40
    assert format_table(rows, ce_weight=0.6).splitlines()[2:] == [
        "| CE (baseline) | 40.0 | 50.0 | 0.25 | 0.12 | – | — | 61 |",
        "| 0.6 CE + 0.4 lovasz | 50.0 | 62.5 | 0.20 | 0.00 | – | +25.0 % | 71 |",
    ]
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text(
        json.dumps({"metrics": {"exact_match": {"mean": 0.4, "ci_low": 0.3125, "ci_high": 0.5, "n": 16}}})
    )
    with_ci = table_rows([{**cells[0], "eval_dir": str(eval_dir)}], ["ce"])
    assert with_ci[0]["exact_match_ci"] == (0.3125, 0.5)
    assert "| 40.0 | 50.0 | 0.25 | 0.12 | [31.2, 50.0] | — | 61 |" in format_table(with_ci, ce_weight=0.6)
    zero = table_rows(
        [{**cells[0], "metrics": {**cells[0]["metrics"], "exact_match": 0.0}}, cells[1]], ["ce", "lovasz"]
    )
    assert zero[1]["relative_em_change"] is None  # no relative change against a zero baseline
    assert "n/a" in format_table(zero, ce_weight=0.6)
