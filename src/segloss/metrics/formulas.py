"""Math metrics for one generated solution against its reference (GSM8K, MathQA, arith).

A solution is a sequence of formulas ``<<…>>`` followed by a final answer line ``#### x``. GSM8K formulas are
``expression=result`` (``<<48/2=24>>``); MathQA formulas are operator calls (``<<divide(n0,n1)>>``), whose operator
is the function name and whose operands are the arguments. Formulas are normalised (whitespace removed, lower-cased,
``×``/``÷`` → ``*``/``/``) before any set comparison. Definitions: ``docs/metrics.md``.

Everything here is a pure function over strings and never raises on malformed generations: an unparsable formula
is still compared as text, an empty output simply scores 0 where a score is defined.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

FORMULA_RE = re.compile(r"<<(.*?)>>", re.DOTALL)
ANSWER_MARK = "####"
NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
COMMUTATIVE_CALLS = frozenset({"add", "multiply"})
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
_COMMUTATIVE_OPS = frozenset({"+", "*"})


def normalize_formula(formula: str) -> str:
    """Remove all whitespace, lower-case, and spell multiplication/division the Python way."""
    text = re.sub(r"\s+", "", formula).lower()
    return text.replace("×", "*").replace("÷", "/")


def parse_formulas(text: str) -> list[str]:
    """The normalised ``<<…>>`` formulas of ``text``, in order (duplicates kept; empty ``<<>>`` skipped)."""
    return [f for f in (normalize_formula(m) for m in FORMULA_RE.findall(text or "")) if f]


def _clean_answer(raw: str) -> str | None:
    text = raw.strip().replace("$", "")
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # thousands separators: 1,000 → 1000
    # A sign spaced from its number is still its sign: "- 5" is -5 (MathQA writes options so), never 5.
    text = re.sub(r"^([-+])\s+(?=\.?\d)", r"\1", text.strip())
    match = NUMBER_RE.search(text)
    if match:
        number = match.group(0).lstrip("+")
        return number[:-1] if number.endswith(".") else number
    text = text.strip(" .").lower()
    return text or None


def parse_final_answer(text: str) -> str | None:
    """The final answer after the **first** ``####`` of ``text``, up to the end of that line; None when absent/empty.

    The first marker counts because a model that has answered often runs on into a new question with its own
    ``####`` (greedy decoding until ``max_new_tokens``). ``$`` and thousands commas are stripped and the first number
    on the line is returned (``"#### $1,200.50 total"`` → ``"1200.50"``); a line with no number is returned
    stripped and lower-cased (``"#### C"`` → ``"c"``), so letter answers compare as text.
    """
    if not text or ANSWER_MARK not in text:
        return None
    line = text.split(ANSWER_MARK, 1)[1].lstrip(" #").split("\n", 1)[0]
    return _clean_answer(line)


def reference_answer(reference: str) -> str | None:
    """The answer of a reference solution: after ``####`` if it has one, else the whole (cleaned) string."""
    return parse_final_answer(reference) if ANSWER_MARK in (reference or "") else _clean_answer(reference or "")


def _to_float(answer: str | None) -> float | None:
    if answer is None:
        return None
    try:
        value = float(answer)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def answers_match(predicted: str | None, reference: str | None, *, rel_tol: float = 1e-6) -> bool:
    """Numeric ``isclose`` when both parse as numbers, exact text equality otherwise; None never matches."""
    if predicted is None or reference is None:
        return False
    p, r = _to_float(predicted), _to_float(reference)
    if p is not None and r is not None:
        return math.isclose(p, r, rel_tol=rel_tol, abs_tol=1e-9)
    return predicted == reference


def exact_match(generated: str, reference: str) -> float:
    """1.0 when the final answer of ``generated`` equals the reference answer (see :func:`answers_match`)."""
    return float(answers_match(parse_final_answer(generated), reference_answer(reference)))


# ----------------------------------------------------------------------------------------------------------------
# Exact-match variants of other scorers, for comparison with published numbers (docs/fidelity.md). ``exact_match``
# above stays the reported metric; these reproduce other extraction rules on the same generations.

#: lm-evaluation-harness ``gsm8k.yaml`` (v3.0): the strict filter, the flexible filter, the ``until`` stop string and
#: the ``regexes_to_ignore`` applied to prediction and reference before a case-insensitive string comparison.
LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
LM_EVAL_UNTIL = ("Question:", "</s>", "<|im_end|>")
LM_EVAL_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
#: The authors' ``MetricsCalculator`` answer pattern (utils/metric_calculator.py): no sign, so negatives never match.
AUTHORS_ANSWER = re.compile(r"#### (\d+[\.,]*\d*)")


def _lm_eval_normalise(text: str) -> str:
    for pattern in LM_EVAL_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def _lm_eval_extract(pattern: re.Pattern[str], text: str, group_select: int) -> str:
    """lm-eval's ``RegexFilter``: ``findall``, pick one match, first non-empty group, strip; else ``[invalid]``."""
    matches = pattern.findall(text)
    if not matches:
        return "[invalid]"
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), "[invalid]")
    return match.strip()


def _until(text: str) -> str:
    for stop in LM_EVAL_UNTIL:
        text = text.split(stop, 1)[0]
    return text


def exact_match_strict(generated: str, reference: str) -> float:
    """lm-evaluation-harness gsm8k ``strict-match``: the first ``#### (-?[0-9.,]+)`` of the generation (cut at the
    ``until`` stop strings) equals the reference's text after its last ``#### ``, once commas, ``$`` and a final
    ``.`` are removed, ignoring case. A string comparison: ``38.0`` does not match ``38``."""
    predicted = _lm_eval_extract(LM_EVAL_STRICT, _until(generated or ""), 0)
    return float(_lm_eval_normalise(predicted) == _lm_eval_normalise(reference or ""))


def exact_match_flexible(generated: str, reference: str) -> float:
    """lm-evaluation-harness gsm8k ``flexible-extract``: the **last** number-like span of the generation (cut at the
    ``until`` stop strings), compared as in :func:`exact_match_strict`."""
    predicted = _lm_eval_extract(LM_EVAL_FLEXIBLE, _until(generated or ""), -1)
    return float(_lm_eval_normalise(predicted) == _lm_eval_normalise(reference or ""))


def exact_match_authors(generated: str, reference: str) -> float:
    """The authors' ``accuracy``: the first ``#### (\\d+[.,]*\\d*)`` of both texts, equal under ``math.isclose``.

    Negative answers never match (the pattern has no sign). A comma number (``#### 1,080``) makes their
    ``float()`` raise; here it scores 0 instead of stopping the evaluation.
    """
    reference = reference or ""
    reference = reference if ANSWER_MARK in reference else f"{ANSWER_MARK} {reference.strip()}"  # a bare answer
    p, r = AUTHORS_ANSWER.search(generated or ""), AUTHORS_ANSWER.search(reference)
    if p is None or r is None:
        return 0.0
    try:
        return float(math.isclose(float(p.group(1)), float(r.group(1))))
    except ValueError:
        return 0.0


# ----------------------------------------------------------------------------------------------------------------
# Formula structure: canonical form (for equivalence), operands and operators (for step errors), evaluation.


@dataclass(frozen=True)
class FormulaInfo:
    """A parsed formula.

    ``text`` is the normalised formula; ``canonical`` is equal for two formulas iff they are equivalent up to the
    order of + / × (add / multiply) operands, ``expression`` is the same for the left of ``=`` only; ``operands`` and
    ``operators`` are sorted multisets; ``result`` is the text right of ``=`` ("" when there is none).
    """

    text: str
    canonical: str
    expression: str
    operands: tuple[str, ...]
    operators: tuple[str, ...]
    result: str
    tree: ast.expr | None


def _python_source(expr: str) -> str:
    # MathQA step references `#0` and constants like `const_3.0` are not Python names; `^` is power in GSM8K.
    expr = re.sub(r"(const_\d+)\.(\d+)", r"\1_\2", re.sub(r"#(\d+)", r"ref\1", expr))
    return expr.replace("^", "**")


def _canonical(node: ast.expr) -> str:
    """A string equal for expressions that differ only by the order of + / × (or add/multiply) operands."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        op = _OPS[type(node.op)]
        if op in _COMMUTATIVE_OPS:
            terms = sorted(_canonical(t) for t in _flatten(node, type(node.op)))
            return "(" + op.join(terms) + ")"
        return f"({_canonical(node.left)}{op}{_canonical(node.right)})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return f"(-{_canonical(node.operand)})"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_canonical(a) for a in node.args]
        if node.func.id in COMMUTATIVE_CALLS:
            args.sort()
        return f"{node.func.id}({','.join(args)})"
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return repr(float(node.value))
    return ast.unparse(node)


def _flatten(node: ast.expr, op_type: type) -> list[ast.expr]:
    # a + b + c parses as (a + b) + c: the chain is flattened so any order of its terms is equivalent.
    if isinstance(node, ast.BinOp) and isinstance(node.op, op_type):
        return _flatten(node.left, op_type) + _flatten(node.right, op_type)
    return [node]


def _leaves_and_ops(node: ast.AST) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Sorted multisets of the operands (constants, names) and operators (symbols, call names) of an expression."""
    callees = {id(sub.func) for sub in ast.walk(node) if isinstance(sub, ast.Call)}
    operands: list[str] = []
    operators: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.BinOp) and type(sub.op) in _OPS:
            operators.append(_OPS[type(sub.op)])
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
            operators.append(sub.func.id)
        elif isinstance(sub, ast.Constant):
            operands.append(repr(float(sub.value)) if isinstance(sub.value, (int, float)) else str(sub.value))
        elif isinstance(sub, ast.Name) and id(sub) not in callees:
            operands.append(sub.id)
    return tuple(sorted(operands)), tuple(sorted(operators))


def parse_formula(formula: str) -> FormulaInfo:
    """Parse one formula; an unparsable one keeps its text as canonical form and has no operands/operators."""
    text = normalize_formula(formula)
    expr, _, result = text.partition("=")
    try:
        tree = ast.parse(_python_source(expr), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return FormulaInfo(text, text, text, (), (), result, None)
    expression = _canonical(tree)
    canonical = expression + ("=" + (_clean_answer(result) or result) if result else "")
    operands, operators = _leaves_and_ops(tree)
    return FormulaInfo(text, canonical, expression, operands, operators, result, tree)


_SAFE_BINOPS = {ast.Add: float.__add__, ast.Sub: float.__sub__, ast.Mult: float.__mul__, ast.Div: float.__truediv__}


def _evaluate(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _SAFE_BINOPS:
        return _SAFE_BINOPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _evaluate(node.left), _evaluate(node.right)
        if abs(exponent) > 64:  # a generated "9**999999" must not hang the evaluation
            raise ValueError("exponent too large")
        return base**exponent
    raise ValueError("not a numeric expression")


def formula_is_correct(info: FormulaInfo) -> bool | None:
    """Whether ``expression = result`` holds arithmetically; None when it cannot be checked (no result, symbols).

    Division by zero or overflow inside the expression makes the formula wrong, never an exception.
    """
    result = _to_float(_clean_answer(info.result)) if info.result else None
    if info.tree is None or result is None:
        return None
    try:
        value = _evaluate(info.tree)
    except ValueError:
        return None
    except (ZeroDivisionError, OverflowError):
        return False
    return math.isfinite(value) and math.isclose(value, result, rel_tol=1e-4, abs_tol=1e-2)


# ----------------------------------------------------------------------------------------------------------------
# Set metrics and step errors.


def set_metrics(predicted: set[str], reference: set[str]) -> dict[str, float]:
    """IoU (Jaccard), Dice, overlap (Szymkiewicz–Simpson), precision and recall of two formula sets.

    All NaN when ``reference`` is empty (undefined: the example is left out of the means); 0 when only
    ``predicted`` is empty.
    """
    if not reference:
        return dict.fromkeys(("iou", "dice", "overlap", "precision", "recall"), math.nan)
    inter = len(predicted & reference)
    return {
        "iou": inter / len(predicted | reference),
        "dice": 2 * inter / (len(predicted) + len(reference)),
        "overlap": inter / min(len(predicted), len(reference)) if predicted else 0.0,
        "precision": inter / len(predicted) if predicted else 0.0,
        "recall": inter / len(reference),
    }


def step_errors(predicted: list[FormulaInfo], reference: list[FormulaInfo]) -> dict[str, float]:
    """Missing / extra steps, repetitions, wrong operators and inverted operands (definitions in docs/metrics.md).

    ``missing_steps`` = |R∖P| / |R|; ``extra_steps`` = |P∖R| / |R|; ``repetitions`` = duplicated predicted formulas /
    predicted formulas; ``wrong_operators`` / ``inverted_operands`` = predicted formulas, not equivalent to any
    reference formula, that share the operand multiset of a reference formula but use other operators / the same
    operators in another order, divided by |R|. Step errors other than repetitions are NaN when R is empty.
    """
    pred_texts = [p.text for p in predicted]
    repetitions = (len(pred_texts) - len(set(pred_texts))) / len(pred_texts) if pred_texts else 0.0
    p_set, r_set = set(pred_texts), {r.text for r in reference}
    if not r_set:
        nan = math.nan
        return {
            "missing_steps": nan,
            "extra_steps": nan,
            "repetitions": repetitions,
            "wrong_operators": nan,
            "inverted_operands": nan,
        }
    ref_canonical = {r.canonical for r in reference}
    wrong = {p.text: p for p in predicted if p.canonical not in ref_canonical and p.operands}
    wrong_ops = sum(
        any(p.operands == r.operands and p.operators != r.operators for r in reference) for p in wrong.values()
    )
    inverted = sum(
        any(
            p.operands == r.operands and p.operators == r.operators and p.expression != r.expression for r in reference
        )
        for p in wrong.values()
    )
    return {
        "missing_steps": len(r_set - p_set) / len(r_set),
        "extra_steps": len(p_set - r_set) / len(r_set),
        "repetitions": repetitions,
        "wrong_operators": wrong_ops / len(r_set),
        "inverted_operands": inverted / len(r_set),
    }


def well_formed(text: str, *, require_formulas: bool = True, numeric_answer: bool = True) -> bool:
    """The expected structure: parsable formulas (at least one if ``require_formulas``), every ``<<`` closed, all
    of them before the first ``####``, which is followed by an answer (a number if ``numeric_answer``)."""
    text = text or ""
    if ANSWER_MARK not in text:
        return False
    answer = parse_final_answer(text)
    if answer is None or (numeric_answer and _to_float(answer) is None):
        return False
    body = text.split(ANSWER_MARK, 1)[0]
    formulas = FORMULA_RE.findall(body)
    if require_formulas and not formulas:
        return False
    if body.count("<<") != len(formulas) or body.count(">>") != len(formulas):
        return False
    return all(parse_formula(f).tree is not None for f in formulas)


def score_math(generated: str, reference: str) -> dict[str, float]:
    """All math metrics of one generated solution against its reference solution (keys in docs/metrics.md).

    ``reference`` is a full solution (formulas and ``#### x``) or a bare answer. Never raises on malformed text.
    """
    generated = generated or ""
    pred = [parse_formula(f) for f in parse_formulas(generated)]
    ref = [parse_formula(f) for f in parse_formulas(reference)]
    ref_answer = reference_answer(reference)
    scores = {
        "exact_match": float(answers_match(parse_final_answer(generated), ref_answer)),
        "exact_match_strict": exact_match_strict(generated, reference),
        "exact_match_flexible": exact_match_flexible(generated, reference),
        "exact_match_authors": exact_match_authors(generated, reference),
        "well_formed": float(
            well_formed(generated, require_formulas=bool(ref), numeric_answer=_to_float(ref_answer) is not None)
        ),
    }
    scores.update(set_metrics({p.text for p in pred}, {r.text for r in ref}))
    equivalent = set_metrics({p.canonical for p in pred}, {r.canonical for r in ref})
    scores["equivalent_iou"] = equivalent["iou"]
    scores.update(step_errors(pred, ref))
    checks = [c for c in (formula_is_correct(p) for p in pred) if c is not None]
    scores["calculation_errors"] = checks.count(False) / len(checks) if checks else math.nan
    return scores


# The reasoning-step errors of `score_math`, per problem (the report's breakdown reads them from here).
STEP_ERRORS = (
    "missing_steps",
    "extra_steps",
    "repetitions",
    "wrong_operators",
    "inverted_operands",
    "calculation_errors",
)
MATH_METRICS = (
    "exact_match",
    "exact_match_strict",
    "exact_match_flexible",
    "exact_match_authors",
    "well_formed",
    "iou",
    "dice",
    "overlap",
    "precision",
    "recall",
    "equivalent_iou",
    *STEP_ERRORS,
)
