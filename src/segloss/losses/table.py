"""The loss table: one definition per loss, from which everything else is derived.

A :class:`LossDef` holds a loss's core, its options as a frozen dataclass whose defaults are written once, whether it
is **token-local** (a function of each token's own ``log p_t``) or a **region** loss (a score of per-group
statistics; the group is a sequence or the batch, the ``group`` option), and, for region losses, whether counting
every class (``classes: all``) needs every vocabulary entry's probability. From the table come the registry
(``LOSSES``, ``LOSS_CLASSES``, :func:`get_loss`), the public functions (``focal_loss`` …), the typed modules
(``FocalLoss`` …) and option validation (:meth:`LossDef.make`, ``LossSpec``). Adding a loss is one
:func:`register_loss` call with its options and its core::

    @dataclasses.dataclass(frozen=True)
    class BrierOptions(TokenOptions):
        scale: float = option(1.0, "multiplies the loss", minimum=0)

    register_loss(LossDef("brier", BrierOptions, "token", per_token=lambda lp, o: o.scale * (1 - lp.exp()) ** 2))
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import torch

from segloss.config import choice_error
from segloss.losses import core

IGNORE_INDEX = core.IGNORE_INDEX
Kind = Literal["token", "region"]
Group = Literal["sequence", "batch"]
Classes = Literal["present", "all"]


def option(default: Any, help: str, *, minimum: float | None = None, kw_only: bool = False, why: str = "") -> Any:
    """A loss option: its default, a help text (docs and ``--help``), an optional lower bound, and for choices a
    note (``why``) appended to the error when a value is refused."""
    metadata = {"help": help, "minimum": minimum, "why": why}
    return dataclasses.field(default=default, kw_only=kw_only, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """Base of every loss's options. Values are checked against the field types when built: a ``Literal`` is a
    choice, a ``float`` a finite number (≥ ``minimum`` where given); ``ValueError`` names the loss and the option."""

    loss_name: ClassVar[str] = "loss"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _check_value(self.loss_name, field, hints[field.name], getattr(self, field.name))
            object.__setattr__(self, field.name, value)

    def non_defaults(self) -> dict[str, Any]:
        """The options that differ from their defaults (what a user chose; what ``config.yaml`` records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}


def _check_value(loss: str, field: dataclasses.Field, kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        allowed = typing.get_args(kind)
        if not isinstance(value, str) or value not in allowed:
            why = field.metadata.get("why", "")
            raise ValueError(f"loss {loss!r}: {choice_error(field.name, value, allowed)}{why}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"loss {loss!r}: option {field.name} must be a finite number, got {value!r}")
    minimum = field.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ValueError(f"loss {loss!r}: option {field.name} must be ≥ {minimum:g}, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class TokenOptions(LossOptions):
    """Options of a token-local loss (a mean over the valid tokens)."""

    reduction: Literal["mean", "sum"] = option(
        "mean", "mean over the valid tokens, or their sum (the caller divides by its own count)", kw_only=True
    )


@dataclasses.dataclass(frozen=True)
class RegionOptions(LossOptions):
    """Options of a region loss: what one "image" is, which classes enter the class mean."""

    group: Group = option(
        "sequence",
        "what one image is: each sequence (the loss is the mean over sequences), or the batch (the valid tokens of "
        "the whole optimizer step pooled)",
        kw_only=True,
    )
    classes: Classes = option(
        "present",
        "the vocabulary entries that enter the class mean: those present among the group's targets, or all",
        kw_only=True,
    )
    reduction: Literal["mean"] = option(
        "mean", "region losses are means", kw_only=True, why=" (it is not a sum over tokens, so it has no 'sum')"
    )


@dataclasses.dataclass(frozen=True)
class LossDef:
    """One loss. ``kind="token"`` needs ``per_token(log_p [N], options) -> [N]`` (and, for the fused head's one-pass
    gradient, ``derivative`` with the same signature: d loss / d log p); ``kind="region"`` needs
    ``statistics(tokens, group [N], G, options)`` (``combine``: how micro-batches join them, ``"sum"`` or ``"cat"``)
    and ``score(statistics, options) -> [G]`` (``score_needs_groups``: called as ``score(stats, G, options)``).
    """

    name: str
    options: type[LossOptions]
    kind: Kind
    per_token: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    derivative: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    statistics: Callable[..., tuple[torch.Tensor, ...]] | None = None
    score: Callable[..., torch.Tensor] | None = None
    combine: Literal["sum", "cat"] = "sum"
    score_needs_groups: bool = False
    # With classes="all": does the loss read every vocabulary entry (Dice's absent classes each need their P_c),
    # or do the present classes and the mass outside them suffice (Generalized Dice)?
    all_classes_read_vocabulary: bool = True
    aliases: tuple[str, ...] = ()
    function_name: str = ""
    class_name: str = ""
    title: str = ""
    doc: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind == "token" and (self.per_token is None or not issubclass(self.options, TokenOptions)):
            raise ValueError(f"loss {self.name!r}: a token loss needs per_token and TokenOptions")
        if self.kind == "region" and (
            self.statistics is None or self.score is None or not issubclass(self.options, RegionOptions)
        ):
            raise ValueError(f"loss {self.name!r}: a region loss needs statistics, score and RegionOptions")
        self.options.loss_name = self.name

    @property
    def option_names(self) -> list[str]:
        """The options in signature order: the loss's own (positional or keyword), then the keyword-only ones."""
        fields = dataclasses.fields(self.options)
        return [f.name for f in fields if not f.kw_only] + [f.name for f in fields if f.kw_only]

    def make(self, *args: Any, **values: Any) -> LossOptions:
        """The validated options of this loss; unknown names raise ``ValueError`` listing the valid ones."""
        positional = [f.name for f in dataclasses.fields(self.options) if not f.kw_only]
        if len(args) > len(positional):
            raise ValueError(f"loss {self.name!r} takes at most {len(positional)} positional options ({positional})")
        for key in values:
            if key not in self.option_names:
                valid = ", ".join([*self.option_names, "ignore_index"])
                raise ValueError(f"loss {self.name!r} has no option {key!r}; valid options: {valid}")
        return self.options(*args, **values)

    def reads_all_classes(self, options: LossOptions) -> bool:
        """Whether these options need every vocabulary entry's probability (``classes: all``, where it costs)."""
        return (
            self.kind == "region"
            and getattr(options, "classes", "present") == "all"
            and (self.all_classes_read_vocabulary)
        )

    def values(self, tokens: core.TokenProbs, options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-unit losses, per-unit validity): ``[N]`` per token, or ``[G]`` per group with "has a valid token"."""
        if self.kind == "token":
            assert self.per_token is not None
            values = self.per_token(tokens.log_p_target, options)
            return values, torch.ones_like(values, dtype=torch.bool)
        group, n_groups = core.groups_of(tokens, options.group)
        stats = self.statistics_of(tokens, group, n_groups, options)
        return self.score_of(stats, n_groups, options), core.group_sizes(group, n_groups, tokens.log_p_target) > 0

    def statistics_of(self, tokens: core.TokenProbs, group: torch.Tensor, n_groups: int, options: Any) -> Any:
        assert self.statistics is not None
        return self.statistics(tokens, group, n_groups, options)

    def score_of(self, stats: Any, n_groups: int, options: Any) -> torch.Tensor:
        assert self.score is not None
        return self.score(stats, n_groups, options) if self.score_needs_groups else self.score(stats, options)


class TableView(Mapping[str, Any]):
    """A read-only mapping name → something derived from :data:`LOSS_TABLE`, always in step with it (a loss
    registered later appears in every view)."""

    def __init__(self, derive: Callable[[LossDef], Any]) -> None:
        self._derive = derive
        self._cache: dict[str, tuple[LossDef, Any]] = {}

    def __getitem__(self, name: str) -> Any:
        definition = LOSS_TABLE[name]
        cached = self._cache.get(name)
        if cached is None or cached[0] is not definition:
            cached = (definition, self._derive(definition))
            self._cache[name] = cached
        return cached[1]

    def __iter__(self) -> Iterator[str]:
        return iter(LOSS_TABLE)

    def __len__(self) -> int:
        return len(LOSS_TABLE)

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{name!r}: {self[name]!r}' for name in self)}}}"


LOSS_TABLE: dict[str, LossDef] = {}
ALIASES: dict[str, str] = {}


def register_loss(definition: LossDef) -> LossDef:
    """Add ``definition`` to the table (its name and aliases must be new); returns it."""
    taken = [n for n in (definition.name, *definition.aliases) if n in LOSS_TABLE or n in ALIASES]
    if taken:
        raise ValueError(f"loss name(s) {taken} are already registered; choose another name")
    LOSS_TABLE[definition.name] = definition
    ALIASES.update(dict.fromkeys(definition.aliases, definition.name))
    return definition


def unregister_loss(name: str) -> None:
    """Remove a loss added with :func:`register_loss` (tests use it to leave the table as they found it)."""
    definition = LOSS_TABLE.pop(name)
    for alias in definition.aliases:
        ALIASES.pop(alias, None)


def canonical_name(name: str) -> str:
    """The registry name for ``name`` or an alias of it; unknown names raise ``ValueError`` listing valid ones."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in LOSS_TABLE:
        valid = sorted(LOSS_TABLE) + sorted(ALIASES)
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(valid)}")
    return key


def loss_def(name: str) -> LossDef:
    """The definition of ``name`` (aliases allowed)."""
    return LOSS_TABLE[canonical_name(name)]


def check_ignore_index(loss: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"loss {loss!r}: ignore_index must be an int, got {value!r}")
    return value


# -- the nine losses ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CrossEntropyOptions(TokenOptions):
    pass


@dataclasses.dataclass(frozen=True)
class FocalOptions(TokenOptions):
    gamma: float = option(2.0, "focusing exponent γ (0 is cross-entropy)", minimum=0)


@dataclasses.dataclass(frozen=True)
class SelfAdjustingDiceOptions(TokenOptions):
    alpha: float = option(1.0, "exponent α of the self-adjusting factor (1 − p)^α", minimum=0)
    gamma: float = option(1.0, "smoothing term γ", minimum=0)


@dataclasses.dataclass(frozen=True)
class GeneralizedDiceOptions(RegionOptions):
    smooth: float = option(1e-5, "smoothing term added to numerator and denominator", minimum=0)
    w_type: Literal["square", "simple", "uniform"] = option("square", "class weight w_c: 1/n_c², 1/n_c or 1")
    classes: Classes = option(
        "all",
        "all: absent classes weigh the largest present weight (MONAI), via the mass outside the present classes; "
        "present: only the group's present classes enter the sums",
        kw_only=True,
    )


@dataclasses.dataclass(frozen=True)
class LovaszOptions(RegionOptions):
    group: Group = option(
        "batch",
        "batch: the valid tokens of the whole optimizer step form one image; sequence: one image per sequence "
        "(Berman et al.'s per_image), mean over sequences",
        kw_only=True,
    )


@dataclasses.dataclass(frozen=True)
class DiceOptions(RegionOptions):
    smooth: float = option(1e-5, "smoothing term added to numerator and denominator", minimum=0)


@dataclasses.dataclass(frozen=True)
class JaccardOptions(RegionOptions):
    smooth: float = option(1e-5, "smoothing term added to numerator and denominator", minimum=0)


@dataclasses.dataclass(frozen=True)
class TverskyOptions(RegionOptions):
    alpha: float = option(0.5, "weight α of the false positives", minimum=0)
    beta: float = option(0.5, "weight β of the false negatives", minimum=0)
    smooth: float = option(1e-5, "smoothing term added to numerator and denominator", minimum=0)


@dataclasses.dataclass(frozen=True)
class FocalTverskyOptions(RegionOptions):
    alpha: float = option(0.5, "weight α of the false positives", minimum=0)
    beta: float = option(0.5, "weight β of the false negatives", minimum=0)
    gamma: float = option(0.75, "exponent γ of (1 − TI_c)", minimum=0)
    smooth: float = option(1e-5, "smoothing term added to numerator and denominator", minimum=0)


_REGION_CONVENTION = """Per group (a sequence with ``group="sequence"``, the batch with ``group="batch"``), over the
    classes present in its labels (n_c > 0; ``classes="all"``: every vocabulary entry), with ``n_c``,
    ``I_c = Σ_{i: y_i = c} p_i[c]`` (soft true positives) and ``P_c = Σ_i p_i[c]``; soft false positives
    ``P_c − I_c``, false negatives ``n_c − I_c``. The loss is the mean over the counted classes, then over groups
    with a valid token. Absent classes add no term of their own with ``classes="present"``; probability mass on
    them still costs, as it is taken from ``I_c`` of the target classes. Shapes: ``logits [B, T, V]``,
    ``labels [B, T]`` → scalar."""

register_loss(
    LossDef(
        "ce",
        CrossEntropyOptions,
        "token",
        per_token=core.ce_per_token,
        derivative=core.ce_derivative,
        aliases=("cross_entropy",),
        function_name="cross_entropy",
        class_name="CrossEntropyLoss",
        title="Cross-entropy over the valid tokens",
        doc="""Cross-entropy, mean over valid tokens: ``−(1/N) Σ_i log p_i[y_i]`` (``reduction="sum"``: without the
    1/N). Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.""",
    )
)
register_loss(
    LossDef(
        "focal",
        FocalOptions,
        "token",
        per_token=core.focal_per_token,
        derivative=core.focal_derivative,
        function_name="focal_loss",
        class_name="FocalLoss",
        title="Focal loss; gamma=0 is cross-entropy",
        source="Lin et al., ICCV 2017",
        doc="""Focal loss (Lin et al., 2017), mean over valid tokens: ``−(1/N) Σ_i (1 − p_t)^γ · log p_t`` ("sum": no
    1/N). Computed from log-probabilities, so it is finite for p_t → 0 and p_t → 1 and stable for half-precision
    inputs. ``gamma=0`` is cross-entropy. Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.""",
    )
)
register_loss(
    LossDef(
        "sadl",
        SelfAdjustingDiceOptions,
        "token",
        per_token=core.sadl_per_token,
        derivative=core.sadl_derivative,
        aliases=("self_adj_dice",),
        function_name="self_adjusting_dice_loss",
        class_name="SelfAdjustingDiceLoss",
        title="Self-adjusting Dice loss",
        source="Li et al., ACL 2020",
        doc="""Self-adjusting Dice loss (Li et al., 2020), mean over valid tokens (``reduction="sum"``: their sum).
    ``q = (1 − p_t)^α · p_t``, loss ``= 1 − (2q + γ) / (q + 1 + γ)`` per token, as in the original research code
    (γ is the smoothing term). Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.""",
    )
)
register_loss(
    LossDef(
        "gdice",
        GeneralizedDiceOptions,
        "region",
        statistics=core.region_stats,
        score=core.gdice_score,
        all_classes_read_vocabulary=False,
        function_name="generalized_dice_loss",
        class_name="GeneralizedDiceLoss",
        title="Generalized Dice loss per sequence (default)",
        source="Sudre et al., DLMIA 2017",
        doc="""Generalized Dice loss (Sudre et al., 2017) per group (default: per sequence), mean over groups with a
    valid token. For a group with valid tokens i, counts ``n_c`` of each class in its labels,
    ``P_c = Σ_i p_i[c]`` and ``I_c = Σ_{i: y_i = c} p_i[c]``::

        w_c = 1 / n_c² ("square", default), 1 / n_c ("simple") or 1 ("uniform") for classes present in the group;
        w_max = max_c w_c for absent classes (MONAI's rule; classes="all", the default)
        GDL = 1 − (2 Σ_c w_c I_c + smooth) / (Σ_c w_c (n_c + P_c) + w_max · Σ_i (1 − Σ_{c present} p_i[c]) + smooth)

    The absent-class term is the probability mass outside the present classes, so no one-hot over V is built;
    ``classes="present"`` drops it. Shapes: ``logits [B, T, V]``, ``labels [B, T]`` → scalar.""",
    )
)
register_loss(
    LossDef(
        "lovasz",
        LovaszOptions,
        "region",
        statistics=core.lovasz_stats,
        score=core.lovasz_score,
        combine="cat",
        score_needs_groups=True,
        function_name="lovasz_softmax_loss",
        class_name="LovaszSoftmaxLoss",
        title="Lovász-Softmax over the valid tokens of the batch (default)",
        source="Berman et al., CVPR 2018",
        doc="""Lovász-Softmax (Berman et al., 2018), by default over all valid tokens of the batch as one image
    (``group="sequence"``: per sequence, Berman's ``per_image``), mean over the classes present (``classes="all"``:
    over every vocabulary entry; an absent class costs its largest probability).

    For each class c, errors ``e_i = |[y_i = c] − p_i[c]|`` are sorted in decreasing order and the loss is
    ``Σ_i e_(i) · g_i`` with g the gradient of the Lovász extension of the Jaccard index. All (group, class) pairs
    are sorted together (one batched sort or top-k over the errors that can matter). Shapes: ``logits [B, T, V]``,
    ``labels [B, T]`` → scalar.""",
    )
)
register_loss(
    LossDef(
        "dice",
        DiceOptions,
        "region",
        statistics=core.region_stats,
        score=core.dice_score,
        function_name="dice_loss",
        class_name="DiceLoss",
        title="Soft Dice per sequence and present class (default)",
        source="Milletari et al., 3DV 2016",
        doc=f"""Soft Dice loss (Milletari et al., 2016; per class as MONAI's ``DiceLoss``).

    Per counted class ``1 − (2 I_c + smooth) / (n_c + P_c + smooth)``. {_REGION_CONVENTION}""",
    )
)
register_loss(
    LossDef(
        "jaccard",
        JaccardOptions,
        "region",
        statistics=core.region_stats,
        score=core.jaccard_score,
        function_name="jaccard_loss",
        class_name="JaccardLoss",
        title="Soft Jaccard (IoU) per sequence and present class (default)",
        source="Rahman & Wang, ISVC 2016",
        doc=f"""Soft Jaccard (IoU) loss (Rahman & Wang, 2016).

    Per counted class ``1 − (I_c + smooth) / (n_c + P_c − I_c + smooth)``. {_REGION_CONVENTION}""",
    )
)
register_loss(
    LossDef(
        "tversky",
        TverskyOptions,
        "region",
        statistics=core.region_stats,
        score=core.tversky_score,
        function_name="tversky_loss",
        class_name="TverskyLoss",
        title="Tversky loss, alpha on false positives and beta on false negatives",
        source="Salehi et al., MLMI 2017",
        doc=f"""Tversky loss (Salehi et al., 2017; α weighs false positives, β false negatives, as in MONAI and
    smp). Per counted class ``1 − TI_c``, ``TI_c = (I_c + s) / (I_c + α (P_c − I_c) + β (n_c − I_c) + s)``;
    α = β = 0.5 is Dice, α = β = 1 is Jaccard (up to smoothing). {_REGION_CONVENTION}""",
    )
)
register_loss(
    LossDef(
        "focal_tversky",
        FocalTverskyOptions,
        "region",
        statistics=core.region_stats,
        score=core.focal_tversky_score,
        function_name="focal_tversky_loss",
        class_name="FocalTverskyLoss",
        title="Focal Tversky loss (1 − TI)^gamma",
        source="Abraham & Khan, ISBI 2019",
        doc=f"""Focal Tversky loss (Abraham & Khan, 2019): per counted class ``(1 − TI_c)^γ`` with the Tversky index of
    :func:`tversky_loss`; γ = 0.75 is the paper's 1/γ with γ = 4/3 (γ < 1 raises the weight of classes that are
    already fairly well predicted). {_REGION_CONVENTION}""",
    )
)
