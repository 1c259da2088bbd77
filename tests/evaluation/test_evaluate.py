"""evaluate(): files, metric ranges, a perfect fake generator, QA log-likelihood, errors, atomic writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from segloss.data import load_examples
from segloss.evaluation import EvalConfig, evaluate
from segloss.evaluation.evaluate import loglikelihood_context

ARITH = {"n_train": 4, "n_validation": 2, "n_test": 6, "max_steps": 2}


def copy_reference(examples):
    answers = {ex.prompt.rstrip(" "): ex.answer for ex in examples}  # generation prompts end at "Answer:"

    def generate(prompts, max_new_tokens):
        return [answers[p] for p in prompts]

    return generate


def read_outputs(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "metrics.json").read_text())


def test_fake_generator_copying_the_reference_is_perfect(tmp_path):
    examples = load_examples("arith", "test", **ARITH)
    config = EvalConfig(
        model="unused", dataset="arith", dataset_options=ARITH, output_dir=str(tmp_path), limit=5, batch_size=2
    )
    result = evaluate(config, generate_fn=copy_reference(examples))
    m = result["metrics"]
    assert m["exact_match"]["mean"] == m["iou"]["mean"] == m["equivalent_iou"]["mean"] == 1.0
    assert m["well_formed"]["mean"] == 1.0 and m["missing_steps"]["mean"] == 0.0
    assert m["exact_match"]["n"] == 5 and result["n_examples"] == 5
    rows, saved = read_outputs(tmp_path)
    assert [r["id"] for r in rows] == [ex.id for ex in examples[:5]]
    assert set(rows[0]) == {"id", "prompt", "reference", "generated", "new_tokens", "parsed_answer", "metrics"}
    assert rows[0]["parsed_answer"] == rows[0]["reference"].split("####")[1].strip()
    assert saved["metrics"]["exact_match"] == m["exact_match"]
    assert not list(tmp_path.glob("*.tmp"))


def test_wrong_generator_scores_zero_and_bootstrap_ci_brackets_the_mean(tmp_path):
    examples = load_examples("arith", "test", **ARITH)
    answers = {ex.prompt.rstrip(" "): ex.answer for ex in examples}  # generation prompts end at "Answer:"

    # Every other example copies the reference, the rest answer nonsense.
    def half(prompts, _):
        return [answers[p] if i % 2 == 0 else "#### -1" for i, p in enumerate(prompts)]

    config = EvalConfig(model="unused", dataset="arith", dataset_options=ARITH, output_dir=str(tmp_path), batch_size=6)
    m = evaluate(config, generate_fn=half)["metrics"]
    assert m["exact_match"]["mean"] == pytest.approx(0.5)
    assert 0.0 <= m["exact_match"]["ci_low"] < 0.5 < m["exact_match"]["ci_high"] <= 1.0
    assert m["iou"]["mean"] == pytest.approx(0.5)


def test_error_keeps_earlier_files(tmp_path):
    examples = load_examples("arith", "test", **ARITH)
    config = EvalConfig(model="unused", dataset="arith", dataset_options=ARITH, output_dir=str(tmp_path), limit=2)
    evaluate(config, generate_fn=copy_reference(examples))
    before = (tmp_path / "metrics.json").read_text(), (tmp_path / "predictions.jsonl").read_text()

    def broken(prompts, _):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        evaluate(config, generate_fn=broken)
    assert ((tmp_path / "metrics.json").read_text(), (tmp_path / "predictions.jsonl").read_text()) == before


def test_few_shot_larger_than_training_split(tmp_path):
    config = EvalConfig(model="unused", dataset="arith", dataset_options=ARITH, few_shot=5, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"few_shot: 5 .* only 4"):
        evaluate(config, generate_fn=lambda p, n: list(p))
    assert not (tmp_path / "metrics.json").exists()


def test_few_shot_prompts_hold_training_answers(tmp_path):
    config = EvalConfig(
        model="unused", dataset="arith", dataset_options=ARITH, few_shot=2, limit=1, output_dir=str(tmp_path)
    )
    evaluate(config, generate_fn=lambda p, n: ["" for _ in p])
    rows, _ = read_outputs(tmp_path)
    train = {ex.answer for ex in load_examples("arith", "train", **ARITH)}
    assert rows[0]["prompt"].count("####") == 2
    assert sum(a in rows[0]["prompt"] for a in train) == 2


def test_run_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        evaluate(EvalConfig(run=str(tmp_path / "missing")))
    with pytest.raises(FileNotFoundError, match=r"no config\.yaml"):
        evaluate(EvalConfig(run=str(tmp_path)))
    (tmp_path / "config.yaml").write_text("dataset: arith\nmodel: x\n")
    with pytest.raises(FileNotFoundError, match="no adapter"):
        evaluate(EvalConfig(run=str(tmp_path)))


def test_run_mode_reads_the_run_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: x\ndataset: arith\ndataset_options: {n_test: 3, n_train: 3}\nseed: 42\n")
    (run / "adapter_config.json").write_text("{}")
    examples = load_examples("arith", "test", n_test=3, n_train=3)
    result = evaluate(EvalConfig(run=str(run)), generate_fn=copy_reference(examples))
    assert result["n_examples"] == 3 and result["metrics"]["exact_match"]["mean"] == 1.0
    assert (run / "eval" / "test" / "metrics.json").is_file()


OBQA = [
    {
        "id": f"q{i}",
        "question": {
            "stem": f"The sun is responsible for thing {i}",
            "choices": [
                {"text": t, "label": lab} for t, lab in zip(["pups", "kids", "flowers", "plants"], "ABCD", strict=True)
            ],
        },
        "fact1": "the sun is the source of energy",
        "answerKey": "ABCD"[i % 4],
    }
    for i in range(4)
]


@pytest.fixture
def obqa_dir(tmp_path):
    data = tmp_path / "obqa"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}_complete.jsonl").write_text("".join(json.dumps(r) + "\n" for r in OBQA))
    return data


def test_loglikelihood_context_drops_choice_lines():
    prompt = "Question: The sun is\nA. pups\nB. kids\nContext: the sun\nAnswer: "
    assert loglikelihood_context(prompt) == "Question: The sun is\nContext: the sun\nAnswer:"


def test_qa_accuracy_and_loglikelihood_with_tiny_model(tmp_path, obqa_dir, tiny_model_dir):
    letters = ["A", "B", "x", "D"]  # right, right, unparsable, right -> accuracy 3/4 where the key is ABCD

    def generate(prompts, _):
        return letters[: len(prompts)]

    config = EvalConfig(
        model=str(tiny_model_dir),
        dataset="openbookqa",
        data_path=str(obqa_dir),
        output_dir=str(tmp_path / "out"),
        batch_size=4,
    )
    m = evaluate(config, generate_fn=generate)["metrics"]
    assert m["accuracy"]["mean"] == pytest.approx(0.75)
    rows, _ = read_outputs(tmp_path / "out")
    assert [r["parsed_answer"] for r in rows] == ["A", "B", None, "D"]
    for name in ("acc", "acc_norm"):
        assert m[name]["n"] == 4 and m[name]["mean"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # Every example has the same four choices, and the tiny model sees nearly the same context each time.
    assert all(r["metrics"]["acc"] in (0.0, 1.0) for r in rows)


def test_end_to_end_baseline_with_tiny_model(tmp_path, tiny_model_dir):
    config = EvalConfig(
        model=str(tiny_model_dir),
        dataset="arith",
        dataset_options=ARITH,
        limit=3,
        batch_size=2,
        max_new_tokens=6,
        few_shot=1,
        output_dir=str(tmp_path),
    )
    result = evaluate(config)
    rows, saved = read_outputs(tmp_path)
    assert len(rows) == 3 and saved["n_examples"] == 3 and saved["max_new_tokens"] == 6
    for row in rows:
        assert isinstance(row["generated"], str) and row["prompt"].endswith("Answer:")
    for name, s in result["metrics"].items():
        if s["n"]:
            assert s["ci_low"] <= s["mean"] <= s["ci_high"], name
            if name not in ("extra_steps",):
                assert 0.0 <= s["mean"] <= 1.0, name
    # A random tiny model does not solve arithmetic.
    assert result["metrics"]["exact_match"]["mean"] == 0.0
    assert not math.isnan(result["metrics"]["missing_steps"]["mean"])


@pytest.mark.slow
def test_train_a_few_steps_then_evaluate_the_run(tmp_path, tiny_model_dir):
    from segloss.training import TrainConfig, train

    run = tmp_path / "run"
    train(
        TrainConfig(
            model=str(tiny_model_dir),
            dataset="arith",
            dataset_options=ARITH,
            output_dir=str(run),
            max_steps=2,
            per_device_train_batch_size=2,
            max_length=128,
            loss="lovasz",
            save_steps=2,
            logging_steps=1,
            disable_tqdm=True,
        )
    )
    result = evaluate(EvalConfig(run=str(run), limit=2, batch_size=2, max_new_tokens=5))
    out = run / "eval" / "test"
    rows, saved = read_outputs(out)
    assert len(rows) == 2 and saved["mode"] == "run" and saved["dataset"] == "arith"
    test_ids = [ex.id for ex in load_examples("arith", "test", **ARITH)[:2]]
    assert [r["id"] for r in rows] == test_ids  # the run's dataset options were used
    m = result["metrics"]
    assert 0.0 <= m["exact_match"]["mean"] <= 1.0 and 0.0 <= m["well_formed"]["mean"] <= 1.0
    assert m["iou"]["n"] == 2 and 0.0 <= m["iou"]["mean"] <= 1.0


def test_roscoe_hook_adds_scores(tmp_path, monkeypatch):
    import segloss.metrics.roscoe as roscoe

    seen = {}

    def fake_load(model):
        seen["model"] = model
        return "embedder"

    def fake_score(generated, sources, references, *, embedder):
        seen["args"] = (list(generated), list(sources), list(references), embedder)
        return [{"roscoe_faithfulness_step": 0.5 + 0.1 * i} for i in range(len(generated))]

    monkeypatch.setattr(roscoe, "load_embedder", fake_load)
    monkeypatch.setattr(roscoe, "score_batch", fake_score)
    examples = load_examples("arith", "test", **ARITH)[:2]
    config = EvalConfig(
        model="unused",
        dataset="arith",
        dataset_options=ARITH,
        limit=2,
        roscoe=True,
        roscoe_model="st-dir",
        output_dir=str(tmp_path),
    )
    m = evaluate(config, generate_fn=copy_reference(examples))["metrics"]
    assert seen["model"] == "st-dir"
    sources = [ex.prompt.removesuffix("\nAnswer: ") for ex in examples]  # the problem, without the answer cue
    assert seen["args"][1] == sources and seen["args"][2] == [ex.answer for ex in examples]
    assert not any(source.endswith("Answer:") for source in seen["args"][1])
    assert m["roscoe_faithfulness_step"]["mean"] == pytest.approx(0.55)
    rows, _ = read_outputs(tmp_path)
    assert rows[1]["metrics"]["roscoe_faithfulness_step"] == pytest.approx(0.6)
