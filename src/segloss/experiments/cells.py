"""A grid cell — one (model, dataset, loss, seed) train+eval run — and its objective as a typed `LossSpec`.

:class:`Cell` sits below both ``grid.py`` (which builds cells) and ``executors.py`` (which runs them), so neither
imports the other. A cell carries its parsed :class:`~segloss.losses.LossSpec` (``loss_spec``): the grid parses each
loss setting once, with the cell's ``ce_weight`` and ``loss_options``, and the spec travels with the cell into the
store (``settings["loss_spec"]``, :func:`spec_to_values`) and from there into the report (:func:`spec_from_values`),
which never reads a loss string again. ``loss`` stays the spec's short label (``"lovasz"``, ``"ce=0.8,lovasz=0.2"``):
the store's ``loss`` column, the report's row names and the ``loss`` value handed to `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from segloss.losses.spec import LossSpec


@dataclasses.dataclass(frozen=True)
class Cell:
    """One train+eval run of the grid. ``train``/``eval`` are the resolved settings passed to the configs;
    ``loss`` is ``loss_spec.label`` (a cell built without a spec gets it from ``loss`` and its train settings)."""

    index: int
    model: str
    dataset: str
    loss: str
    seed: int
    train: dict[str, Any]
    eval: dict[str, Any]
    run_dir: Path
    eval_dir: Path
    config_hash: str
    loss_spec: LossSpec | None = None

    def __post_init__(self) -> None:
        if self.loss_spec is None:
            spec = LossSpec.parse(
                self.loss, ce_weight=self.train.get("ce_weight"), options=self.train.get("loss_options")
            )
            object.__setattr__(self, "loss_spec", spec)

    @property
    def spec(self) -> LossSpec:
        """``loss_spec``, typed as always present (``__post_init__`` fills it in)."""
        assert self.loss_spec is not None
        return self.loss_spec

    def as_row(self) -> dict[str, Any]:
        """The store row of this cell (see :meth:`ResultStore.register`); the spec rides in ``settings``."""
        return {
            "config_hash": self.config_hash,
            "cell_index": self.index,
            "model": self.model,
            "dataset": self.dataset,
            "loss": self.loss,
            "seed": self.seed,
            "settings": {"train": self.train, "eval": self.eval, "loss_spec": spec_to_values(self.spec)},
            "run_dir": self.run_dir,
            "eval_dir": self.eval_dir,
        }


def spec_to_values(spec: LossSpec) -> dict[str, Any]:
    """JSON values of a spec: ``{"weights", "options", "ce_weight"}`` (:func:`spec_from_values` reads them back)."""
    options = {name: dict(values) for name, values in spec.options.items()}
    return {"weights": dict(spec.weights), "options": options, "ce_weight": spec.ce_weight}


def spec_from_values(values: dict[str, Any]) -> LossSpec:
    """The `LossSpec` that :func:`spec_to_values` wrote (validated again by the spec itself; no string is parsed)."""
    return LossSpec(values["weights"], values.get("options") or {}, ce_weight=values.get("ce_weight"))


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of other characters than letters, digits and ``._=-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "x"
