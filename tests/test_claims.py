"""The claims table: Student t against reference values, the verdict logic on known inputs, each
claim kind's logic, rules read from the preset, the presets against the schema, and the rule
planned by Snakemake."""

import math
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from cdrl.report import claims as cl
from cdrl.report.claim_stats import (
    combine,
    mean_ci,
    paired_ratio,
    ratio,
    t_cdf,
    t_ppf,
    two_group,
    welch,
)
from tests.conftest import ROOT, SNAKEMAKE, subprocess_env, write_json

PRESETS = ["tiny", "smoke", "paper"]


# ----------------------------------------------------------------------------- Student t
@pytest.mark.parametrize("q, df, expected", [
    (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 1, 12.706205), (0.995, 7.5, 3.421423),
    (0.975, 1000, 1.962339), (0.025, 4, -2.776445), (0.5, 3, 0.0)])
def test_t_quantiles_match_tables(q, df, expected):
    assert t_ppf(q, df) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("t, df, p", [  # two-sided p-values (reference: scipy.stats.t.sf)
    (2.0, 10, 0.07338803477), (0.5, 3.3, 0.6485350764), (5.0, 1.5, 0.06537576762)])
def test_two_sided_p_values(t, df, p):
    assert 2 * t_cdf(-t, df) == pytest.approx(p, rel=1e-8)
    assert t_cdf(t, df) + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-14)
    assert t_cdf(-1.2, 2.7) == pytest.approx(0.1623873075, rel=1e-8)


def test_welch_statistic_df_and_p():
    a, b = [1.0, 2.0, 3.5], [4.0, 6.0, 7.1, 8.0]
    diff, se, df, t = welch(a, b)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 4
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 3), rel=1e-9)
    assert (t, df) == (pytest.approx(-3.6454566595, rel=1e-9), pytest.approx(4.9949673043))
    assert 2 * t_cdf(-abs(t), df) == pytest.approx(0.0148447275, rel=1e-7)
    assert diff == pytest.approx(2.1666666667 - 6.275) and se == pytest.approx(math.sqrt(va + vb))


def test_mean_ci_over_seeds():
    mean, low, high, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert high - mean == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    assert mean_ci([5.0]) == (5.0, None, None, 1) and mean_ci([]) == (None, None, None, 0)


def test_against_scipy_when_present():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2.5, 7, 30, 300):
        for q in (0.6, 0.9, 0.975, 0.999):
            assert t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-8)
    a, b = [3.1, 2.7, 3.9, 3.3], [4.4, 5.0, 4.1]
    res = stats.ttest_ind(a, b, equal_var=False)
    test = two_group(a, b, "lower", "welch", 0.05)
    assert test.p_value == pytest.approx(res.pvalue, rel=1e-8)


# ----------------------------------------------------------------------------- verdicts
WIN = ([10.0, 10.5, 11.0], [20.0, 21.0, 19.5])    # a clearly lower (better FID)


@pytest.mark.parametrize("rule", ["welch", "interval"])
def test_clear_win_clear_loss_overlap_one_seed(rule):
    a, b = WIN
    win = two_group(a, b, "lower", rule, 0.05)
    assert win.verdict == "reproduced" and win.high < 0
    assert two_group(b, a, "lower", rule, 0.05).verdict == "not reproduced"
    assert two_group(a, b, "higher", rule, 0.05).verdict == "not reproduced"
    overlap = two_group([10.0, 15.0, 20.0], [12.0, 17.0, 22.0], "lower", rule, 0.05)
    assert overlap.verdict == "inconclusive" and overlap.reason
    one = two_group([10.0], b, "lower", rule, 0.05)
    assert one.verdict == "inconclusive" and "at least 2" in one.reason
    assert one.estimate == pytest.approx(10.0 - sum(b) / 3)


def test_welch_p_at_alpha_decides():
    a, b = [1.0, 2.0, 3.5], [4.0, 6.0, 7.1, 8.0]     # p = 0.0148
    assert two_group(a, b, "lower", "welch", 0.05).verdict == "reproduced"
    assert two_group(a, b, "lower", "welch", 0.01).verdict == "inconclusive"


def test_paired_uses_per_seed_differences():
    a, b = [10.0, 20.0, 30.0], [10.5, 20.6, 30.4]       # unpaired they overlap completely
    assert two_group(a, b, "lower", "welch", 0.05).verdict == "inconclusive"
    assert two_group(a, b, "lower", "paired", 0.05).verdict == "reproduced"


def test_combine_is_a_conjunction():
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "not reproduced"]) == "not reproduced"
    assert combine([]) == "inconclusive"


# ----------------------------------------------------------------------------- claim kinds
def test_speed_ratio():
    fast, slow = [1.0, 1.05, 0.97], [1.9, 2.05, 2.0]
    r = ratio(fast, slow, 1.5, "welch", 0.05)
    assert r.verdict == "reproduced" and r.low > 1.5 and r.estimate == pytest.approx(1.97, abs=0.03)
    assert ratio(fast, [1.1, 1.0, 1.04], 1.5, "welch", 0.05).verdict == "not reproduced"
    assert ratio(fast, [1.0, 2.5, 1.6], 1.5, "welch", 0.05).verdict == "inconclusive"
    assert ratio(fast, slow, 1.5, "interval", 0.05).verdict == "reproduced"
    assert ratio([1.0], slow, 1.5, "welch", 0.05).verdict == "inconclusive"


def test_paired_ratio_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    cdrl = [0.101, 0.097, 0.120, 0.099, 0.104, 0.131, 0.098, 0.102, 0.100, 0.103]
    drl = [0.199, 0.190, 0.251, 0.201, 0.212, 0.240, 0.188, 0.205, 0.199, 0.210]
    logs = [math.log(d / c) for c, d in zip(cdrl, drl, strict=True)]
    for alpha, m in ((0.05, 1.5), (0.01, 1.9), (0.1, 2.0)):
        t = paired_ratio(cdrl, drl, m, alpha)
        low, high = stats.t.interval(1 - alpha, len(logs) - 1, loc=statistics.mean(logs),
                                     scale=stats.sem(logs))
        assert t.estimate == pytest.approx(stats.gmean([math.exp(x) for x in logs]), rel=1e-12)
        assert (t.low, t.high) == (pytest.approx(math.exp(low), rel=1e-9),
                                   pytest.approx(math.exp(high), rel=1e-9))
        assert t.p_value == pytest.approx(stats.ttest_1samp(logs, math.log(m)).pvalue, rel=1e-8)
    assert paired_ratio(cdrl, drl, 1.5, 0.05).verdict == "reproduced"       # [1.92, 2.05]
    assert paired_ratio(cdrl, drl, 2.5, 0.05).verdict == "not reproduced"
    assert paired_ratio(cdrl, drl, 2.0, 0.05).verdict == "inconclusive"
    assert "covers 2" in paired_ratio(cdrl, drl, 2.0, 0.05).reason


def test_paired_ratio_pairs_by_index_and_needs_two_rounds():
    # A load step that slows both methods of a round alike leaves the paired ratio exact;
    # unpaired, the same numbers give a wide interval.
    load = [1.0, 3.0, 1.0, 5.0, 2.0]
    cdrl, drl = [1.0 * x for x in load], [2.0 * x for x in load]
    paired = paired_ratio(cdrl, drl, 1.5, 0.05)
    assert (paired.estimate, paired.low, paired.high) == (pytest.approx(2.0),) * 3
    assert paired.verdict == "reproduced"
    assert ratio(cdrl, drl, 1.5, "welch", 0.05).verdict == "inconclusive"
    one = paired_ratio([1.0], [2.0], 1.5, 0.05)
    assert one.verdict == "inconclusive" and one.estimate == 2.0 and "at least 2" in one.reason
    assert paired_ratio([1.0, None, 1.0], [2.0, 2.0, -1.0], 1.5, 0.05).estimate == 2.0


STEPS = {"reference": 15, "mild": 8, "severe": 3}


def _by_seed(*values):
    return dict(enumerate(values))


def test_steps_shape_paper_like_and_broken():
    paper = {15: _by_seed(4.31, 4.35, 4.28), 8: _by_seed(4.58, 4.60, 4.55),
             3: _by_seed(9.67, 9.9, 9.5)}
    parts = cl.steps_shape_parts(paper, STEPS, 0.25, 0.05)
    assert [p.test.verdict for p in parts] == ["reproduced", "reproduced"]
    assert parts[0].test.estimate == pytest.approx(0.0625, abs=0.01)
    flat = {**paper, 3: _by_seed(4.4, 4.45, 4.3)}          # 3 steps as good as 8: no cliff
    assert cl.steps_shape_parts(flat, STEPS, 0.25, 0.05)[1].test.verdict == "not reproduced"
    cliff = {**paper, 8: _by_seed(8.0, 8.2, 7.9)}           # already broken at 8
    assert cl.steps_shape_parts(cliff, STEPS, 0.25, 0.05)[0].test.verdict == "not reproduced"
    one = {k: {0: v[0]} for k, v in paper.items()}
    assert {p.test.verdict for p in cl.steps_shape_parts(one, STEPS, 0.25, 0.05)} == {
        "inconclusive"}


def test_guidance_monotone_fidelity_and_interior_minimum():
    ws = [0.0, 0.5, 1.0, 3.0]
    acc = {0.0: _by_seed(0.5, 0.52, 0.49), 0.5: _by_seed(0.7, 0.72, 0.71),
           1.0: _by_seed(0.8, 0.81, 0.8), 3.0: _by_seed(0.9, 0.92, 0.91)}
    fid = {0.0: _by_seed(8.3, 8.2, 8.4), 0.5: _by_seed(6.2, 6.3, 6.1),
           1.0: _by_seed(6.7, 6.6, 6.8), 3.0: _by_seed(13.0, 13.1, 12.9)}
    parts = cl.guidance_parts(fid, acc, "class accuracy", "paired", 0.05)
    assert [p.test.verdict for p in parts] == ["reproduced"] * 3
    assert parts[1].a_label == "w = 0.5" and parts[2].b_label == "w = 3"
    dip = {**acc, 1.0: _by_seed(0.6, 0.61, 0.6)}         # rises overall, but not monotonically
    assert cl.guidance_parts(fid, dip, "acc", "paired", 0.05)[0].test.verdict == "inconclusive"
    falls = {w: {s: 1 - v for s, v in acc[w].items()} for w in ws}
    assert cl.guidance_parts(fid, falls, "acc", "paired", 0.05)[0].test.verdict == \
        "not reproduced"
    best_at_zero = {**fid, 0.0: _by_seed(5.0, 5.1, 4.9)}  # no interior minimum
    verdicts = [p.test.verdict for p in cl.guidance_parts(best_at_zero, acc, "acc", "paired",
                                                          0.05)]
    assert verdicts[1] == "not reproduced" and combine(verdicts) == "not reproduced"
    two = cl.guidance_parts({w: fid[w] for w in (0.0, 1.0)}, acc, "acc", "paired", 0.05)
    assert two[1].test.verdict == "inconclusive" and "at least 3" in two[1].test.reason
    # No Inception Score (FID-port weights): null in every metric file, inconclusive.
    no_isc = {w: dict.fromkeys(acc[w]) for w in ws}
    assert cl.guidance_parts(fid, no_isc, "IS", "paired", 0.05)[0].test.verdict == "inconclusive"


# ----------------------------------------------------------------------------- the preset
def _preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "workflow" / "config" / f"{name}.yaml").read_text())


def test_rules_read_from_a_config_dict():
    cfg = {"runs": {"x": {}, "y": {}}, "claims": [
        {"id": "C1", "kind": "compare", "statement": "s", "published": "p", "source": "src",
         "compare": {"a": "x", "b": "y"}, "metric": "fid", "better": "lower", "rule": "welch"}]}
    (spec,) = cl.read_claims(cfg)
    assert spec["alpha"] == 0.05 and spec["compare"] == {"a": "x", "b": "y"}
    bad = [({"rule": "paired"}, "does not fit"), ({"compare": {"a": "x", "b": "z"}}, "'z'"),
           ({"kind": "speed"}, "min_ratio"), ({"kind": "magic"}, "magic")]
    for change, message in bad:
        broken = {**cfg, "claims": [{**cfg["claims"][0], **change}]}
        with pytest.raises(ValueError, match=message):
            cl.read_claims(broken)
    with pytest.raises(ValueError, match="twice"):
        cl.read_claims({**cfg, "claims": cfg["claims"] * 2})


@pytest.mark.parametrize("name", PRESETS)
def test_presets_pass_the_schema_and_name_every_claim(name):
    jsonschema = pytest.importorskip("jsonschema")
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    cfg = _preset(name)
    jsonschema.Draft202012Validator(schema).validate(cfg)
    specs = cl.read_claims(cfg)
    assert [s["id"] for s in specs] == [f"C{i}" for i in range(1, 11)]
    bad = {**cfg, "claims": [{**cfg["claims"][0], "alpah": 0.1}]}
    with pytest.raises(jsonschema.ValidationError, match="alpah"):
        jsonschema.Draft202012Validator(schema).validate(bad)
    wrong_rule = {**cfg, "claims": [{**cfg["claims"][0], "rule": "one_sample"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(wrong_rule)


# ----------------------------------------------------------------------------- from files
def _bench_rounds(ratios: list[float]) -> str:
    """A ``cdrl bench`` rounds file: CDRL 0.1 s per image times a load that changes by round,
    DRL ``ratio`` times that; training rows, which C2 does not read, in between."""
    lines = ["round,method,quantity,seconds,position"]
    for r, q in enumerate(ratios, 1):
        c = 0.1 * (1 + r)
        order = [("cdrl", c), ("drl", q * c)][:: 1 if r % 2 else -1]
        for quantity in ("sampling time per image", "training time per iteration"):
            lines += [f"{r},{m},{quantity},{s!r},{i}" for i, (m, s) in enumerate(order, 1)]
    return "\n".join(lines) + "\n"


def _fake_results(root: Path, seeds: list[int]) -> dict:
    """A preset_json-like dict and per-seed result files: CDRL beats DRL clearly."""
    runs = {r: {"label": label, "dataset": "d", "seeds": seeds, "sample_steps": k, "levels": 6}
            for r, label, k in (("c", "CDRL", 15), ("d", "DRL", 30), ("nv", "CDRL, no VR", 15))}
    preset = {"runs": runs, "evaluation": {"d": {"num_samples": 40, "metrics": {"digits": []}}},
              "tables": {"sampling_steps": {"c": [15, 8, 3], "d": [30, 15]}},
              "downstream": {"ood": {"run": "c", "in_dist": "x", "sets": ["s1", "s2"]},
                             "inpaint": {"run": "c", "masks": ["center"]}},
              "speed": {"b1": {"cdrl_run": "c", "drl_run": "d"}}}
    (root / "speed").mkdir(parents=True)
    (root / "speed" / "b1.csv").write_text("quantity,unit,cdrl,drl\n"
                                           "EBM gradient evaluations per image,count,90,180\n")
    (root / "speed" / "b1.rounds.csv").write_text(_bench_rounds([1.95, 2.05, 2.0, 1.98]))
    fids = {("c", 15): 10, ("c", 8): 10.5, ("c", 3): 20, ("d", 30): 20, ("d", 15): 30,
            ("nv", 15): 10.1}
    secs = {15: 1.0, 8: 0.55, 3: 0.22, 30: 2.0}
    for (run, k), fid in fids.items():
        for s in seeds:
            meta = {"seconds_per_image": secs[k] * (1 + 0.01 * s), "steps": k,
                    "tweedie": run != "d"}
            write_json(root / "metrics" / run / f"seed{s}" / f"k{k}-n40-digits.json",
                       {"fid": fid + 0.3 * s, "provenance": {"samples_meta": meta}})
    for run in runs:
        for s in seeds:
            write_json(root / "runs" / run / f"seed{s}" / "final.json",
                       {"iteration": 100, "total": 100, "diverged": False})
    for s in seeds:
        write_json(root / "downstream" / "ood" / f"c-seed{s}.json",
                   {"sets": {"s1": {"auroc": 0.8 + 0.01 * s}, "s2": {"auroc": 0.55 + 0.01 * s}}})
        fills = {"inpaint": {"mse": 0.1 + 0.01 * s}, "baseline_known_mean": {"mse": 0.3},
                 "baseline_dataset_mean": {"mse": 0.5 - 0.01 * s}}
        write_json(root / "downstream" / "inpaint" / f"c-seed{s}.json",
                   {"masks": {"center": fills}})
    return preset


def _claims(**kinds) -> list[dict]:
    base = {"statement": "s", "published": "p", "source": "arXiv 2309.05153, Table 1",
            "alpha": 0.05}
    return [{"id": f"C{i}", **base, **spec} for i, spec in enumerate(kinds.values(), 1)]


CLAIMS = _claims(
    fid={"kind": "compare", "compare": {"a": "c", "b": "d"}, "metric": "fid", "better": "lower",
         "rule": "welch"},
    speed={"kind": "speed", "compare": {"a": "c", "b": "d"}, "min_ratio": 1.5, "rule": "welch",
           "speed_case": "b1"},
    time={"kind": "equal_time", "compare": {"a": "c", "b": "d"}, "metric": "fid",
          "better": "lower", "rule": "welch"},
    schedule={"kind": "compare", "metric": "fid", "better": "lower", "rule": "welch"},
    vr={"kind": "compare", "compare": {"a": "c", "b": "nv"}, "metric": "fid", "better": "lower",
        "rule": "welch"},
    steps={"kind": "steps_shape", "run": "c", "steps": STEPS, "max_mild": 0.25,
           "rule": "paired"},
    guidance={"kind": "guidance", "fidelity": "class_accuracy", "rule": "paired"},
    ood={"kind": "ood", "threshold": 0.5, "rule": "one_sample"},
    compose={"kind": "compose", "rule": "paired"},
    inpaint={"kind": "inpaint", "metric": "mse", "rule": "paired"})


def test_claims_from_result_files(tmp_path):
    preset = {**_fake_results(tmp_path, [0, 1, 2]), "claims": CLAIMS}
    files = cl.claim_files(preset, tmp_path)
    assert str(tmp_path / "metrics/d/seed2/k15-n40-digits.json") in files
    assert str(tmp_path / "downstream/ood/c-seed1.json") in files
    assert all(Path(f).is_file() for f in files)
    rows = cl.evaluate_claims(preset, tmp_path)
    verdict = {r["claim"]: r["verdict"] for r in rows}
    assert verdict == {"stability": "n/a", "C1": "reproduced", "C2": "reproduced", "C3": "reproduced",
                       "C4": "inconclusive", "C5": "inconclusive", "C6": "reproduced",
                       "C7": "inconclusive", "C8": "reproduced", "C9": "inconclusive",
                       "C10": "reproduced"}
    by = {(r["claim"], r["part"]): r for r in rows}
    assert by[("C4", 1)]["reason"] == cl.NO_DATA and by[("C7", 1)]["reason"] == cl.NO_DATA
    assert by[("C2", 1)]["estimate"] == 2.0 and "cdrl bench" in by[("C2", 1)]["reason"]
    assert str(tmp_path / "speed/b1.csv") in files
    assert str(tmp_path / "speed/b1.rounds.csv") in files
    no_bench = cl.evaluate_claims({**preset, "speed": {}}, tmp_path)
    assert no_bench[1]["estimate"] == pytest.approx(180 / 91)  # T*K (+1) from the sample files
    assert by[("C1", 1)]["a_n"] == 3 and by[("C1", 1)]["a_mean"] == pytest.approx(10.3)
    assert "CDRL K = 15" in by[("C3", 1)]["quantity"] and "DRL K = 15" in by[("C3", 1)]["quantity"]
    assert "DRL K = 30" in by[("C3", 2)]["quantity"]
    assert len([r for r in rows if r["claim"] == "C10"]) == 2            # two trivial fills
    cl.write_claims(rows, tmp_path / "claims.csv", tmp_path / "claims.md",
                    tmp_path / "claims.html")
    md = (tmp_path / "claims.md").read_text()
    assert md.count("\n| C") == 10 and "**reproduced**" in md and "no data in this preset" in md
    assert "arXiv 2309.05153" in md and "n = 3" in md
    csv_lines = (tmp_path / "claims.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == cl.COLUMNS and len(csv_lines) == len(rows) + 1
    assert "<table>" in (tmp_path / "claims.html").read_text()


def test_speed_seconds_from_the_bench_paired_rounds(tmp_path):
    preset = {**_fake_results(tmp_path, [0, 1, 2]), "claims": CLAIMS}
    rows = [r for r in cl.evaluate_claims(preset, tmp_path) if r["claim"] == "C2"]
    secs = rows[1]
    assert "4 paired rounds" in secs["quantity"] and secs["a_n"] == secs["b_n"] == 4
    assert secs["estimate"] == pytest.approx(statistics.geometric_mean([1.95, 2.05, 2.0, 1.98]))
    assert secs["effect_low"] > 1.5 and secs["part_verdict"] == "reproduced"
    assert "paired rounds" in secs["decision"] and "log(1.5)" in secs["decision"]
    # Rounds whose interval covers min_ratio are inconclusive; wholly below, not reproduced.
    for ratios, verdict in (([1.2, 2.4, 1.3, 2.2], "inconclusive"),
                            ([1.1, 1.2, 1.15, 1.12], "not reproduced")):
        (tmp_path / "speed" / "b1.rounds.csv").write_text(_bench_rounds(ratios))
        row = [r for r in cl.evaluate_claims(preset, tmp_path) if r["claim"] == "C2"][1]
        assert row["part_verdict"] == verdict, ratios


def test_speed_without_bench_rounds_falls_back_to_the_seeds(tmp_path):
    preset = {**_fake_results(tmp_path, [0, 1, 2]), "claims": CLAIMS}
    (tmp_path / "speed" / "b1.rounds.csv").unlink()
    secs = [r for r in cl.evaluate_claims(preset, tmp_path) if r["claim"] == "C2"][1]
    assert secs["a_n"] == 3 and secs["part_verdict"] == "reproduced"      # Welch over seeds
    assert secs["reason"].startswith("no cdrl bench rounds (") and "missing" in secs["reason"]
    assert "Welch t-test on log seconds" in secs["reason"]
    no_case = [r for r in cl.evaluate_claims({**preset, "speed": {}}, tmp_path)
               if r["claim"] == "C2"][1]
    assert no_case["reason"].startswith("no cdrl bench case")


def test_one_seed_is_inconclusive_everywhere(tmp_path):
    """Everywhere but C2, whose counts are exact and whose seconds come from the bench's rounds,
    not from seeds."""
    preset = {**_fake_results(tmp_path, [0]), "claims": CLAIMS}
    rows = cl.evaluate_claims(preset, tmp_path)
    assert {r["verdict"] for r in rows if r["claim"] not in ("C2", cl.STABILITY)} == {"inconclusive"}
    assert {r["part_verdict"] for r in rows if r["claim"] == "C2"} == {"reproduced"}
    (tmp_path / "speed" / "b1.rounds.csv").unlink()
    c2 = [r for r in cl.evaluate_claims(preset, tmp_path) if r["claim"] == "C2"]
    assert [r["part_verdict"] for r in c2] == ["reproduced", "inconclusive"]


# ----------------------------------------------------------------------------- workflow
@pytest.mark.slow
def test_the_rule_is_planned(tmp_path):
    """Dry run of the tiny preset asking for the claims table, in a scratch working directory
    (claims.smk included by the Snakefile, or by a wrapper beside it until it is)."""
    snakefile = ROOT / "Snakefile"
    if "claims.smk" not in snakefile.read_text():
        wrapper = tmp_path / "Snakefile"
        wrapper.write_text(f'include: "{snakefile}"\n'
                           f'include: "{ROOT / "workflow" / "rules" / "claims.smk"}"\n')
        snakefile = wrapper
    work = tmp_path / "work"
    work.mkdir()
    (work / "workflow").symlink_to(ROOT / "workflow")
    cfg = {**_preset("tiny"), "experiments_dir": str(ROOT / "workflow" / "config" / "experiments")}
    (work / "test.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(snakefile), "-d", str(work), "-n",
         "--cores", "1", "results/tables/claims.md", "--configfile", str(work / "test.yaml")],
        capture_output=True, text=True, timeout=300, env=subprocess_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "localrule claims:" in out or "rule claims:" in out
    assert "results/downstream/ood/digits_cdrl-seed0.json" in out
