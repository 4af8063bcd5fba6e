"""Claims along the learning curve: a ``compare`` claim (C1, C4, C5) tested at every snapshot, at
equal training iterations and at equal training wall-clock, with Holm's correction over the
points; ``results/tables/claims_curve.{csv,md}`` beside the claims table.

    snakemake --cores 2 results/tables/claims.md    # rule claims writes both tables

A claim opts in with ``curve: true`` (both of its runs must be in the preset's ``curves: runs``,
which samples and evaluates every snapshot, ``train.snapshot_every``). The rule, fixed before the
runs and printed under the table:

* **The verdict is taken at the final budget** (the claims table's own row, alpha as given). The
  curve is the secondary family: it says where along training the claim holds, not whether.
* **Equal iterations**: at each snapshot iteration both runs share, Welch's t-test of the metric
  over seeds (seed values of a diverged run stop at its last good snapshot).
* **Equal wall-clock**: the grid is run ``a``'s snapshot times (mean over its seeds of the
  training seconds summed from each run's ``stats.jsonl``, ``cdrl.report.curves``), kept where
  both runs have points on both sides; at each grid time each seed's metric is interpolated
  linearly in its own training seconds between its two neighbouring snapshots (never
  extrapolated), then Welch's test as above. The runs of a part train side by side at one thread
  each, so what else runs on the host slows both alike; the clock is still this host's.
* **Holm's step-down correction** over all of a claim's points (both clocks together), at the
  claim's alpha: a point is reproduced (not reproduced) when its Holm-adjusted p-value is below
  alpha and the estimate lies on the claimed (other) side; otherwise inconclusive.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cdrl.report.claim_stats import two_group
from cdrl.report.curves import snapshot_iterations, train_seconds
from cdrl.report.render import fmt

__all__ = ["holm", "curve_claim_rows", "curve_markdown", "CURVE_COLUMNS", "CURVE_RULE",
           "curve_files"]

CURVE_RULE = ("Along the curve (secondary; the verdict is the claims table's, at the final "
              "budget): Welch's t-test over seeds at each shared snapshot iteration and at each "
              "of run a's snapshot times (each seed's metric interpolated linearly in its own "
              "training seconds, never extrapolated); Holm's step-down correction over all of a "
              "claim's points at the claim's alpha; a point is reproduced (not reproduced) when "
              "its adjusted p-value is below alpha and the estimate is on the claimed (other) "
              "side. A diverged run's seeds contribute up to their last good snapshot.")
CURVE_COLUMNS = ["claim", "clock", "point", "a", "a_iteration", "a_mean", "a_n", "b",
                 "b_iteration", "b_mean", "b_n", "estimate", "effect_low", "effect_high",
                 "p_value", "p_holm", "verdict"]


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted in the family)."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m, out, running = len(idx), [None] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _point_file(root: Path, run: str, seed: int, it: int, n: int, ex: str) -> Path:
    return root / "metrics" / run / f"seed{seed}" / f"it{it}-n{n}-{ex}.json"


def _snapshots(preset: dict, run: str) -> list[int]:
    spec = preset["runs"][run]
    return snapshot_iterations(spec.get("snapshot_every") or 0, spec["iterations"])


def _extractor(preset: dict, run: str, spec: dict) -> str | None:
    ev = preset["evaluation"].get(preset["runs"][run]["dataset"])
    if ev is None:
        return None
    ex = spec.get("extractor") or next(iter(ev["metrics"]))
    return ex if ex in ev["metrics"] else None


def _curve_claims(preset: dict) -> list[dict]:
    curves = preset.get("curves") or {}
    out = []
    for spec in preset.get("claims", []):
        if spec.get("kind") == "compare" and spec.get("curve"):
            runs = [spec["compare"]["a"], spec["compare"]["b"]]
            if set(runs) <= set(curves.get("runs", [])) and all(_extractor(preset, r, spec)
                                                                 for r in runs):
                out.append(spec)
    return out


def curve_files(preset: dict, root: Path = Path("results")) -> list[str]:
    """The snapshot metric files and ``stats.jsonl`` files the curve tests read."""
    n = (preset.get("curves") or {}).get("num_samples")
    files = set()
    for spec in _curve_claims(preset):
        for run in (spec["compare"]["a"], spec["compare"]["b"]):
            ex = _extractor(preset, run, spec)
            for seed in preset["runs"][run]["seeds"]:
                files |= {str(_point_file(root, run, seed, it, n, ex))
                          for it in _snapshots(preset, run)}
    return sorted(files)


def _series(preset: dict, root: Path, run: str, spec: dict) -> dict[int, dict[int, float]]:
    """seed -> {iteration: metric} for the snapshots whose metric is a number."""
    n, ex = preset["curves"]["num_samples"], _extractor(preset, run, spec)
    out = {}
    for seed in preset["runs"][run]["seeds"]:
        pts = {}
        for it in _snapshots(preset, run):
            path = _point_file(root, run, seed, it, n, ex)
            value = json.loads(path.read_text()).get(spec["metric"]) if path.is_file() else None
            if value is not None and math.isfinite(float(value)):
                pts[it] = float(value)
        out[seed] = pts
    return out


def _seconds(root: Path, run: str, seed: int, its: list[int]) -> dict[int, float]:
    stats = root / "runs" / run / f"seed{seed}" / "stats.jsonl"
    if not its or not stats.is_file():
        return {}
    return dict(zip(its, train_seconds(stats, its), strict=True))


def _at_time(pts: dict[int, float], secs: dict[int, float], t: float) -> float | None:
    """A seed's metric at training time ``t``, interpolated between snapshots; None outside."""
    its = sorted(i for i in pts if i in secs)
    if not its or not secs[its[0]] <= t <= secs[its[-1]]:
        return None
    return float(np.interp(t, [secs[i] for i in its], [pts[i] for i in its]))


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def _row(spec, clock, point, la, ita, va, lb, itb, vb) -> dict:
    test = two_group(va, vb, spec["better"], "welch", spec["alpha"])
    return {"claim": spec["id"], "clock": clock, "point": point, "a": la, "a_iteration": ita,
            "a_mean": _mean(va), "a_n": len(va), "b": lb, "b_iteration": itb, "b_mean": _mean(vb),
            "b_n": len(vb), "estimate": test.estimate, "effect_low": test.low,
            "effect_high": test.high, "p_value": test.p_value}


def _claim_rows(spec: dict, preset: dict, root: Path) -> list[dict]:
    a, b = spec["compare"]["a"], spec["compare"]["b"]
    la, lb = (preset["runs"][r].get("label", r) for r in (a, b))
    sa, sb = _series(preset, root, a, spec), _series(preset, root, b, spec)
    rows = []
    for it in sorted(set(_snapshots(preset, a)) & set(_snapshots(preset, b))):
        va = [p[it] for p in sa.values() if it in p]
        vb = [p[it] for p in sb.values() if it in p]
        if va or vb:
            rows.append(_row(spec, "iterations", it, la, it, va, lb, it, vb))
    ta = {s: _seconds(root, a, s, sorted(p)) for s, p in sa.items()}
    tb = {s: _seconds(root, b, s, sorted(p)) for s, p in sb.items()}
    for it in _snapshots(preset, a):
        times = [ta[s][it] for s in sa if it in ta[s]]
        if not times:
            continue
        t = sum(times) / len(times)
        va = [v for s, p in sa.items() if (v := _at_time(p, ta[s], t)) is not None]
        vb = [v for s, p in sb.items() if (v := _at_time(p, tb[s], t)) is not None]
        if va and vb:
            rows.append(_row(spec, "wall-clock (s)", round(t, 1), la, it, va, lb, None, vb))
    for row, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = p
        row["verdict"] = _verdict(row, p, spec)
    return rows


def _verdict(row: dict, p_holm: float | None, spec: dict) -> str:
    if p_holm is None or p_holm >= spec["alpha"] or row["estimate"] is None:
        return "inconclusive"
    claimed = row["estimate"] < 0 if spec["better"] == "lower" else row["estimate"] > 0
    return "reproduced" if claimed else "not reproduced"


def curve_claim_rows(preset: dict, root: Path = Path("results")) -> list[dict]:
    """One row per (claim, clock, point) of every ``curve: true`` claim."""
    return [r for spec in _curve_claims(preset) for r in _claim_rows(spec, preset, root)]


def curve_markdown(rows: list[dict]) -> str:
    """The curve tests as a Markdown section: one table per claim."""
    if not rows:
        return ""
    lines = ["## Claims along the learning curve", "", CURVE_RULE, ""]
    for claim in dict.fromkeys(r["claim"] for r in rows):
        mine = [r for r in rows if r["claim"] == claim]
        counts = {v: sum(r["verdict"] == v for r in mine)
                  for v in ("reproduced", "not reproduced", "inconclusive")}
        lines += [f"### {claim}: {mine[0]['a']} vs {mine[0]['b']}", "",
                  f"{len(mine)} points: " + ", ".join(f"{n} {v}" for v, n in counts.items()),
                  "", "| clock | point | a iteration | a mean (n) | b mean (n) | a - b [95 % CI] "
                  "| p | p (Holm) | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- "
                  "| --- |"]
        for r in mine:
            ci = (f" [{fmt(r['effect_low'])}, {fmt(r['effect_high'])}]"
                  if r["effect_low"] is not None else "")
            lines.append(f"| {r['clock']} | {fmt(r['point'])} | {fmt(r['a_iteration'])} | "
                         f"{fmt(r['a_mean'])} ({r['a_n']}) | {fmt(r['b_mean'])} ({r['b_n']}) | "
                         f"{fmt(r['estimate'])}{ci} | {fmt(r['p_value'])} | {fmt(r['p_holm'])} | "
                         f"{r['verdict']} |")
        lines.append("")
    return "\n".join(lines)
