"""arith: a seeded generator of multi-step arithmetic word problems with GSM8K-format answers.

Each problem starts with a quantity and applies 1–4 operations (+ − × ÷, every intermediate result a
non-negative integer ≤ ``max_value``), told with varied templates, names and items, optionally with distractor
sentences whose numbers play no part. The answer is exactly the GSM8K formula format::

    Question: Mia has 12 marbles. Leo has 7 stickers. She buys 5 more marbles. Then she gets 3 times as many
    marbles as she had. How many marbles does Mia have now?
    Answer: <<12+5=17>> <<17*3=51>> #### 51

Usage (no path: the data is synthetic)::

    load_examples("arith", "train", seed=42, n_train=2000, max_steps=2)
    segloss data show arith -n 3 --dataset-options '{max_steps: 4, distractors: 2}'

Options (every one is a knob of ``load_examples("arith", split, **options)``):

* ``n_train`` / ``n_validation`` / ``n_test`` (2000 / 200 / 200): split sizes.
* ``min_steps`` / ``max_steps`` (1 / 3): number of operations per problem, drawn uniformly in between (1–4).
* ``max_value`` (100): bound on the start value, every operand and every intermediate result.
* ``max_factor`` (5): largest multiplier of a × step and largest divisor of a ÷ step (÷ always divides exactly).
* ``ops`` ("+-*/"): the operations allowed; any non-empty subset of ``+ - * /``.
* ``distractors`` (1): each problem gets between 0 and this many irrelevant number sentences.
* ``answer_format`` ("formula"): how the answer is written — the same problems and steps in every format, so a
  model can be pretrained in one format and fine-tuned into another (the demo's embedded task):

  - ``formula``: ``<<12+5=17>> <<17*3=51>> #### 51`` (GSM8K; what the math metrics score);
  - ``tagged``: ``<12+5=17> <17*3=51> # 51`` (single brackets and one ``#``: every character of the formula format,
    but not its ``<<…>>`` formulas nor its ``####`` answer line, so the math metrics score it 0);
  - ``equations``: ``12+5=17. 17*3=51. The answer is 51.`` (bare equations: no ``<<…>>``, no ``####``);
  - ``words``: ``12 plus 5 is 17. 17 times 3 is 51. The answer is 51.`` (steps in words, no formula, no ``####``);
  - ``number``: ``51`` (the final number alone).

Determinism and disjointness: split ``s`` is drawn from ``random.Random(stable_seed("arith", seed, s))`` — the
same in every process. Splits are generated in the order test, validation, train, each skipping any problem text
already drawn, so the three splits are disjoint and a split's content does not depend on the sizes of the splits
generated after it (changing ``n_train`` leaves test and validation unchanged). Problems are distinct within a split.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from segloss.config import choice_error
from segloss.data.base import DatasetBuilder, Example, register, stable_seed

_NAMES = [
    ("Mia", "she"),
    ("Leo", "he"),
    ("Ana", "she"),
    ("Sam", "he"),
    ("Zoe", "she"),
    ("Max", "he"),
    ("Ivy", "she"),
    ("Tom", "he"),
    ("Eva", "she"),
    ("Ben", "he"),
    ("Lily", "she"),
    ("Omar", "he"),
]
_ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "books",
    "coins",
    "pencils",
    "cards",
    "shells",
    "stamps",
    "cookies",
    "balloons",
    "rocks",
]
_START = [
    "{name} has {a} {item}.",
    "{name} collects {a} {item}.",
    "There are {a} {item} in {name}'s box.",
    "{name} starts the day with {a} {item}.",
]
_STEPS = {
    "+": [
        "{Pron} buys {b} more {item}.",
        "{Friend} gives {obj} {b} more {item}.",
        "Then {pron} finds {b} more {item}.",
        "{Pron} wins {b} {item} in a game.",
    ],
    "-": [
        "{Pron} gives {b} {item} to {friend}.",
        "{Pron} loses {b} of the {item}.",
        "Then {pron} sells {b} {item}.",
        "{Friend} takes {b} {item} from {obj}.",
    ],
    "*": [
        "Then {pron} gets {b} times as many {item} as {pron} had.",
        "The number of {item} grows {b} times.",
        "{Pron} multiplies the {item} by {b}.",
    ],
    "/": [
        "{Pron} splits the {item} equally into {b} bags and keeps one bag.",
        "{Pron} shares the {item} equally among {b} friends, {obj_self} included, and keeps one share.",
        "Then {pron} keeps only one of {b} equal piles of {item}.",
    ],
}
_QUESTIONS = [
    "How many {item} does {name} have now?",
    "How many {item} does {name} end up with?",
    "How many {item} are left with {name}?",
]
_DISTRACTORS = [
    "{friend} has {x} {other}.",
    "{friend} also owns {x} {other}.",
    "The shop sells {x} {other} a day.",
    "{name} is {x} years old.",
]


def _operand(rng: random.Random, op: str, value: int, max_value: int, max_factor: int) -> int | None:
    """A random operand for ``value op b`` with an integer result in [0, max_value], or None if there is none."""
    if op == "+":
        return rng.randint(1, max_value - value) if value < max_value else None
    if op == "-":
        return rng.randint(1, value - 1) if value > 1 else None
    if op == "*":
        top = min(max_factor, max_value // max(value, 1))
        return rng.randint(2, top) if top >= 2 and value > 0 else None
    divisors = [d for d in range(2, min(value - 1, max_factor) + 1) if value % d == 0]
    return rng.choice(divisors) if divisors else None


AnswerFormat = Literal["formula", "tagged", "equations", "words", "number"]
ANSWER_FORMATS: tuple[str, ...] = get_args(AnswerFormat)
_OP_WORDS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}

Step = tuple[int, str, int, int]  # (a, op, b, result)


def format_answer(steps: list[Step], answer_format: str = "formula") -> str:
    """The answer text of a chain of steps in one of :data:`ANSWER_FORMATS` (see the module docstring)."""
    check_answer_format(answer_format)
    final = steps[-1][3]
    if answer_format == "formula":
        return " ".join(f"<<{a}{op}{b}={c}>>" for a, op, b, c in steps) + f" #### {final}"
    if answer_format == "tagged":
        return " ".join(f"<{a}{op}{b}={c}>" for a, op, b, c in steps) + f" # {final}"
    if answer_format == "equations":
        return " ".join(f"{a}{op}{b}={c}." for a, op, b, c in steps) + f" The answer is {final}."
    if answer_format == "words":
        return " ".join(f"{a} {_OP_WORDS[op]} {b} is {c}." for a, op, b, c in steps) + f" The answer is {final}."
    return str(final)  # number


def check_answer_format(answer_format: Any) -> None:
    """``answer_format`` is one of :data:`ANSWER_FORMATS` (a dataset option: no parser types it)."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"arith: option {choice_error('answer_format', answer_format, ANSWER_FORMATS)}")


def generate_problem(
    rng: random.Random,
    *,
    min_steps: int,
    max_steps: int,
    max_value: int,
    max_factor: int,
    ops: str,
    distractors: int,
    answer_format: str = "formula",
) -> tuple[str, str]:
    """One (question, answer) pair; the answer is ``<<a+b=c>> <<c*d=e>> #### e`` in the default format.

    The format is applied after every random draw, so a seed gives the same problems in every format.
    """
    name, pron = rng.choice(_NAMES)
    friend = rng.choice([n for n, _ in _NAMES if n != name])
    item = rng.choice(_ITEMS)
    words = {
        "name": name,
        "pron": pron,
        "Pron": pron.capitalize(),
        "obj": "him" if pron == "he" else "her",
        "obj_self": "himself" if pron == "he" else "herself",
        "friend": friend,
        "Friend": friend,
        "item": item,
    }
    value = rng.randint(2, max_value)
    sentences = [rng.choice(_START).format(a=value, **words)]
    steps: list[Step] = []
    for _ in range(rng.randint(min_steps, max_steps)):
        choices = [(op, b) for op in ops if (b := _operand(rng, op, value, max_value, max_factor)) is not None]
        op, b = rng.choice(choices)  # "-" is feasible whenever value > 1; value 0/1 still allows "+" or "*"
        result = {"+": value + b, "-": value - b, "*": value * b, "/": value // max(b, 1)}[op]
        steps.append((value, op, b, result))
        sentences.append(rng.choice(_STEPS[op]).format(b=b, **words))
        value = result
    for _ in range(rng.randint(0, distractors)):
        other = rng.choice([i for i in _ITEMS if i != item])
        text = rng.choice(_DISTRACTORS).format(x=rng.randint(2, max_value), other=other, **words)
        sentences.insert(rng.randint(1, len(sentences)), text)  # never before the opening sentence
    sentences.append(rng.choice(_QUESTIONS).format(**words))
    return " ".join(sentences), format_answer(steps, answer_format)


@register
class ArithBuilder(DatasetBuilder):
    name = "arith"
    stop_strings = ("\nQuestion:", "\n\n")  # where a generated answer ends
    default_options: ClassVar[dict[str, Any]] = {
        "n_train": 2000,
        "n_validation": 200,
        "n_test": 200,
        "min_steps": 1,
        "max_steps": 3,
        "max_value": 100,
        "max_factor": 5,
        "ops": "+-*/",
        "distractors": 1,
        "answer_format": "formula",
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        for key in ("n_train", "n_validation", "n_test", "distractors", "min_steps", "max_steps"):
            if not isinstance(o[key], int) or o[key] < 0:
                raise ValueError(f"arith: option {key} must be a non-negative integer, got {o[key]!r}")
        if not 1 <= o["min_steps"] <= o["max_steps"] <= 4:
            raise ValueError(f"arith: need 1 <= min_steps <= max_steps <= 4, got {o['min_steps']}..{o['max_steps']}")
        if not isinstance(o["max_value"], int) or o["max_value"] < 10:
            raise ValueError(f"arith: option max_value must be an integer >= 10, got {o['max_value']!r}")
        if not isinstance(o["max_factor"], int) or o["max_factor"] < 2:
            raise ValueError(f"arith: option max_factor must be an integer >= 2, got {o['max_factor']!r}")
        o["ops"] = "".join(o["ops"]) if not isinstance(o["ops"], str) else o["ops"]
        if not o["ops"] or set(o["ops"]) - set("+-*/"):
            raise ValueError(f"arith: option ops must be a non-empty subset of '+-*/', got {o['ops']!r}")
        check_answer_format(o["answer_format"])

    def split_records(self, split: str, path: str | Path | None, seed: int) -> list[dict[str, Any]]:
        if path is not None:
            raise ValueError(
                "arith is synthetic and takes no --data-path; size it with --dataset-options '{n_train: …}' instead"
            )
        self.source = f"arith(seed={seed})"
        pairs = _generated_split(split, seed, tuple(sorted(self.options.items())))
        return [{"question": question, "answer": answer} for question, answer in pairs]

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        return Example(
            id=f"arith-{split}-{index}", prompt=f"Question: {record['question']}\nAnswer: ", answer=record["answer"]
        )


@functools.lru_cache(maxsize=16)
def _generated_split(split: str, seed: int, options: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, str], ...]:
    """The (question, answer) pairs of ``split``, drawn once per process: a grid worker or the demo fine-tunes many
    cells on the same problems, and drawing 20,000 of them takes about a second each time. Splits are drawn test,
    validation, train, each without the questions of the ones before (no overlap)."""
    o = dict(options)
    seen: set[str] = set()
    for name in ("test", "validation", "train"):
        pairs = _draw(name, o[f"n_{name}"], seed, o, seen)
        if name == split:
            return pairs
    raise AssertionError(split)  # canonical_split() only lets the three names through


def _draw(split: str, n: int, seed: int, o: dict[str, Any], seen: set[str]) -> tuple[tuple[str, str], ...]:
    rng = random.Random(stable_seed("arith", seed, split))
    names = ("min_steps", "max_steps", "max_value", "max_factor", "ops", "distractors", "answer_format")
    knobs = {k: o[k] for k in names}
    pairs: list[tuple[str, str]] = []
    attempts = 0
    while len(pairs) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"arith: could not draw {n} distinct {split} problems with these options; "
                "raise max_value or max_steps, or lower the split sizes"
            )
        try:
            question, answer = generate_problem(rng, **knobs)
        except IndexError:  # no feasible operation (only * and / allowed and the value is stuck)
            continue
        if question not in seen:
            seen.add(question)
            pairs.append((question, answer))
    return tuple(pairs)
