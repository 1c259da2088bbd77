"""Math metrics on hand-made solutions; every expected value is worked out in the comment next to it."""

from __future__ import annotations

import math

import pytest

from segloss.metrics.formulas import (
    MATH_METRICS,
    exact_match,
    exact_match_authors,
    exact_match_flexible,
    exact_match_strict,
    formula_is_correct,
    parse_final_answer,
    parse_formula,
    parse_formulas,
    score_math,
    set_metrics,
    well_formed,
)

REF = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18 a day.\n#### 18"


def test_parse_formulas_normalises_and_keeps_order():
    assert parse_formulas(REF) == ["16-3-4=9", "9*2=18"]
    assert parse_formulas("a << 3 + 4 = 7 >> b <<>> c <<2 × 3=6>>") == ["3+4=7", "2*3=6"]
    assert parse_formulas("") == []
    assert parse_formulas("<<3+4=7") == []  # unclosed: not a formula


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("#### 18", "18"),
        ("so #### $1,200.50 in total", "1200.50"),
        ("#### -3", "-3"),
        ("#### - 5", "-5"),  # a spaced sign stays the sign (was read as 5: a false match for 5)
        ("#### $ - 5", "-5"),
        ("#### 10 - 5", "10"),  # the first number is the answer; a later minus is no sign of it
        ("#### 7.", "7"),
        ("#### 12\nQuestion: next one\n#### 99", "12"),  # the first #### counts
        ("#### C", "c"),  # non-numeric answers are kept as lower-cased text
        ("#### ", None),
        ("no marker 42", None),
        ("", None),
    ],
)
def test_parse_final_answer(text, answer):
    assert parse_final_answer(text) == answer


def test_exact_match_numeric_and_text():
    assert exact_match("<<9*2=18>> #### 18.0", REF) == 1.0
    assert exact_match("#### $18", "18") == 1.0  # a bare reference answer
    assert exact_match("#### 1,000", "#### 1000") == 1.0
    assert exact_match("#### 17", REF) == 0.0
    assert exact_match("#### eighteen", REF) == 0.0  # non-numeric vs numeric
    assert exact_match("#### c", "#### C") == 1.0  # MathQA letter answers compare as text
    assert exact_match("", REF) == 0.0
    assert exact_match("#### 5\n#### 18", REF) == 0.0  # the second #### is ignored
    assert exact_match("#### - 5", "#### 5") == 0.0  # -5, not 5 (lm-eval strict also scores it 0)
    assert exact_match("#### - 5", "#### -5") == 1.0


def test_equivalence_up_to_commutativity():
    assert parse_formula("9*2=18").canonical == parse_formula("2 * 9 = 18").canonical
    assert parse_formula("3+4+5=12").canonical == parse_formula("5+(4+3)=12").canonical
    assert parse_formula("8/2=4").canonical != parse_formula("2/8=4").canonical
    assert parse_formula("add(n0,n1)").canonical == parse_formula("add(n1,n0)").canonical
    assert parse_formula("divide(n0,n1)").canonical != parse_formula("divide(n1,n0)").canonical
    assert parse_formula("multiply(#0,const_100)").canonical == parse_formula("multiply(const_100,#0)").canonical
    assert parse_formula("3+4=7").canonical != parse_formula("3+4=8").canonical  # a different result


def test_formula_structure_of_mathqa_calls():
    info = parse_formula("multiply(divide(n0,n1),const_100)")
    assert info.operators == ("divide", "multiply")
    assert info.operands == ("const_100", "n0", "n1")
    # MathQA's decimal constants are not Python names but still parse.
    assert parse_formula("multiply(const_3.0,n1)").operands == ("const_3_0", "n1")
    assert parse_formula("add(const_0.5,n0)").canonical == parse_formula("add(n0,const_0.5)").canonical


def test_formula_is_correct_and_division_by_zero():
    assert formula_is_correct(parse_formula("16-3-4=9")) is True
    assert formula_is_correct(parse_formula("16-3-4=10")) is False
    assert formula_is_correct(parse_formula("5/0=1")) is False  # no ZeroDivisionError escapes
    assert formula_is_correct(parse_formula("2**99999=1")) is None  # too big to check, not a hang
    assert formula_is_correct(parse_formula("divide(n0,n1)")) is None
    assert formula_is_correct(parse_formula("3+=7")) is None  # malformed


def test_set_metrics_hand_computed():
    # P = {a, b, c}, R = {b, c, d, e}: |P∩R| = 2, |P∪R| = 5.
    m = set_metrics({"a", "b", "c"}, {"b", "c", "d", "e"})
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["overlap"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert set_metrics(set(), {"a"}) == {"iou": 0.0, "dice": 0.0, "overlap": 0.0, "precision": 0.0, "recall": 0.0}
    assert all(math.isnan(v) for v in set_metrics({"a"}, set()).values())


def test_score_math_copy_of_reference_is_perfect():
    scores = score_math(REF, REF)
    assert set(scores) == set(MATH_METRICS)
    assert scores["exact_match"] == scores["iou"] == scores["equivalent_iou"] == scores["well_formed"] == 1.0
    assert scores["missing_steps"] == scores["extra_steps"] == scores["repetitions"] == 0.0
    assert scores["calculation_errors"] == 0.0


def test_score_math_step_errors_hand_computed():
    # Pred: 2*9=18 (≡ 9*2=18), 16-4-3=9 (same ops/operands as 16-3-4 in another order), 2*9=18 again.
    scores = score_math("<<2*9=18>> <<16-4-3=9>> <<2 * 9=18>> #### $18.00", REF)
    assert scores["exact_match"] == 1.0
    assert scores["iou"] == 0.0  # no literal match after whitespace removal
    assert scores["equivalent_iou"] == pytest.approx(1 / 3)  # {A, B'} vs {A, B}: 1 / 3
    assert scores["missing_steps"] == 1.0 and scores["extra_steps"] == 1.0  # 2 / 2 each
    assert scores["repetitions"] == pytest.approx(1 / 3)  # one duplicate among three
    assert scores["inverted_operands"] == pytest.approx(1 / 2)
    assert scores["wrong_operators"] == 0.0


def test_score_math_wrong_operator_and_calculation_errors():
    # 9+2 uses the operands of 9*2 with another operator; 5/0 is a division by zero; 3-4-16=9 is wrong arithmetic.
    scores = score_math("<<9+2=11>> <<3-4-16=9>> <<5/0=1>> #### 11", REF)
    assert scores["exact_match"] == 0.0
    assert scores["wrong_operators"] == pytest.approx(1 / 2)
    assert scores["inverted_operands"] == pytest.approx(1 / 2)
    assert scores["extra_steps"] == pytest.approx(3 / 2)
    assert scores["calculation_errors"] == pytest.approx(2 / 3)


def test_score_math_empty_and_malformed_generation():
    empty = score_math("", REF)
    assert empty["exact_match"] == empty["well_formed"] == empty["iou"] == 0.0
    assert empty["missing_steps"] == 1.0 and empty["repetitions"] == 0.0
    assert math.isnan(empty["calculation_errors"])
    broken = score_math("<<9*2=18 <<16-3-4=9>> ####", REF)
    assert broken["well_formed"] == 0.0 and broken["exact_match"] == 0.0
    assert all(isinstance(v, float) for v in score_math(None, REF).values())  # type: ignore[arg-type]


def test_score_math_reference_without_formulas_gives_nan_sets():
    scores = score_math("<<1+1=2>> #### 2", "#### 2")
    assert scores["exact_match"] == 1.0
    assert math.isnan(scores["iou"]) and math.isnan(scores["missing_steps"])


def test_score_math_mathqa_style():
    ref = "<<divide(n0,n1)>> <<multiply(const_100,#0)>> #### c"
    scores = score_math("<<divide(n1,n0)>> <<multiply(#0, const_100)>> #### C", ref)
    assert scores["exact_match"] == 1.0 and scores["well_formed"] == 1.0
    assert scores["iou"] == 0.0
    assert scores["equivalent_iou"] == pytest.approx(1 / 3)
    assert scores["inverted_operands"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<<3+4=7>> #### 7", True),
        ("#### 7", False),  # formulas expected
        ("<<3+4=7>>", False),  # no final answer
        ("<<3+4=7>> #### seven", False),  # non-numeric answer
        ("<<3+=7>> #### 7", False),  # unparsable formula
        ("<<3+4=7 #### 7", False),  # unclosed
        ("#### 7 <<3+4=7>>", False),  # formula after the answer
    ],
)
def test_well_formed(text, ok):
    assert well_formed(text) is ok


def test_well_formed_without_formulas_required():
    assert well_formed("#### 7", require_formulas=False)
    assert well_formed("<<x>> #### c", numeric_answer=False)


# ------------------------------------------------------------------------------------------- exact-match variants
@pytest.mark.parametrize(
    ("generated", "reference", "strict", "flexible", "authors"),
    [
        ("<<9*2=18>> #### 18", REF, 1.0, 1.0, 1.0),
        ("#### 18.0", "#### 18", 0.0, 0.0, 1.0),  # lm-eval compares strings; the authors use isclose
        ("#### 18.", "#### 18", 1.0, 1.0, 1.0),  # lm-eval drops one final "."
        ("#### 1,000", "#### 1000", 1.0, 1.0, 0.0),  # the authors' float("1,000") fails
        ("#### -3", "#### -3", 1.0, 1.0, 0.0),  # the authors' pattern has no sign
        ("#### - 5", "#### 5", 0.0, 1.0, 0.0),  # strict needs digits after "#### " or "#### -"; flexible reads 5
        ("The answer is 18", REF, 0.0, 1.0, 0.0),  # only flexible reads a number without ####
        ("#### 18 and then 19 more", "#### 18", 1.0, 0.0, 1.0),  # flexible takes the last number
        ("#### 18\nQuestion: 7 apples", "#### 18", 1.0, 1.0, 1.0),  # lm-eval stops at "Question:"
        ("costs $18.", "18", 0.0, 1.0, 0.0),  # "$" and the final "." are ignored; bare reference
        ("#### 18", "18", 1.0, 1.0, 1.0),
        ("", REF, 0.0, 0.0, 0.0),
    ],
)
def test_exact_match_variants(generated, reference, strict, flexible, authors):
    assert exact_match_strict(generated, reference) == strict
    assert exact_match_flexible(generated, reference) == flexible
    assert exact_match_authors(generated, reference) == authors


def test_score_math_reports_the_variants_beside_exact_match():
    scores = score_math("<<9*2=18>> #### 18.0", REF)
    assert (scores["exact_match"], scores["exact_match_strict"], scores["exact_match_authors"]) == (1.0, 0.0, 1.0)
    assert set(scores) == set(MATH_METRICS)
