"""Claims along the learning curve (Holm over snapshots, equal iterations and wall-clock), the
stability row, and the seed count from a pilot's spread."""

import json
import math
from pathlib import Path

import pytest

from cdrl.report import claim_curves as cc
from cdrl.report import claims as cl
from cdrl.report.power import ci_width, pooled_sd, power, seeds_needed
from tests.conftest import load_script, write_json


# ----------------------------------------------------------------------------- Holm
def test_holm_step_down():
    # Hand-computed: sorted 0.01, 0.02, 0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06, 0.06.
    assert cc.holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert cc.holm([0.5, None, 0.001]) == [pytest.approx(0.5), None, pytest.approx(0.002)]
    assert cc.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone


# ----------------------------------------------------------------------------- curve claims
def _curve_results(root: Path, fid_a, fid_b, sec_a=0.1, sec_b=0.2, seeds=(0, 1, 2),
                   diverged_b_after=None):
    """Runs a and b with snapshots every 100 of 400 iterations; fid_x(it, seed) gives the
    metric; b's seconds per iteration are sec_b. b's points after ``diverged_b_after`` are null."""
    runs = {r: {"label": r.upper(), "dataset": "d", "seeds": list(seeds), "sample_steps": 15,
                "levels": 6, "iterations": 400, "snapshot_every": 100} for r in ("a", "b")}
    preset = {"runs": runs, "curves": {"runs": ["a", "b"], "num_samples": 50},
              "evaluation": {"d": {"num_samples": 50, "metrics": {"mnist16": ["fid"]}}},
              "tables": {}, "downstream": {}, "speed": {},
              "claims": [{"id": "C1", "kind": "compare", "compare": {"a": "a", "b": "b"},
                          "metric": "fid", "better": "lower", "rule": "welch", "alpha": 0.05,
                          "curve": True, "statement": "s", "published": "p", "source": "x"}]}
    for run, fid, sec in (("a", fid_a, sec_a), ("b", fid_b, sec_b)):
        for s in seeds:
            lines = [{"iteration": it, "sec_per_iter": sec} for it in range(50, 401, 50)]
            stats = root / "runs" / run / f"seed{s}" / "stats.jsonl"
            stats.parent.mkdir(parents=True, exist_ok=True)
            stats.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
            for it in range(100, 401, 100):
                dead = run == "b" and diverged_b_after is not None and it > diverged_b_after
                write_json(root / "metrics" / run / f"seed{s}" / f"it{it}-n50-mnist16.json",
                           {"fid": None if dead else fid(it, s)})
    return preset


def test_curve_rows_at_equal_iterations_and_wall_clock(tmp_path):
    # a: 100 - it/10 (+seed noise); b: 200 - it/10, twice as slow per iteration.
    preset = _curve_results(tmp_path, lambda it, s: 100 - it / 10 + s,
                            lambda it, s: 200 - it / 10 + s)
    files = cc.curve_files(preset, tmp_path)
    assert len(files) == 2 * 3 * 4 and all(Path(f).is_file() for f in files)
    assert str(tmp_path / "metrics/b/seed2/it300-n50-mnist16.json") in files
    rows = cc.curve_claim_rows(preset, tmp_path)
    its = [r for r in rows if r["clock"] == "iterations"]
    assert [r["point"] for r in its] == [100, 200, 300, 400]
    assert all(r["estimate"] == pytest.approx(-100) for r in its)
    assert all(r["verdict"] == "reproduced" for r in its)
    clock = [r for r in rows if r["clock"] != "iterations"]
    # a's snapshot times are 10, 20, 30, 40 s; b has points at 20, 40, 60, 80 s: 20..40 shared.
    assert [r["point"] for r in clock] == [20.0, 30.0, 40.0]
    # At 30 s b is at iteration 150: FID 185 by interpolation; a at 300: FID 70.
    at30 = clock[1]
    assert at30["a_mean"] == pytest.approx(71) and at30["b_mean"] == pytest.approx(186)
    assert all(r["p_holm"] >= r["p_value"] for r in rows)
    md = cc.curve_markdown(rows)
    assert "Holm" in md and "### C1: A vs B" in md and "7 points: 7 reproduced" in md


def test_curve_points_after_a_divergence_lose_those_seeds(tmp_path):
    preset = _curve_results(tmp_path, lambda it, s: 50 + s, lambda it, s: 60 + s,
                            diverged_b_after=200)
    its = {r["point"]: r for r in cc.curve_claim_rows(preset, tmp_path)
           if r["clock"] == "iterations"}
    assert its[200]["b_n"] == 3 and its[300]["b_n"] == 0
    assert its[300]["verdict"] == "inconclusive" and its[300]["p_value"] is None


def test_holm_turns_a_borderline_point_inconclusive(tmp_path):
    """Small, noisy differences: some points pass at 0.05 alone but not after Holm."""
    noise = {0: -1.0, 1: 0.0, 2: 1.0}
    preset = _curve_results(tmp_path, lambda it, s: 50 + noise[s],
                            lambda it, s: 53.5 + 1.2 * noise[s])
    rows = cc.curve_claim_rows(preset, tmp_path)
    assert any(r["p_value"] < 0.05 for r in rows)
    assert all(r["verdict"] == "inconclusive" for r in rows)


def test_claims_write_the_curve_table(tmp_path):
    preset = _curve_results(tmp_path, lambda it, s: 10 + s, lambda it, s: 20 + s)
    for run in ("a", "b"):
        for s in range(3):
            write_json(tmp_path / "metrics" / run / f"seed{s}" / "k15-n50-mnist16.json",
                       {"fid": (10 if run == "a" else 20) + s})
            write_json(tmp_path / "runs" / run / f"seed{s}" / "final.json",
                       {"iteration": 400, "total": 400, "diverged": False})
    assert set(cc.curve_files(preset, tmp_path)) <= set(cl.claim_files(preset, tmp_path))
    rows = cl.evaluate_claims(preset, tmp_path)
    curve = cc.curve_claim_rows(preset, tmp_path)
    cl.write_claims(rows, tmp_path / "c.csv", tmp_path / "c.md", None, curve,
                    tmp_path / "curve.csv")
    md = (tmp_path / "c.md").read_text()
    assert "## Claims along the learning curve" in md and "**reproduced**" in md
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0].split(",") == cc.CURVE_COLUMNS and len(lines) == len(curve) + 1


# ----------------------------------------------------------------------------- stability
def test_stability_row_counts_finished_and_names_divergences(tmp_path):
    preset = _curve_results(tmp_path, lambda it, s: 10 + s, lambda it, s: 20 + s)
    for run in ("a", "b"):
        for s in range(3):
            final = {"iteration": 400, "total": 400, "diverged": False}
            if run == "b" and s == 1:
                final = {"iteration": 250, "total": 400, "diverged": True, "diverged_at": 250,
                         "last_good_snapshot": 200}
            if run == "b" and s == 2:
                final = {"iteration": 50, "total": 400, "diverged": True, "diverged_at": 50,
                         "last_good_snapshot": None}
            write_json(tmp_path / "runs" / run / f"seed{s}" / "final.json", final)
    rows = cl.stability_rows(preset, tmp_path)
    assert [(r["a"], r["a_mean"], r["a_n"]) for r in rows] == [("A", 3.0, 3), ("B", 1.0, 3)]
    assert "seed 1 diverged at iteration 250, compared at its snapshot of iteration 200" in \
        rows[1]["reason"]
    assert "seed 2 diverged at iteration 50, compared at no snapshot" in rows[1]["reason"]
    md = cl.claims_markdown(rows)
    assert "B: 1 of 3 finished" in md and "**n/a**" in md
    assert "n/a" in cl.claims_html(rows)


# ----------------------------------------------------------------------------- power
@pytest.mark.parametrize("sd, delta, n, expected", [
    # Two-sample t-test power, reference values (G*Power / R power.t.test, two-sided 0.05):
    (1.0, 1.0, 17, 0.8070), (1.0, 0.5, 64, 0.8015), (2.0, 1.0, 10, 0.1851)])
def test_power_matches_reference_tables(sd, delta, n, expected):
    assert power(sd, delta, n) == pytest.approx(expected, abs=2e-3)


def test_power_far_in_the_tail_is_a_number():
    assert power(2.9, 17.0, 4) == pytest.approx(1.0, abs=1e-6)  # SciPy's nct gives NaN here


def test_seeds_needed_is_the_smallest_n_meeting_both_targets():
    plan = seeds_needed(1.0, 1.0)  # d = 1: the textbook 17 per group at 80 % power
    assert plan.n in (16, 17) and plan.by == "power" and plan.power >= 0.8
    assert power(1.0, 1.0, plan.n - 1) < 0.8
    assert seeds_needed(0.01, 1.0).n == 5 and seeds_needed(0.01, 1.0).by == "minimum"
    wide = seeds_needed(1.0, 5.0, max_width=1.0)
    assert wide.by == "width" and ci_width(1.0, wide.n) <= 1.0 < ci_width(1.0, wide.n - 1)
    with pytest.raises(ValueError, match="seeds a side would be needed"):
        seeds_needed(100.0, 0.1, max_n=20)


def test_pooled_sd_and_the_script(capsys):
    assert pooled_sd([1.0, 3.0], [2.0, 6.0]) == pytest.approx(math.sqrt((2 + 8) / 2))
    with pytest.raises(ValueError, match="at least 2"):
        pooled_sd([1.0], [2.0, 3.0])
    mod = load_script("power_seeds")
    assert mod.main(["--a", "45", "47", "--b", "60", "58", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] >= 5 and out["width"] <= 0.1 * 46 and out["power"] >= 0.8
