"""Grid cells whose loss has options (the adaptations study): labels, TrainConfig values, and the demo's cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from segloss.experiments.grid import GridConfig, loss_setting
from segloss.losses import LossSpec

ADAPTATIONS = Path(__file__).parents[2] / "configs" / "grid" / "adaptations.yaml"


def test_a_loss_with_options_is_a_cell_of_its_own() -> None:
    label, values = loss_setting({"loss": "lovasz", "loss_options": {"lovasz": {"group": "sequence"}}})
    assert label == "lovasz[group=sequence]"
    assert values == {"loss": "lovasz", "loss_options": {"lovasz": {"group": "sequence"}}}
    assert loss_setting("lovasz") == ("lovasz", {"loss": "lovasz"})  # plain settings are unchanged
    assert loss_setting({"ce": 0.5, "focal": 0.5}) == ("ce=0.5,focal=0.5", {"loss": "ce=0.5,focal=0.5"})
    spec = LossSpec.parse({"ce": 0.5, "lovasz": 0.5}, options={"lovasz": {"classes": "all", "group": "batch"}})
    assert spec.tag == "ce=0.5,lovasz=0.5[classes=all]"  # the default group is not named
    two = LossSpec.parse({"ce": 0.4, "focal": 0.3, "lovasz": 0.3}, options={"focal": {"gamma": 1}, "lovasz": {}})
    assert two.tag == "ce=0.4,focal=0.3,lovasz=0.3[focal.gamma=1]"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"loss": "lovasz", "options": {}}, r"unknown key\(s\) \['options'\]"),
        (
            {"loss": "lovasz", "loss_options": {"lovasz": {"group": "image"}}},
            "group: 'image' is not one of sequence, batch",
        ),
        ({"loss": "lovasz", "loss_options": {"gdice": {}}}, "options given for 'gdice'"),
    ],
)
def test_bad_loss_settings_name_the_problem(entry, message) -> None:
    with pytest.raises(ValueError, match=f"losses: .*{message}"):
        loss_setting(entry)


def test_the_adaptations_grid_holds_the_demos_cells_and_each_adaptation(tmp_path) -> None:
    from segloss.config import config_from_values, load_yaml
    from segloss.experiments.demo import DemoConfig, grid_config

    values = load_yaml(ADAPTATIONS)
    values["models"] = [str(tmp_path / "base")]
    study = config_from_values(GridConfig, values, str(ADAPTATIONS))
    cells = study.cells()
    labels = list(dict.fromkeys(c.loss for c in cells))
    assert labels == [
        "ce",
        "lovasz",
        "lovasz[group=sequence]",
        "lovasz[classes=all]",
        "lovasz[group=sequence,classes=all]",
        "gdice",
        "gdice[group=batch]",
        "gdice[classes=present]",
        "gdice[group=batch,classes=present]",
    ]
    assert study.seeds == list(range(10)) and len(cells) == 90
    demo = grid_config(DemoConfig(n_seeds=5, output_dir=study.output_dir), tmp_path / "base")
    demo_cells = {(c.loss, c.seed): c.config_hash for c in demo.cells()}
    for cell in cells:  # the defaults are the demo's very cells; the adaptations differ from them in options only
        if (cell.loss, cell.seed) in demo_cells:
            assert demo_cells[(cell.loss, cell.seed)] == cell.config_hash
    assert {c.loss for c in cells if (c.loss, c.seed) in demo_cells} == {"ce", "lovasz", "gdice"}
    adapted = next(c for c in cells if c.loss == "gdice[group=batch]")
    assert adapted.train["loss_options"] == {"gdice": {"group": "batch"}} and adapted.train["loss"] == "gdice"
