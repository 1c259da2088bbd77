"""The run folder's model card: built from config.yaml, train_summary.json and eval/*/metrics.json, parsed back."""

from __future__ import annotations

import json
import math

import yaml
from huggingface_hub import ModelCard

from segloss.card import write_model_card


def _run(tmp_path, **config):
    run = tmp_path / "my-run"
    run.mkdir()
    values = {"model": "HuggingFaceTB/SmolLM2-135M", "dataset": "gsm8k", "loss": "ce=0.5,focal=0.25,lovasz=0.25"}
    (run / "config.yaml").write_text(yaml.safe_dump({**values, **config}))
    summary = {"steps": 10, "train_examples": 100, "tokens": 5000, "train_loss": 1.5, "segloss_version": "9.9"}
    (run / "train_summary.json").write_text(json.dumps(summary))
    return run


def _metrics(run, split, metrics):
    folder = run / "eval" / split
    folder.mkdir(parents=True)
    summary = {k: {"mean": v, "ci_low": v, "ci_high": v, "n": 4} for k, v in metrics.items()}
    result = {"dataset": "gsm8k", "split": split, "n_examples": 4, "output_dir": str(folder), "metrics": summary}
    (folder / "metrics.json").write_text(json.dumps(result))


def test_card_names_segloss_the_objective_base_model_and_data(tmp_path) -> None:
    run = _run(tmp_path, full_finetune=True, loss_options={"focal": {"gamma": 1.0}})
    card = ModelCard.load(write_model_card(run))
    data = card.data
    assert data.library_name == "transformers" and data.base_model == "HuggingFaceTB/SmolLM2-135M"
    assert data.datasets == ["openai/gsm8k"] and data.pipeline_tag == "text-generation"
    assert data.tags == ["segloss", "generated_from_trainer", "focal", "lovasz"]
    assert (
        "L = 0.5·CE(all target tokens) + 0.25·focal(answer tokens) + 0.25·Lovász-softmax(answer tokens)" in card.text
    )
    assert '| focal | focal | 0.25 | {"gamma": 1.0} |' in card.text
    assert (
        "a fine-tuned version of [HuggingFaceTB/SmolLM2-135M](https://huggingface.co/HuggingFaceTB/SmolLM2-135M)"
        in card.text
    )
    assert "| training examples | 100 |" in card.text and "- segloss: 9.9" in card.text
    assert data.eval_results is None


def test_metrics_of_every_split_go_to_the_model_index_and_a_rewrite_is_idempotent(tmp_path) -> None:
    run = _run(tmp_path)
    (run / "README.md").write_text("---\nlibrary_name: peft\ntags:\n- lora\n- transformers\n---\n\nPEFT's card\n")
    _metrics(run, "test", {"exact_match": 0.25, "calculation_errors": math.nan})
    _metrics(run, "validation", {"exact_match": 0.5})
    first = write_model_card(run).read_text()
    card = ModelCard.load(run / "README.md")
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("test", "exact_match"): 0.25, ("validation", "exact_match"): 0.5}  # NaN means are left out
    assert card.data.library_name == "peft" and card.data.tags[-1] == "transformers"  # PEFT's tags are kept
    assert "PEFT's card" not in card.text and "| exact_match | 0.2500 | [0.2500, 0.2500] | 4 |" in card.text
    assert write_model_card(run).read_text() == first
