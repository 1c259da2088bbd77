"""`LossSpec`: the objective as one typed value — loss weights plus per-loss options — parsed once from user input.

Users write the objective in three forms (YAML keys ``loss``, ``ce_weight``, ``loss_options``, or the same flags):

* a task loss name combined with CE: ``loss: lovasz`` + ``ce_weight: 0.6`` → ``{"ce": 0.6, "lovasz": 0.4}``
  (``loss: ce`` is CE alone);
* a weights string: ``loss: ce=0.5,focal=0.25,lovasz=0.25``;
* a mapping: ``loss: {ce: 0.5, focal: 0.5}``.

:meth:`LossSpec.parse` turns any of them (plus ``loss_options`` such as ``{focal: {gamma: 1.0}}``) into a validated
spec: canonical names, finite non-negative weights with one > 0, options that each loss accepts. Everything
downstream (trainers, grid cells, the demo) receives the spec and never reads loss strings again::

    spec = LossSpec.parse("lovasz", ce_weight=0.6, options={"lovasz": {}})
    loss_fn = spec.build()              # CombinedLoss({"ce": 0.6, "lovasz": 0.4})
    yaml_values = spec.to_config()      # {"loss": "lovasz", "ce_weight": 0.6, "loss_options": {}}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from segloss.defaults import DEFAULT_CE_WEIGHT as DEFAULT_CE_WEIGHT  # λ of the paper (re-exported)
from segloss.losses.functional import IGNORE_INDEX
from segloss.losses.modules import CombinedLoss, canonical_name, get_loss, validate_weights


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Validated loss weights (canonical name → weight ≥ 0) and options (name → keyword options).

    ``ce_weight`` records λ when the spec was written as one task loss name (``loss: lovasz``); it is None for
    explicit weights. It only decides how the spec is written back (:meth:`to_config`, :attr:`label`), so two
    specs with the same weights and options compare equal whatever form they came from.
    """

    weights: Mapping[str, float]
    options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    ce_weight: float | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        weights = validate_weights(self.weights)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "options", _check_options(self.options, weights))

    @classmethod
    def parse(
        cls,
        loss: str | Mapping[str, float] | LossSpec,
        *,
        ce_weight: float | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> LossSpec:
        """The spec of any user form (see the module docstring); ``ValueError`` names what is wrong and the fix.

        ``ce_weight`` (default 0.6) applies only to a single task loss name; ``options`` are ``loss_options``.
        A `LossSpec` is returned as it is when no ``options`` are given.
        """
        if isinstance(loss, LossSpec):
            return loss if options is None else dataclasses.replace(loss, options=options)
        if isinstance(loss, Mapping):
            return cls(_mapping_weights(loss), options or {})
        if not isinstance(loss, str) or not loss.strip():
            raise ValueError(f"loss: give a loss name, `name=weight,...` or a mapping of weights, got {loss!r}")
        if "=" in loss or "," in loss:
            return cls(_text_weights(loss), options or {})
        name = canonical_name(loss)
        lam = _check_ce_weight(DEFAULT_CE_WEIGHT if ce_weight is None else ce_weight)
        weights = {"ce": 1.0} if name == "ce" else {"ce": lam, name: 1.0 - lam}
        return cls(weights, options or {}, ce_weight=None if name == "ce" else lam)

    @property
    def task_losses(self) -> list[str]:
        """The non-CE losses with a positive weight, in order."""
        return [name for name, weight in self.weights.items() if name != "ce" and weight > 0]

    @property
    def label(self) -> str:
        """Short text of the spec: ``"lovasz"`` (a name combined by ce_weight), ``"ce"``, or ``"ce=0.5,focal=0.5"``."""
        if self.ce_weight is not None:
            return next(name for name in self.weights if name != "ce")
        if dict(self.weights) == {"ce": 1.0}:
            return "ce"
        return ",".join(f"{name}={weight:g}" for name, weight in self.weights.items())

    @property
    def tag(self) -> str:
        """:attr:`label` plus the options that differ from their defaults, e.g. ``"lovasz[group=sequence]"`` (one task
        loss) or ``"ce=0.5,lovasz=0.5[lovasz.classes=all]"``: a name that tells settings of one loss apart (grid cells,
        reports). Equal to :attr:`label` without options."""
        single = self.ce_weight is not None or (len(self.options) == 1 and len(self.task_losses) == 1)
        parts = [
            f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
            for name, values in self.options.items()
            for key, value in ((k if single else f"{name}.{k}", v) for k, v in values.items())
        ]
        return f"{self.label}[{','.join(parts)}]" if parts else self.label

    def to_config(self) -> dict[str, Any]:
        """``loss``/``ce_weight``/``loss_options`` values that :meth:`parse` reads back (YAML-safe)."""
        options = {name: dict(values) for name, values in self.options.items()}
        if self.ce_weight is not None:
            return {"loss": self.label, "ce_weight": self.ce_weight, "loss_options": options}
        return {"loss": dict(self.weights), "loss_options": options}

    def build(self, *, ignore_index: int = IGNORE_INDEX) -> CombinedLoss:
        """The `CombinedLoss` of this spec: ``combined(logits, labels, answer_labels) -> scalar``."""
        return CombinedLoss(self.weights, self.options or None, ignore_index=ignore_index)


def parse_loss_spec(spec: str | Mapping[str, float], ce_weight: float | None = None) -> dict[str, float]:
    """The weights of a loss setting: ``"lovasz"`` → ``{"ce": 0.6, "lovasz": 0.4}`` (see :meth:`LossSpec.parse`)."""
    return dict(LossSpec.parse(spec, ce_weight=ce_weight).weights)


def _mapping_weights(loss: Mapping[Any, Any]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for name, weight in loss.items():
        if not isinstance(name, str):
            raise ValueError(f"loss: weight keys must be loss names, got {name!r} in {dict(loss)}")
        weights[name] = weight
    return weights


def _text_weights(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            msg = f"loss: cannot read {part.strip()!r} in {text!r}; write name=weight pairs, e.g. ce=0.6,lovasz=0.4"
            raise ValueError(msg) from None
    return weights


def _check_ce_weight(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and 0 <= value <= 1)
    ):
        raise ValueError(f"ce_weight must be a number in [0, 1] (the task loss gets 1 - ce_weight), got {value!r}")
    return float(value)


def _check_options(options: Any, weights: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Canonical names → options each loss accepts (values checked by the loss itself); only for weighted losses."""
    if not isinstance(options, Mapping):
        raise ValueError("loss_options: must be a mapping of loss name → options, e.g. {focal: {gamma: 2}}")
    checked: dict[str, dict[str, Any]] = {}
    for name, values in options.items():
        key = canonical_name(str(name))
        if key not in weights:
            raise ValueError(f"loss_options: options given for {key!r}, which is not in the loss {dict(weights)}")
        if not isinstance(values, Mapping):
            raise ValueError(f"loss_options.{key}: must be a mapping of option → value, got {values!r}")
        checked[key] = dict(get_loss(key, **values).options)
    return checked
