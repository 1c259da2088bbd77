"""The results/<study>/<cell>/ layout: reading study.sh's cells, exporting a store's cells, and both giving one
report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.results import GGUF, write_cell

from segloss.experiments.grid import GridConfig, run_grid
from segloss.experiments.report import write_report, write_results_report
from segloss.experiments.results import cell_names, export_store, load_results, store_results
from segloss.experiments.store import ResultStore


def test_reads_the_study_scripts_cells(tmp_path):
    root = tmp_path / "smollm2-arith"
    write_cell(root, "ce", 42, [1, 0, 1, 0])
    write_cell(root, "lovasz", 42, [1, 1, 1, 0], authors=True)
    (root / "ce-s43.tmp").mkdir()  # an interrupted copy: never read
    ce, lovasz = load_results(root)
    assert (ce.name, ce.arm, ce.seed, ce.model, ce.dataset) == ("ce-s42", "ce", 42, GGUF.rsplit("/", 1)[1], "arith")
    assert dict(ce.loss_spec.weights) == {"ce": 1.0}
    assert lovasz.arm == "lovasz-authors" and dict(lovasz.loss_spec.weights) == {"ce": 0.6, "lovasz": 0.4}
    assert lovasz.metrics["exact_match"] == 0.75 and lovasz.train["tokens"] == 1042
    assert lovasz.scores["arith-test-3"] == {"exact_match": 0.0, "missing_steps": 1.0}
    from segloss.experiments.analysis import side_means

    assert side_means({42: lovasz})["train_seconds"] == 642.0  # a train run's wall time, from its summary


def test_bad_results_folders_say_what_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished cell"):
        load_results(tmp_path / "empty")
    folder = write_cell(tmp_path / "study", "ce", 1, [1])
    (folder / "metrics.json").unlink()
    (folder / "predictions.jsonl").unlink()
    with pytest.raises(ValueError, match=r"ce-s1: no metrics.json and no predictions.jsonl"):
        load_results(tmp_path / "study")
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"metrics\.json: not valid JSON"):
        load_results(tmp_path / "study")


def _runner(cell) -> dict:
    """A fake cell: solves problem i iff i < 4 + (lovasz) + seed, writes predictions, a train summary and config."""
    n_right = 4 + (cell.loss == "lovasz") + cell.seed
    cell.eval_dir.mkdir(parents=True, exist_ok=True)
    preds = [{"id": f"p{i}", "metrics": {"exact_match": float(i < n_right)}} for i in range(10)]
    (cell.eval_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    (cell.run_dir / "train_summary.json").write_text(json.dumps({"tokens": 500}))
    (cell.run_dir / "config.yaml").write_text(f"loss: {cell.loss}\nseed: {cell.seed}\n")
    return {"exact_match": n_right / 10, "train_seconds": 1.5}


def test_a_stores_cells_export_to_the_same_layout_and_report(tmp_path):
    config = GridConfig(
        models=["m"], datasets=["arith"], losses=["ce", "lovasz"], seeds=[0, 1, 2], output_dir=str(tmp_path / "g")
    )
    run_grid(config, runner=_runner, log=None)
    written = export_store(config.store_path, tmp_path / "results" / "demo")
    assert [p.name for p in written] == ["ce-s0", "ce-s1", "ce-s2", "lovasz-s0", "lovasz-s1", "lovasz-s2"]
    folder = tmp_path / "results" / "demo" / "lovasz-s1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "cell.json",
        "config.yaml",
        "metrics.json",
        "predictions.jsonl",
        "train_summary.json",
    ]
    info = json.loads((folder / "cell.json").read_text())
    assert info["loss_spec"] == {"weights": {"ce": 0.6, "lovasz": 0.4}, "options": {}, "ce_weight": 0.6}
    assert json.loads((folder / "metrics.json").read_text())["metrics"]["exact_match"]["mean"] == 0.6
    # Exported again: nothing is replaced.
    before = (folder / "cell.json").stat().st_mtime_ns
    assert export_store(config.store_path, tmp_path / "results" / "demo") == []
    assert (folder / "cell.json").stat().st_mtime_ns == before
    # The folder and the store give the same cells and the same report numbers.
    with ResultStore.open_readonly(config.store_path) as store:
        from_store = store_results(store.rows("done"))
    from_folder = load_results(tmp_path / "results" / "demo")
    key = lambda r: (r.arm, r.seed, r.loss_spec, r.metrics["exact_match"], r.scores)  # noqa: E731
    assert sorted(map(key, from_folder), key=str) == sorted(map(key, from_store), key=str)
    write_report(config.store_path, tmp_path / "a")
    write_results_report(tmp_path / "results" / "demo", tmp_path / "b")
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a", "b"))
    assert a["losses"]["lovasz"]["em_diff_points"] == b["losses"]["lovasz"]["em_diff_points"] == pytest.approx(10.0)
    assert a["comparisons"] == b["comparisons"]


def test_cell_names_prefix_model_and_dataset_when_there_are_several(tmp_path):
    config = GridConfig(
        models=["org/m1", "m2"], datasets=["arith"], losses=["ce", {"ce": 0.8, "lovasz": 0.2}], seeds=[0],
        output_dir=str(tmp_path / "g"),
    )  # fmt: skip
    run_grid(config, runner=_runner, log=None)
    with ResultStore.open_readonly(config.store_path) as store:
        names = cell_names(store_results(store.rows("done")))
    assert names == [
        "org_m1__arith__ce-s0",
        "org_m1__arith__ce=0.8_lovasz=0.2-s0",
        "m2__arith__ce-s0",
        "m2__arith__ce=0.8_lovasz=0.2-s0",
    ]


def test_two_settings_of_one_loss_are_two_arms_in_the_folder_and_the_report(tmp_path):
    """The adaptations grid: lovasz with its defaults and with group: sequence are two arms, not one (10 seeds of
    each under one name once made an export keep a third of the cells)."""
    sequence = {"loss": "lovasz", "loss_options": {"lovasz": {"group": "sequence"}}}
    losses = ["ce", "lovasz", sequence]
    config = GridConfig(models=["m"], datasets=["arith"], losses=losses, seeds=[0, 1], output_dir=str(tmp_path / "g"))
    run_grid(config, runner=_runner, log=None)
    written = export_store(config.store_path, tmp_path / "results" / "adapt")
    assert len(written) == 6 and "lovasz_group=sequence-s1" in [p.name for p in written]
    arms = {r.arm for r in load_results(tmp_path / "results" / "adapt")}
    assert arms == {"ce", "lovasz", "lovasz[group=sequence]"}
    write_results_report(tmp_path / "results" / "adapt", tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {"lovasz", "lovasz[group=sequence]"} <= set(summary["losses"])


def test_a_grid_run_from_another_directory_exports_its_predictions(tmp_path, monkeypatch):
    """A grid given a relative output_dir, exported from another directory: the cells keep their predictions (the
    store records absolute folders), and a store that recorded relative ones is read from the folders above it."""
    (tmp_path / "there").mkdir()
    monkeypatch.chdir(tmp_path / "there")
    config = GridConfig(models=["m"], datasets=["arith"], losses=["ce", "lovasz"], seeds=[0], output_dir="g")
    run_grid(config, runner=_runner, log=None)
    store_path = tmp_path / "there" / "g" / "results.sqlite"
    with ResultStore.open_readonly(store_path) as store:
        rows = store.rows("done")
    assert all(Path(r["run_dir"]).is_absolute() and Path(r["eval_dir"]).is_absolute() for r in rows)
    monkeypatch.chdir(tmp_path)
    export_store(store_path, tmp_path / "results" / "a")
    assert (tmp_path / "results" / "a" / "lovasz-s0" / "predictions.jsonl").is_file()
    # An older store: folders relative to the directory the grid ran in.
    relative = [{**r, "run_dir": f"g/runs/{Path(r['run_dir']).name}", "eval_dir": None} for r in rows]
    relative = [{**r, "eval_dir": str(Path(r["run_dir"]) / "eval" / "test")} for r in relative]
    assert all(len(r.scores) == 10 and r.train == {"tokens": 500} for r in store_results(relative, store_path))
    assert all(r.scores == {} for r in store_results(relative))  # not found from here without the store's folder
