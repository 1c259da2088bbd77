"""The synthetic arithmetic generator: format, arithmetic, determinism, disjoint splits, knobs."""

from __future__ import annotations

import itertools
import re

import pytest

from segloss.data import load_examples

FORMULA = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>")


def _check_answer(answer: str, max_value: int) -> list[tuple[int, str, int, int]]:
    """Every formula is exact integer arithmetic, chained, and the final number is the last result."""
    body, final = answer.split(" #### ")
    steps = [(int(a), op, int(b), int(c)) for a, op, b, c in FORMULA.findall(body)]
    assert " ".join(f"<<{a}{op}{b}={c}>>" for a, op, b, c in steps) == body
    for a, op, b, c in steps:
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        assert c == expected and 0 <= c <= max_value
        if op == "/":
            assert a % b == 0
    for prev, nxt in itertools.pairwise(steps):
        assert nxt[0] == prev[3]
    assert int(final) == steps[-1][3]
    return steps


def test_answers_are_gsm8k_formulas_with_exact_integer_arithmetic():
    examples = load_examples("arith", "train", n_train=300, max_steps=4, max_value=100)
    assert len(examples) == 300
    n_steps = set()
    ops = set()
    for ex in examples:
        assert ex.prompt.startswith("Question: ") and ex.prompt.endswith("?\nAnswer: ")
        steps = _check_answer(ex.answer, 100)
        n_steps.add(len(steps))
        ops.update(op for _, op, _, _ in steps)
        assert ex.choices == () and ex.label is None
    assert n_steps == {1, 2, 3, 4}
    assert ops == set("+-*/")


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = load_examples("arith", "test", n_test=20)
    b = load_examples("arith", "test", n_test=20)
    c = load_examples("arith", "test", n_test=20, seed=7)
    assert a == b
    assert [e.prompt for e in a] != [e.prompt for e in c]


def test_splits_are_disjoint_and_test_does_not_depend_on_n_train():
    opts = {"n_train": 200, "n_validation": 50, "n_test": 50, "max_steps": 1, "max_value": 20, "distractors": 0}
    splits = {s: {e.prompt for e in load_examples("arith", s, **opts)} for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [200, 50, 50]  # distinct within each split
    assert not splits["train"] & splits["test"]
    assert not splits["train"] & splits["validation"]
    assert not splits["validation"] & splits["test"]
    bigger = {e.prompt for e in load_examples("arith", "test", **{**opts, "n_train": 400})}
    assert bigger == splits["test"]


def test_knobs_restrict_steps_ops_and_values():
    examples = load_examples(
        "arith", "validation", n_validation=100, min_steps=2, max_steps=2, ops="+-", max_value=30, distractors=0
    )
    for ex in examples:
        steps = _check_answer(ex.answer, 30)
        assert len(steps) == 2 and {op for _, op, _, _ in steps} <= {"+", "-"}
    # distractors=0 → the only numbers in the question are the start value and the operands
    ex = examples[0]
    numbers = re.findall(r"\d+", ex.prompt)
    steps = _check_answer(ex.answer, 30)
    assert numbers == [str(steps[0][0])] + [str(b) for _, _, b, _ in steps]


def test_distractors_add_numbers_that_the_answer_does_not_use():
    examples = load_examples("arith", "train", n_train=50, max_steps=1, distractors=3)
    extra = []
    for ex in examples:
        assert len(_check_answer(ex.answer, 100)) == 1
        extra.append(len(re.findall(r"\d+", ex.prompt)) - 2)  # start value + one operand are used
    assert min(extra) == 0 and max(extra) == 3  # between 0 and `distractors` irrelevant numbers


@pytest.mark.parametrize(
    "options, field",
    [
        ({"max_steps": 5}, "max_steps"),
        ({"ops": "+^"}, "ops"),
        ({"max_value": 3}, "max_value"),
        ({"n_train": -1}, "n_train"),
        ({"steps": 2}, "unknown option"),
        ({"answer_format": "latex"}, "answer_format: 'latex' is not one of formula, tagged, equations, words, number"),
    ],
)
def test_bad_options_are_rejected_with_the_field_named(options, field):
    with pytest.raises(ValueError, match=field):
        load_examples("arith", "train", **options)


WORDS = re.compile(r"(\d+) (plus|minus|times|divided by) (\d+) is (\d+)\.")
OP_OF = {"plus": "+", "minus": "-", "times": "*", "divided by": "/"}


def test_answer_formats_write_the_same_problems_and_steps():
    opts = {"n_train": 60, "max_steps": 4}
    formula = load_examples("arith", "train", **opts)
    words = load_examples("arith", "train", answer_format="words", **opts)
    number = load_examples("arith", "train", answer_format="number", **opts)
    equations = load_examples("arith", "train", answer_format="equations", **opts)
    tagged = load_examples("arith", "train", answer_format="tagged", **opts)
    assert [e.prompt for e in words] == [e.prompt for e in formula] == [e.prompt for e in number]
    assert [e.prompt for e in equations] == [e.prompt for e in formula] == [e.prompt for e in tagged]
    assert [e.id for e in words] == [e.id for e in formula]
    for f, w, n, eq, tg in zip(formula, words, number, equations, tagged, strict=True):
        steps = _check_answer(f.answer, 100)
        body, final = w.answer.rsplit(" The answer is ", 1)
        assert [(int(a), OP_OF[op], int(b), int(c)) for a, op, b, c in WORDS.findall(body)] == steps
        assert " ".join(m.group(0) for m in WORDS.finditer(body)) == body  # nothing else in the steps
        assert final == f"{steps[-1][3]}." and n.answer == str(steps[-1][3])
        assert eq.answer == " ".join(f"{a}{op}{b}={c}." for a, op, b, c in steps) + f" The answer is {steps[-1][3]}."
        assert tg.answer == " ".join(f"<{a}{op}{b}={c}>" for a, op, b, c in steps) + f" # {steps[-1][3]}"
        for text in (w.answer, n.answer, eq.answer, tg.answer):  # none is the target format: no <<…>>, no ####
            assert "<<" not in text and ">>" not in text and "####" not in text


def test_other_formats_score_zero_on_the_formula_metrics():
    from segloss.metrics.formulas import score_math

    reference = load_examples("arith", "test", n_test=5)
    for answer_format in ("tagged", "equations", "words", "number"):
        other = load_examples("arith", "test", n_test=5, answer_format=answer_format)
        for ref, ex in zip(reference, other, strict=True):
            scores = score_math(ex.answer, ref.answer)
            assert scores["exact_match"] == 0.0 and scores["well_formed"] == 0.0
        assert score_math(reference[0].answer, reference[0].answer)["exact_match"] == 1.0


def test_path_and_empty_split_are_errors():
    with pytest.raises(ValueError, match="no --data-path"):
        load_examples("arith", "train", "/tmp/whatever")
    with pytest.raises(ValueError, match="empty"):
        load_examples("arith", "test", n_test=0)


def test_problems_are_drawn_once_per_process_and_callers_get_their_own_records(monkeypatch):
    """A grid worker loads the same split for every cell: the second load draws nothing and equals the first, and a
    caller that edits its records does not change what the next caller gets."""
    from segloss.data import arith

    drawn = []
    original = arith.generate_problem
    monkeypatch.setattr(arith, "generate_problem", lambda *a, **k: drawn.append(1) or original(*a, **k))
    options = {"n_train": 37, "n_validation": 5, "n_test": 11, "max_value": 60}  # a key no other test uses
    builder = arith.ArithBuilder(**options)
    first = builder.split_records("train", None, seed=3)
    n_draws = len(drawn)
    first[0]["question"] = "edited"
    second = builder.split_records("train", None, seed=3)
    assert n_draws >= 37 + 5 + 11 and len(drawn) == n_draws
    assert second[0]["question"] != "edited" and len(second) == 37
    assert load_examples("arith", "train", seed=3, **options) == load_examples("arith", "train", seed=3, **options)
