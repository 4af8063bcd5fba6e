"""The paper's claims (C1 ... C10), each judged from the per-seed results by a rule fixed in the
preset before the runs: ``results/tables/claims.{csv,md}``, the first section of the report.

    snakemake --cores 2 results/tables/claims.md        # rule claims, workflow/rules/claims.smk

The preset's ``claims:`` list (workflow/schemas/config.schema.yaml) says, per claim, which runs
play which part (CDRL, DRL, CDRL with DRL's schedule, ...), the metric, the better direction, the
rule and alpha. A claim whose runs or results the preset lacks is ``inconclusive`` ("no data in
this preset"), never an error; a claim naming a run the preset does not define is an error.

Statistics are over training seeds: one value per seed, a run's downstream tasks run on each of
its seeds (cdrl.report.claim_stats has the tests and the verdict logic). Rules: ``welch`` (Welch's
t-interval of ``mean(a) - mean(b)``, independent runs), ``paired`` (t-interval of per-seed
differences: one trained model per seed measured two ways, e.g. two step counts or guidance
weights), ``one_sample`` (one group's mean against a threshold, C8's AUROC vs 0.5) and
``interval`` (each side's (1 - alpha) t-interval; no overlap needed). C2's seconds come from the
paired rounds of ``cdrl bench`` (its ``speed_case``, ``results/speed/<case>.rounds.csv``): the
geometric mean of the per-round DRL/CDRL ratios, tested by a one-sample t-test of the log ratios
against ``log(min_ratio)`` (``claim_stats.paired_ratio``; n = rounds). Without that file they
fall back to the sampling jobs' own timings over seeds, Welch on log seconds, which other jobs
may have disturbed. Exact counts (EBM gradient evaluations per image) are compared as they are.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from cdrl.report.claim_stats import (
    Test,
    combine,
    mean_ci,
    one_group,
    paired_ratio,
    ratio,
    two_group,
)
from cdrl.report.render import fmt

__all__ = ["landing_html", "Part", "steps_shape_parts", "guidance_parts", "read_claims",
           "claim_files", "evaluate_claims", "claims_markdown", "claims_html", "write_claims",
           "KINDS", "RULES", "COLUMNS"]
NO_DATA = "no data in this preset"
# Kind -> the rules it accepts and the claim fields it needs.
KINDS = {"compare": ({"welch", "interval"}, ("metric", "better")),
         "speed": ({"welch", "interval"}, ("min_ratio",)),
         "equal_time": ({"welch", "interval"}, ("metric", "better")),
         "steps_shape": ({"paired", "interval"}, ("steps", "max_mild")),
         "guidance": ({"paired", "welch", "interval"}, ("fidelity",)),
         "ood": ({"one_sample", "interval"}, ("threshold",)),
         "compose": ({"paired", "welch", "interval"}, ()),
         "inpaint": ({"paired", "welch", "interval"}, ("metric",))}
RULES = {"welch": "Welch t-test", "paired": "paired t-test over seeds",
         "one_sample": "one-sample t-test", "interval": "(1 - alpha) intervals do not overlap"}


# ------------------------------------------------------------------------- parts of claims
@dataclass
class Part:
    """One tested comparison of a claim: one CSV row."""
    quantity: str
    a_label: str
    a_values: list = field(default_factory=list)
    b_label: str = ""
    b_values: list = field(default_factory=list)
    effect: str = ""
    threshold: float | None = None
    test: Test = field(default_factory=Test)


def _no_data(reason: str = NO_DATA) -> list[Part]:
    return [Part("", "", test=Test(reason=reason))]


def steps_shape_parts(fid: dict, steps: dict, max_mild: float, alpha: float) -> list[Part]:
    """C6: per seed, the relative FID increase from the reference steps; at ``mild`` steps it
    stays below ``max_mild`` ("a little"), at ``severe`` steps it exceeds it ("clearly more").
    ``fid``: steps -> {seed: FID}. One group per part, so ``paired`` and ``interval`` agree."""
    ref = fid[steps["reference"]]
    parts = []
    for key, better in (("mild", "lower"), ("severe", "higher")):
        k, other = steps[key], fid[steps[key]]
        seeds = [s for s in ref if s in other]
        rel = [other[s] / ref[s] - 1.0 for s in seeds]
        parts.append(Part(f"relative FID increase, K = {steps['reference']} -> {k}",
                          f"K = {k}", [other[s] for s in seeds], f"K = {steps['reference']}",
                          [ref[s] for s in seeds], "FID(K) / FID(reference) - 1", max_mild,
                          one_group(rel, max_mild, better, alpha)))
    return parts


def guidance_parts(fid: dict, fidelity: dict, fidelity_name: str, rule: str, alpha: float
                   ) -> list[Part]:
    """C7: fidelity rises from the smallest to the largest w (and its means never fall), and FID
    has an interior minimum: the best interior w beats both ends. ``fid``, ``fidelity``:
    w -> {seed: value}."""
    ws = sorted(fid)

    def pair(x: dict, y: dict):
        seeds = [s for s in x if s in y]
        return [x[s] for s in seeds], [y[s] for s in seeds]

    lo, hi = ws[0], ws[-1]
    a, b = pair(fidelity[hi], fidelity[lo])
    test = two_group(a, b, "higher", rule, alpha)
    # A fidelity the metric files give as null (the Inception Score without a classifier head)
    # is no data: the test above is then inconclusive.
    present = [[v for v in fidelity[w].values() if v is not None] for w in ws]
    means = [sum(v) / len(v) for v in present if v]
    falls = any(later < earlier for earlier, later in zip(means[:-1], means[1:], strict=True))
    if test.verdict == "reproduced" and falls:
        test.verdict, test.reason = "inconclusive", "means not monotone in w"
    parts = [Part(fidelity_name, f"w = {hi:g}", a, f"w = {lo:g}", b, "difference", 0.0, test)]
    if len(ws) < 3:
        return parts + [Part("FID", "interior w", test=Test(
            reason=f"{len(ws)} guidance weights: an interior minimum needs at least 3"))]
    best = min(ws[1:-1], key=lambda w: sum(fid[w].values()) / max(len(fid[w]), 1))
    for end in (lo, hi):
        a, b = pair(fid[best], fid[end])
        parts.append(Part("FID", f"w = {best:g}", a, f"w = {end:g}", b, "difference", 0.0,
                          two_group(a, b, "lower", rule, alpha)))
    return parts


# ------------------------------------------------------------------------- the preset's claims
def read_claims(preset: dict) -> list[dict]:
    """The preset's ``claims:`` with defaults filled in; a rule that does not fit its kind, a
    missing field or an undefined run is an error naming the claim."""
    out, seen = [], set()
    for raw in preset.get("claims", []):
        spec = {"alpha": 0.05, **raw}
        cid, kind, rule = spec["id"], spec["kind"], spec["rule"]
        if cid in seen:
            raise ValueError(f"claims: id {cid!r} appears twice")
        seen.add(cid)
        if kind not in KINDS:
            raise ValueError(f"claims.{cid}: kind {kind!r} is not one of {sorted(KINDS)}")
        rules, needed = KINDS[kind]
        if rule not in rules:
            raise ValueError(f"claims.{cid}: rule {rule!r} does not fit kind {kind!r} "
                             f"(use one of {sorted(rules)})")
        missing = [k for k in needed if k not in spec]
        if missing:
            raise ValueError(f"claims.{cid}: kind {kind!r} needs {', '.join(missing)}")
        for run in [*spec.get("compare", {}).values(), spec.get("run")]:
            if run is not None and run not in preset["runs"]:
                raise ValueError(f"claims.{cid}: run {run!r} is not defined under 'runs:'")
        out.append(spec)
    return out


METRICS = {"fid": "FID", "kid_mean": "KID", "isc_mean": "IS", "class_accuracy": "class accuracy",
           "confident_share": "share classified with p >= 0.9",
           "psnr": "PSNR (dB)", "mse": "MSE"}
EXTRACTORS = {"inception": "Inception", "digits": "digits CNN", "mnist": "MNIST CNN",
              "mnist16": "MNIST CNN 16x16"}


def _label(preset: dict, run: str) -> str:
    return preset["runs"][run].get("label", run)


def _eval(preset: dict, run: str, extractor: str | None) -> tuple[str, int] | None:
    """(extractor, number of samples) of a run's metric files, or None if not evaluated so."""
    ev = preset["evaluation"].get(preset["runs"][run]["dataset"])
    if ev is None:
        return None
    ex = extractor or next(iter(ev["metrics"]))
    if ex in ev["metrics"]:
        return ex, ev["num_samples"]
    if ex in ev.get("headline_metrics", {}):
        return ex, ev.get("headline_num_samples", ev["num_samples"])
    return None


def _metric_paths(preset: dict, root: Path, run: str, k: int, ex: str, n: int) -> dict:
    return {s: root / "metrics" / run / f"seed{s}" / f"k{k}-n{n}-{ex}.json"
            for s in preset["runs"][run]["seeds"]}


def _plan_runs(spec: dict, preset: dict, root: Path, steps_of) -> dict | str:
    """Metric files of runs ``a`` and ``b`` at the steps ``steps_of(run)`` lists."""
    pair = spec.get("compare", {})
    if not {"a", "b"} <= set(pair):
        return NO_DATA
    plan = {}
    for side, run in pair.items():
        ev, ks = _eval(preset, run, spec.get("extractor")), steps_of(run)
        if ev is None or not ks:
            return NO_DATA
        plan[side] = {k: _metric_paths(preset, root, run, k, *ev) for k in ks}
    plan["quantity"] = f"{METRICS.get(spec.get('metric', 'fid'))} ({EXTRACTORS[ev[0]]}, " \
                       f"{ev[1]} samples)"
    return plan


def _downstream(preset: dict, root: Path, task: str) -> dict | str:
    d = preset.get("downstream", {}).get(task)
    if d is None:
        return NO_DATA
    return {**d, "files": {
        s: root / "downstream" / task / f"{d['run']}-seed{s}.json"
        for s in preset["runs"][d["run"]]["seeds"]}}


def _plan(spec: dict, preset: dict, root: Path) -> dict | str:
    """Every result file a claim reads (nested dicts of paths), or the reason it has none."""
    kind = spec["kind"]
    sweeps = preset["tables"].get("sampling_steps", {})
    if kind in ("compare", "speed"):
        plan = _plan_runs(spec, preset, root, lambda r: [preset["runs"][r]["sample_steps"]])
        case = spec.get("speed_case")
        if isinstance(plan, dict) and case in preset.get("speed", {}):
            plan["bench"] = root / "speed" / f"{case}.csv"
            plan["bench_rounds"] = root / "speed" / f"{case}.rounds.csv"
        return plan
    if kind == "equal_time":
        return _plan_runs(spec, preset, root, lambda r: sweeps.get(r, []))
    if kind == "steps_shape":
        run = spec.get("run")
        ks = sorted(set(spec["steps"].values()))
        if run is None or not set(ks) <= set(sweeps.get(run, [])):
            return NO_DATA
        ex, n = _eval(preset, run, spec.get("extractor")) or (None, None)
        return NO_DATA if ex is None else {"fid": {k: _metric_paths(preset, root, run, k, ex, n)
                                                   for k in ks}}
    if kind == "guidance":
        g = preset.get("downstream", {}).get("guidance")
        if g is None or (spec["fidelity"] == "class_accuracy" and not g.get("class_accuracy")):
            return NO_DATA
        ex = _eval(preset, g["run"], spec.get("extractor"))
        if ex is None:
            return NO_DATA
        fidelity = "accuracy" if spec["fidelity"] == "class_accuracy" else ex[0]

        def files(w: float, what: str) -> dict:
            return {s: root / "metrics" / g["run"] / f"seed{s}" /
                    f"guided-w{w:g}-n{g['num_samples']}-{what}.json"
                    for s in preset["runs"][g["run"]]["seeds"]}

        return {"fid": {w: files(w, ex[0]) for w in g["weights"]},
                "fidelity": {w: files(w, fidelity) for w in g["weights"]}}
    return _downstream(preset, root, kind)


def _paths(node) -> list[Path]:
    if isinstance(node, Path):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _paths(v)]
    return []


def _stability_runs(preset: dict) -> list[str]:
    """The runs the compare, speed and equal-time claims set against each other, in order."""
    runs = [r for spec in read_claims(preset) if spec["kind"] in ("compare", "speed", "equal_time")
            for r in (spec.get("compare", {}).get("a"), spec.get("compare", {}).get("b"))
            if r is not None]
    return list(dict.fromkeys(runs))


def _final_files(preset: dict, root: Path, run: str) -> dict:
    return {s: root / "runs" / run / f"seed{s}" / "final.json" for s in preset["runs"][run]["seeds"]}


def claim_files(preset: dict, root: Path = Path("results")) -> list[str]:
    """Every file the claims read (the rule's inputs), sorted."""
    from cdrl.report.claim_curves import curve_files

    plans = [_plan(spec, preset, root) for spec in read_claims(preset)]
    files = {str(p) for plan in plans if isinstance(plan, dict) for p in _paths(plan)}
    files |= {str(p) for run in _stability_runs(preset)
              for p in _final_files(preset, root, run).values()}
    return sorted(files | set(curve_files(preset, root)))


# ------------------------------------------------------------------------- judging
def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _values(paths: dict, key) -> dict:
    """seed -> ``key(json)`` (or ``json[key]``) for the seeds whose file exists."""
    out = {}
    for seed, path in paths.items():
        data = _read(path)
        if data is not None:
            out[seed] = key(data) if callable(key) else data.get(key)
    return out


def _aligned(a: dict, b: dict) -> tuple[list, list]:
    seeds = [s for s in a if s in b]
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _seconds(d: dict):
    return d["provenance"]["samples_meta"]["seconds_per_image"]


def _judge_compare(spec, plan, preset) -> list[Part]:
    a, b = spec["compare"]["a"], spec["compare"]["b"]
    va = _values(next(iter(plan["a"].values())), spec["metric"])
    vb = _values(next(iter(plan["b"].values())), spec["metric"])
    return [Part(plan["quantity"], _label(preset, a), list(va.values()), _label(preset, b),
                 list(vb.values()), f"difference {_label(preset, a)} - {_label(preset, b)}", 0.0,
                 two_group(list(va.values()), list(vb.values()), spec["better"], spec["rule"],
                           spec["alpha"]))]


def _count(paths: dict, levels: int) -> float | None:
    """EBM gradient evaluations per image of a sample file: T*K (+1 for the Tweedie step)."""
    meta = next(iter(_values(paths, lambda d: d["provenance"]["samples_meta"]).values()), None)
    return None if meta is None else levels * meta["steps"] + int(bool(meta.get("tweedie")))


def _bench_rounds(path: Path) -> tuple[list[float], list[float]] | None:
    """Per-round sampling seconds per image (CDRL, DRL), aligned by round, from a
    ``cdrl bench`` rounds file; None if there is none."""
    if not path.is_file():
        return None
    by_round: dict[str, dict[str, float]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            if r["quantity"] == "sampling time per image":
                by_round.setdefault(r["round"], {})[r["method"]] = float(r["seconds"])
    pairs = [(v["cdrl"], v["drl"]) for v in by_round.values() if {"cdrl", "drl"} <= set(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _judge_speed(spec, plan, preset) -> list[Part]:
    """C2: exact EBM gradient counts (from ``cdrl bench`` when the claim names a bench case,
    else T*K (+1) from the sample files), and sampling seconds per image: the bench's paired
    rounds (``paired_ratio``), else, with a reason saying so, Welch on the per-seed seconds
    the sampling jobs logged."""
    a, b = spec["compare"]["a"], spec["compare"]["b"]
    la, lb = _label(preset, a), _label(preset, b)
    pa, pb = next(iter(plan["a"].values())), next(iter(plan["b"].values()))
    counts = (_count(pa, preset["runs"][a]["levels"]), _count(pb, preset["runs"][b]["levels"]))
    source = "from the sample files: T*K (+1 Tweedie)"
    if "bench" in plan:
        path = plan["bench"]
        rows = {r["quantity"]: r for r in csv.DictReader(path.open())} if path.is_file() else {}
        row = rows.get("EBM gradient evaluations per image")
        counts = (float(row["cdrl"]), float(row["drl"])) if row else (None, None)
        source = f"counted by cdrl bench, case {spec['speed_case']}"
    m = spec["min_ratio"]
    if None in counts:
        exact = Test(reason="no gradient counts")
    else:
        r = counts[1] / counts[0]
        exact = Test(r, r, r, None, "reproduced" if r >= m else "not reproduced",
                     f"exact counts, {source}")
    parts = [Part("EBM gradient evaluations per image", la, [counts[0]], lb, [counts[1]],
                  f"ratio {lb} / {la}", m, exact)]
    rounds = _bench_rounds(plan["bench_rounds"]) if "bench_rounds" in plan else None
    if rounds is not None:
        sa, sb = rounds
        test = paired_ratio(sa, sb, m, spec["alpha"])
        return parts + [Part(f"sampling seconds per image, cdrl bench case {spec['speed_case']}, "
                             f"{len(sa)} paired rounds", la, sa, lb, sb,
                             f"geometric mean of per-round ratios {lb} / {la}", m, test)]
    sa, sb = _values(pa, _seconds), _values(pb, _seconds)
    test = ratio(list(sa.values()), list(sb.values()), m, spec["rule"], spec["alpha"])
    missing = (f"no cdrl bench rounds ({plan['bench_rounds']} missing)" if "bench_rounds" in plan
               else "no cdrl bench case (speed_case)")
    test.reason = (f"{missing}: the sampling jobs' own timings over seeds, "
                   f"{RULES[spec['rule']]} on log seconds" + (f"; {test.reason}" if test.reason
                                                              else ""))
    return parts + [Part("sampling seconds per image", la, list(sa.values()), lb,
                         list(sb.values()), f"ratio {lb} / {la}", m, test)]


def _mean(values: dict) -> float:
    return sum(values.values()) / len(values) if values else math.inf


def _judge_equal_time(spec, plan, preset) -> list[Part]:
    """For each of ``b``'s step counts, ``a`` at the most steps that take no longer (mean
    seconds per image), FID against FID."""
    la, lb = (_label(preset, spec["compare"][s]) for s in "ab")
    sweep = {side: {k: (_values(p, spec["metric"]), _values(p, _seconds))
                    for k, p in plan[side].items()} for side in "ab"}
    parts = []
    for kb, (fb, tb) in sorted(sweep["b"].items()):
        fits = [(_mean(t), k) for k, (_f, t) in sweep["a"].items() if _mean(t) <= _mean(tb)]
        if not fits:
            continue
        ka = max(fits)[1]
        fa, ta = sweep["a"][ka]
        parts.append(Part(f"{plan['quantity']}, {la} K = {ka} ({_mean(ta):.3g} s/image) vs "
                          f"{lb} K = {kb} ({_mean(tb):.3g} s/image)", f"{la} K = {ka}",
                          list(fa.values()), f"{lb} K = {kb}", list(fb.values()),
                          f"difference {la} - {lb}", 0.0,
                          two_group(list(fa.values()), list(fb.values()), spec["better"],
                                    spec["rule"], spec["alpha"])))
    return parts or _no_data(f"no {la} setting samples as fast as any {lb} setting")


def _null_reason(paths: dict, key: str) -> str | None:
    """Why ``key`` is null in every metric file that exists (the Inception Score of weights
    without a classifier, a diverged run), or None when some file has a value or none exists."""
    data = [d for by_seed in paths.values() for p in by_seed.values()
            if (d := _read(p)) is not None]
    if not data or any(d.get(key) is not None for d in data):
        return None
    d = data[0]
    why = d.get("unavailable", {}).get(key.split("_")[0]) or d.get("reason") or "no value"
    return f"{METRICS.get(key, key)} is null in every metric file: {why}"


def _judge_downstream(spec, plan) -> list[Part]:
    """C8 (AUROC per OOD set), C9 (composition vs each condition alone), C10 (inpainting vs each
    trivial fill, per mask), from one JSON per seed."""
    data = {s: d for s, p in plan["files"].items() if (d := _read(p)) is not None}
    rule, alpha, kind = spec["rule"], spec["alpha"], spec["kind"]
    parts = []
    if kind == "ood":
        for name in plan["sets"]:
            v = [d["sets"][name]["auroc"] for d in data.values()]
            parts.append(Part(f"AUROC, {plan['in_dist']} vs {name}", name, v,
                              threshold=spec["threshold"],
                              test=one_group(v, spec["threshold"], "higher", alpha)))
    elif kind == "compose":
        # "settings": per sampling setting, the share of samples that carry all conditions
        # (cdrl compose-score: half-planes on the toy, the attribute CNN on CelebA).
        if not all("settings" in d for d in data.values()) or not data:
            return _no_data("no fractions in the composition results (images scored without "
                            "an attribute classifier: qualitative samples only)")
        for cond in plan["conditions"]:
            a, b = _aligned(*({s: d["settings"][k]["frac_intersection"] for s, d in data.items()}
                              for k in ("composed", cond)))
            parts.append(Part("fraction satisfying all conditions", "composed", a,
                              f"{cond} alone", b, "difference", 0.0,
                              two_group(a, b, "higher", rule, alpha)))
    else:
        metric = spec["metric"]
        for mask in plan["masks"]:
            for fill in ("known_mean", "dataset_mean"):
                a, b = _aligned(*({s: d["masks"][mask][k][metric] for s, d in data.items()}
                                  for k in ("inpaint", f"baseline_{fill}")))
                parts.append(Part(f"{METRICS[metric]}, {mask} mask", "inpainted", a,
                                  f"{fill} fill", b, "difference", 0.0,
                                  two_group(a, b, "higher" if metric == "psnr" else "lower",
                                            rule, alpha)))
    return parts


def _judge(spec: dict, preset: dict, root: Path) -> list[Part]:
    plan = _plan(spec, preset, root)
    if isinstance(plan, str):
        return _no_data(plan)
    kind = spec["kind"]
    if kind == "compare":
        return _judge_compare(spec, plan, preset)
    if kind == "speed":
        return _judge_speed(spec, plan, preset)
    if kind == "equal_time":
        return _judge_equal_time(spec, plan, preset)
    if kind == "steps_shape":
        fid = {k: _values(p, "fid") for k, p in plan["fid"].items()}
        return steps_shape_parts(fid, spec["steps"], spec["max_mild"], spec["alpha"])
    if kind == "guidance":
        fid = {w: _values(p, "fid") for w, p in plan["fid"].items()}
        fidelity = {w: _values(p, spec["fidelity"]) for w, p in plan["fidelity"].items()}
        parts = guidance_parts(fid, fidelity, METRICS[spec["fidelity"]], spec["rule"],
                               spec["alpha"])
        why = _null_reason(plan["fidelity"], spec["fidelity"])
        if why and parts[0].test.verdict == "inconclusive":
            parts[0].test.reason = why
        return parts
    return _judge_downstream(spec, plan)


def _speed_rule_text(spec: dict) -> str:
    """C2 with a bench case: its seconds are tested on the bench's paired rounds, and ``rule``
    applies only to the fallback over seeds."""
    return (f"paired rounds of cdrl bench (case {spec['speed_case']}): one-sample t-test of the "
            f"per-round log(DRL / CDRL) against log({spec['min_ratio']:g}), n = rounds, alpha = "
            f"{spec['alpha']:g}; exact counts: ratio >= {spec['min_ratio']:g}; without the "
            f"bench's rounds, {RULES[spec['rule']]} on log seconds over seeds")


def _rule_text(spec: dict) -> str:
    if spec["kind"] == "speed" and "speed_case" in spec:
        return _speed_rule_text(spec)
    text = f"{RULES[spec['rule']]}, alpha = {spec['alpha']:g}"
    extra = {"compare": lambda: f"{spec['better']} {METRICS[spec['metric']]} is better",
             "equal_time": lambda: f"{spec['better']} {METRICS[spec['metric']]} at no more "
                                   "seconds per image",
             "speed": lambda: f"ratio >= {spec['min_ratio']:g}",
             "steps_shape": lambda: f"relative FID increase below {spec['max_mild']:g} at K = "
                                    f"{spec['steps']['mild']}, above at K = "
                                    f"{spec['steps']['severe']}",
             "guidance": lambda: f"{METRICS[spec['fidelity']]} higher at the largest w; FID lower"
                                 " at the best interior w than at both ends",
             "ood": lambda: f"AUROC above {spec['threshold']:g} on every set",
             "compose": lambda: "composed higher than each condition alone",
             "inpaint": lambda: f"{METRICS[spec['metric']]} better than each trivial fill"}
    return f"{text}; {extra[spec['kind']]()}"


COLUMNS = ["claim", "part", "statement", "published", "source", "quantity", "a", "a_mean",
           "a_low", "a_high", "a_n", "b", "b_mean", "b_low", "b_high", "b_n", "effect",
           "estimate", "effect_low", "effect_high", "threshold", "rule", "decision", "alpha",
           "p_value", "part_verdict", "verdict", "reason"]


def evaluate_claims(preset: dict, root: Path = Path("results")) -> list[dict]:
    """One row per tested part of each claim (long form), with the claim's verdict on each."""
    rows = []
    for spec in read_claims(preset):
        parts = _judge(spec, preset, root)
        verdict = combine([p.test.verdict for p in parts])
        for i, p in enumerate(parts, 1):
            a, b = mean_ci(p.a_values), mean_ci(p.b_values)
            t = p.test
            rows.append(dict(zip(COLUMNS, [
                spec["id"], i, spec["statement"], spec["published"], spec["source"], p.quantity,
                p.a_label, *a, p.b_label, *b, p.effect, t.estimate, t.low, t.high, p.threshold,
                spec["rule"], _rule_text(spec), spec["alpha"], t.p_value, t.verdict, verdict,
                t.reason],
                strict=True)))
    return rows + stability_rows(preset, root)


STABILITY = "stability"
STABILITY_STATEMENT = "Training runs that finished out of runs started (not a claim of the paper)"
STABILITY_RULE = ("a run finished unless its final.json says it diverged (cdrl train "
                  "--on-divergence record); a diverged run is compared at its last good snapshot,"
                  " the newest before the divergence, and without one it has no value")


def stability_rows(preset: dict, root: Path = Path("results")) -> list[dict]:
    """One row per run that a claim compares: seeds whose training finished out of those
    started (a ``final.json`` that exists), and where the others diverged."""
    rows = []
    for i, run in enumerate(_stability_runs(preset), 1):
        finals = {s: d for s, p in _final_files(preset, root, run).items()
                  if (d := _read(p)) is not None}
        diverged = {s: d for s, d in finals.items() if d.get("diverged")}
        done = len(finals) - len(diverged)
        notes = "; ".join(f"seed {s} diverged at iteration {d.get('diverged_at')}, compared at "
                          + (f"its snapshot of iteration {d['last_good_snapshot']}"
                             if d.get("last_good_snapshot") is not None else "no snapshot")
                          for s, d in sorted(diverged.items()))
        row = dict.fromkeys(COLUMNS)
        row.update(claim=STABILITY, part=i, statement=STABILITY_STATEMENT, published="",
                   source="", quantity="runs finished / started", a=_label(preset, run),
                   a_mean=float(done), a_n=len(finals), estimate=done / len(finals) if finals
                   else None, effect="share finished", rule="count", decision=STABILITY_RULE,
                   part_verdict="n/a", verdict="n/a", reason=notes)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------- writers
def _side_text(label, mean, low, high, n) -> str:
    if mean is None:
        return f"{label}: no result"
    ci = f" [{fmt(low)}, {fmt(high)}]" if low is not None else ""
    return f"{label} {fmt(mean)}{ci}, n = {n}"


def _evidence(r: dict) -> str:
    if r["claim"] == STABILITY:
        text = f"{r['a']}: {fmt(r['a_mean'])} of {r['a_n']} finished"
        return text + (f" ({r['reason']})" if r["reason"] else "")
    if not r["quantity"]:
        return r["reason"]
    text = f"{r['quantity']}: " + _side_text(r["a"], r["a_mean"], r["a_low"], r["a_high"],
                                             r["a_n"])
    if r["b"]:
        text += " vs " + _side_text(r["b"], r["b_mean"], r["b_low"], r["b_high"], r["b_n"])
    if r["b"] and r["estimate"] is not None:
        low, high = r["effect_low"], r["effect_high"]
        ci = "" if low is None or low == high else f" [{fmt(low)}, {fmt(high)}]"
        text += f"; {r['effect']} {fmt(r['estimate'])}{ci}"
    if r["p_value"] is not None:
        text += f", p = {r['p_value']:.3g}"
    return text + (f" ({r['part_verdict']}: {r['reason']})" if r["reason"] else
                   f" ({r['part_verdict']})")


def _by_claim(rows: list[dict]) -> list[tuple[dict, list[dict]]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["claim"], []).append(r)
    return [(parts[0], parts) for parts in out.values()]


HEADER = ["claim", "published (statement, number, source)", "measured: mean [95 % CI], n seeds",
          "rule", "verdict"]
NOTE = ("Verdicts are computed from the per-seed results by the rule each claim carries in the "
        "preset's `claims:` section, fixed before the runs. Fewer than 2 seeds on a side, or an "
        "interval that covers the threshold, gives `inconclusive`; a claim is `reproduced` only "
        "if every part is. The effect's interval is at 1 - alpha.")


def _cells(first: dict, parts: list[dict]) -> list[str]:
    return [f"{first['claim']}: {first['statement']}",
            f"{first['published']} ({first['source']})" if first["source"] else "-",
            "\n".join(_evidence(p) for p in parts), first["decision"], first["verdict"]]


def claims_markdown(rows: list[dict], title: str = "Claims of the paper") -> str:
    lines = [f"## {title}", "", NOTE, "", "| " + " | ".join(HEADER) + " |",
             "| " + " | ".join("---" for _ in HEADER) + " |"]
    for first, parts in _by_claim(rows):
        cells = _cells(first, parts)
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", "<br>")
                                       for c in cells) + " |")
    return "\n".join(lines) + "\n"


# The claims table's style: (selectors, declarations), for its page and for the landing fragment.
_TABLE_STYLE = (("body", "font-family:sans-serif;font-size:13px"),
                ("td,th", "border:1px solid #ccc;padding:4px;vertical-align:top"),
                ("table", "border-collapse:collapse"))


def _table_css(scope: str | None = None) -> str:
    """``_TABLE_STYLE`` as CSS; with ``scope`` (a selector) every rule applies only inside it,
    and ``body`` becomes the scope itself."""
    def scoped(sel: str) -> str:
        return sel if scope is None else scope if sel == "body" else f"{scope} {sel}"

    return "".join(",".join(scoped(s) for s in selectors.split(",")) + "{" + decl + "}"
                   for selectors, decl in _TABLE_STYLE)


def claims_html(rows: list[dict], title: str = "Claims of the paper") -> str:
    """The Markdown table as a standalone page (the report renders HTML, not Markdown)."""
    colour = {"reproduced": "#d4edda", "not reproduced": "#f8d7da", "inconclusive": "#fff3cd",
              "n/a": "#eeeeee"}
    body = []
    for first, parts in _by_claim(rows):
        cells = [html.escape(c).replace("\n", "<br>") for c in _cells(first, parts)]
        cells[-1] = f'<b style="background:{colour[first["verdict"]]}">{cells[-1]}</b>'
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>"
            f"{_table_css()}</style></head><body>"
            f"<h2>{title}</h2><p>{html.escape(NOTE)}</p><table><tr>{head}</tr>{''.join(body)}"
            "</table></body></html>\n")


def landing_html(table_page: str, figure_png: bytes) -> str:
    """The claims as the report's landing page shows them: the claims figure (``figure_png``,
    embedded so the report stays one file) above the claims table, taken from the body of
    ``table_page`` (``claims_html``). A fragment, not a page: the report's workflow
    description (``workflow/report/workflow.rst``) includes it."""
    body = table_page.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
    # The table's style, scoped to the fragment so the rest of the report keeps its look.
    scoped = _table_css(".cdrl-claims")
    image = base64.b64encode(figure_png).decode()
    alt = html.escape("The claims figure: each claim's effect and 95 % interval against its "
                      "rule's threshold, coloured by verdict")
    return (f'<div class="cdrl-claims"><style>{scoped}</style>'
            f'<img alt="{alt}" src="data:image/png;base64,{image}" style="max-width:100%">'
            f"{body}</div>\n")


def write_claims(rows: list[dict], csv_path: Path, md_path: Path, html_path: Path | None = None,
                 curve_rows: list[dict] | None = None, curve_csv: Path | None = None) -> None:
    """``claims.csv`` (long form, one row per part), ``claims.md`` and optionally ``.html``;
    with ``curve_rows`` (``cdrl.report.claim_curves``) ``curve_csv`` too, and their section at
    the end of ``claims.md``."""
    from cdrl.io import atomic_write_text, csv_text
    from cdrl.report.claim_curves import CURVE_COLUMNS, curve_markdown

    atomic_write_text(Path(csv_path), csv_text(rows, COLUMNS))
    if curve_csv is not None:
        atomic_write_text(Path(curve_csv), csv_text(curve_rows or [], CURVE_COLUMNS))
    curves = curve_markdown(curve_rows or [])
    atomic_write_text(Path(md_path), claims_markdown(rows) + (f"\n{curves}" if curves else ""))
    if html_path is not None:
        atomic_write_text(Path(html_path), claims_html(rows))
