"""Every claim of the deciding presets can be decided as configured (cdrl.report.decidable)."""


import pytest
import yaml

from cdrl.plan.experiments import apply_every_run, preset_view, select_decided
from cdrl.report.decidable import MIN_VALUES, undecidable
from tests.conftest import ROOT


def _view(name: str, **change) -> dict:
    preset = apply_every_run(yaml.safe_load((ROOT / f"workflow/config/{name}.yaml").read_text()))
    preset.update(change)
    return preset_view(preset, experiments_dir=ROOT / "workflow/config/experiments")


@pytest.mark.parametrize("name", ["paper", "mnist"])
def test_every_claim_of_the_deciding_presets_can_be_decided(name):
    view = _view(name)
    assert {c["id"] for c in view["claims"]} == {f"C{i}" for i in range(1, 11)}
    assert undecidable(view) == {}


def test_one_seed_a_side_cannot_decide():
    preset = apply_every_run(yaml.safe_load((ROOT / "workflow/config/paper.yaml").read_text()))
    preset["runs"]["cifar10_cdrl_no_vr"]["seeds"] = [0]
    preset["runs"]["celeba64_compose"].pop("seeds")  # back to the preset's seeds: [0]
    why = undecidable(preset_view(preset, experiments_dir=ROOT / "workflow/config/experiments"))
    assert set(why) == {"C5", "C9"}
    assert f"1 value(s) per side, the rule needs at least {MIN_VALUES}" in why["C5"][0]
    assert "cifar10_cdrl_no_vr" in why["C5"][0]


def test_an_inception_score_without_a_classifier_head_cannot_decide():
    why = undecidable(_view("paper", inception_weights="fid-port"))
    assert list(why) == ["C7"]
    assert "IS would be null" in why["C7"][0]


def test_a_metric_no_evaluation_lists_cannot_decide():
    preset = apply_every_run(yaml.safe_load((ROOT / "workflow/config/paper.yaml").read_text()))
    preset["evaluation"]["cifar10"]["metrics"] = {"inception": ["kid"]}
    why = undecidable(preset_view(preset, experiments_dir=ROOT / "workflow/config/experiments"))
    assert {"C1", "C3", "C4", "C5", "C6"} <= set(why)
    assert "lists no 'fid'" in why["C1"][0]


def test_the_smoke_preset_names_its_single_seeds():
    why = undecidable(_view("smoke"))
    assert "C1" in why and "C2" not in why  # C2's bench rounds decide without seeds


def test_decide_keeps_only_the_named_claims_and_their_runs():
    preset = apply_every_run(yaml.safe_load((ROOT / "workflow/config/paper.yaml").read_text()))
    cut = select_decided({**preset, "decide": ["C4"]})
    assert [c["id"] for c in cut["claims"]] == ["C4"]
    assert set(cut["runs"]) == {"cifar10_cdrl", "cifar10_cdrl_drl_schedule"}
    assert "speed" not in cut and "downstream" not in cut
    assert select_decided(preset) is preset
    with pytest.raises(Exception, match="both select claims"):
        select_decided({**preset, "decide": ["C4"], "part": "x"})
