"""Learning curves: FID of a run's snapshots against training iterations and training wall-clock.

A run trained with ``train.snapshot_every: N`` keeps its weights every N iterations
(``cdrl.train.trainer``); the workflow samples and evaluates each snapshot like a finished run
(rule ``sample_snapshot``, then ``evaluate``) and this module gathers the metric files into one
long table and draws it. The wall-clock of iteration i is read from the run's ``stats.jsonl``:
each line's ``sec_per_iter`` times the iterations since the line before it, summed (attempts
that were interrupted and resumed count once, since a resume truncates the lines after its
checkpoint); between two lines it is interpolated linearly.

A run that diverged (``cdrl train --on-divergence record``) has metric files with null values
for the snapshots after its divergence: its curve stops at its last good snapshot.

Whether a curve levels off is for the reader of the figure to see: nothing here fits or asserts
a plateau. The table carries the last-two-points change (``delta_last``) so a reader can check
the figure against numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

__all__ = ["snapshot_iterations", "train_seconds", "curve_rows", "curve_table", "learning_curves_figure"]

_POINT = re.compile(r"results/metrics/(?P<run>[^/]+)/seed(?P<seed>\d+)/it(?P<it>\d+)-n(?P<n>\d+)"
                    r"-(?P<extractor>[A-Za-z0-9_]+)\.json$")


def snapshot_iterations(every: int, iterations: int) -> list[int]:
    """The iterations at which a run with ``train.snapshot_every: every`` keeps snapshots."""
    return list(range(every, iterations + 1, every)) if every > 0 else []


def train_seconds(stats: str | Path, iterations) -> list[float]:
    """Cumulative training seconds at each of ``iterations``, from a run's ``stats.jsonl``."""
    lines = [json.loads(ln) for ln in Path(stats).read_text().splitlines() if ln.strip()]
    its, secs, prev, total = [0], [0.0], 0, 0.0
    for ln in sorted(lines, key=lambda d: d["iteration"]):
        total += float(ln["sec_per_iter"]) * (int(ln["iteration"]) - prev)
        prev = int(ln["iteration"])
        its.append(prev)
        secs.append(total)
    if max(iterations, default=0) > its[-1]:
        raise ValueError(f"{stats} ends at iteration {its[-1]}, before {max(iterations)}: the "
                         "run has not trained that far")
    return [float(v) for v in np.interp(list(iterations), its, secs)]


def curve_rows(metric_files, run_dirs: dict[str, Path], labels: dict[str, str]) -> list[dict]:
    """One row per (run, seed, iteration, extractor): the metrics of that snapshot's samples and
    the run's training seconds up to it. ``run_dirs`` maps ``<run>/seed<s>`` to its run folder."""
    points = []
    for path in map(str, metric_files):
        m = _POINT.search(path.replace("\\", "/"))
        if m is None:
            raise ValueError(f"{path} is not a snapshot metric file "
                             "(results/metrics/<run>/seed<s>/it<i>-n<n>-<extractor>.json)")
        res = json.loads(Path(path).read_text())
        if res.get("fid") is None and res.get("diverged"):
            continue  # a snapshot after the run diverged: no weights, no point
        points.append((m, res))
    rows = []
    for key in sorted({f"{m['run']}/seed{m['seed']}" for m, _ in points}):
        mine = [(m, res) for m, res in points if f"{m['run']}/seed{m['seed']}" == key]
        its = sorted({int(m["it"]) for m, _ in mine})
        secs = dict(zip(its, train_seconds(Path(run_dirs[key]) / "stats.jsonl", its), strict=True))
        for m, res in mine:
            row = {"run": m["run"], "label": labels.get(m["run"], m["run"]),
                   "seed": int(m["seed"]), "iteration": int(m["it"]),
                   "train_seconds": round(secs[int(m["it"])], 3),
                   "extractor": m["extractor"], "num_samples": int(m["n"])}
            for metric in ("fid", "kid_mean", "isc_mean"):
                if metric in res:
                    row[metric] = float(res[metric])
            rows.append(row)
    return sorted(rows, key=lambda r: (r["run"], r["extractor"], r["seed"], r["iteration"]))


def curve_table(rows: list[dict]):
    """Mean, min and max FID over seeds per (run, extractor, iteration), with the mean training
    seconds, and ``delta_last``: the change of the mean FID from the run's previous point."""
    import pandas as pd

    df = pd.DataFrame(rows)
    g = (df.groupby(["run", "label", "extractor", "iteration"], sort=True)
         .agg(fid_mean=("fid", "mean"), fid_min=("fid", "min"), fid_max=("fid", "max"),
              seeds=("seed", "nunique"), train_seconds=("train_seconds", "mean"))
         .reset_index())
    g["delta_last"] = g.groupby(["run", "extractor"])["fid_mean"].diff()
    return g


def learning_curves_figure(table, out: str | Path) -> None:
    """FID (mean over seeds, band from min to max) against training iterations and against
    training wall-clock minutes, one line per run, one row of panels per extractor."""
    from cdrl.report.figures import _plt, save

    plt = _plt()
    extractors = list(dict.fromkeys(table["extractor"]))
    fig, axes = plt.subplots(len(extractors), 2, figsize=(10, 3.6 * len(extractors)),
                             squeeze=False)
    for row, ex in zip(axes, extractors, strict=True):
        for (_run, label), g in table[table["extractor"] == ex].groupby(["run", "label"],
                                                                         sort=False):
            g = g.sort_values("iteration")
            seeds = int(g["seeds"].max())
            name = f"{label} ({seeds} seed{'s' if seeds > 1 else ''})"
            for ax, x in ((row[0], g["iteration"]), (row[1], g["train_seconds"] / 60)):
                (line,) = ax.plot(x, g["fid_mean"], "o-", ms=3, lw=1.2, label=name)
                if seeds > 1:
                    ax.fill_between(x, g["fid_min"], g["fid_max"], color=line.get_color(),
                                    alpha=0.15, lw=0)
        row[0].set_xlabel("training iterations")
        row[1].set_xlabel("training wall-clock (minutes, this host)")
        for ax in row:
            ax.set_ylabel(f"FID ({ex} features)")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
        row[0].set_title("FID of intermediate checkpoints vs iterations")
        row[1].set_title("... vs training time")
        row[0].legend(fontsize=7)
    save(fig, out)
