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

__all__ = ["snapshot_iterations", "train_seconds", "curve_rows", "curve_table",
           "draw_learning_curves", "learning_curves_figure"]

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


def learning_curves_figure(rows, out: str | Path) -> None:
    """``draw_learning_curves`` saved to ``out`` (PNG and PDF)."""
    from cdrl.report.figures import save

    save(draw_learning_curves(rows), out)


def draw_learning_curves(rows):
    """The learning-curves figure (returned, not saved): FID against training iterations (left) and training wall-clock minutes (right), one row
    of panels per extractor: each seed's snapshot as a point, and per run the mean over seeds
    with its 95 % t-interval (seaborn). ``rows``: the long table of ``curve_rows`` (one row per
    run, seed, iteration and extractor; ``results/tables/learning_curves.csv``). On the right
    each seed's point sits at its own wall-clock and the mean at the seeds' mean wall-clock.
    Colours: ``cdrl.report.figures.method_colour`` of the run's label, as in every figure."""
    import pandas as pd
    import seaborn as sns
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from cdrl.report.figures import method_colour, pyplot, t_interval
    from cdrl.report.tables import EXTRACTOR_NAMES

    df = pd.DataFrame(rows).copy()
    df["fid"] = pd.to_numeric(df["fid"], errors="coerce")
    df = df.dropna(subset=["fid"])
    df["minutes"] = pd.to_numeric(df["train_seconds"]) / 60.0
    # The legend's name of a run: its label, or label (run) where two runs share a label.
    shared = df.groupby("label")["run"].nunique()
    df["name"] = [lab if shared[lab] == 1 else f"{lab} ({run})"
                  for lab, run in zip(df["label"], df["run"], strict=True)]
    names = list(dict.fromkeys(df["name"]))
    palette = {n: method_colour(df.loc[df["name"] == n, "label"].iloc[0]) for n in names}
    seeds = df.groupby("name")["seed"].nunique()
    extractors = list(dict.fromkeys(df["extractor"]))
    plt = pyplot()
    fig, axes = plt.subplots(len(extractors), 2, figsize=(11, 3.9 * len(extractors) + 0.6),
                             squeeze=False, sharey="row", layout="constrained")
    for row, ex in zip(axes, extractors, strict=True):
        d = df[df["extractor"] == ex].copy()
        d["mean_minutes"] = d.groupby(["name", "iteration"])["minutes"].transform("mean")
        # Seeds' points of two runs at one iteration are set a little apart, left and right.
        span = float(d["iteration"].max() - d["iteration"].min()) or 1.0
        offset = {n: (i - (len(names) - 1) / 2) * 0.012 * span for i, n in enumerate(names)}
        d["iteration_dodged"] = d["iteration"] + d["name"].map(offset)
        for ax, x_mean, x_seed in ((row[0], "iteration", "iteration_dodged"),
                                   (row[1], "mean_minutes", "minutes")):
            sns.lineplot(data=d, x=x_mean, y="fid", hue="name", hue_order=names,
                         palette=palette, estimator="mean", errorbar=t_interval,
                         err_kws={"alpha": 0.18, "lw": 0}, lw=1.8, legend=False, ax=ax)
            sns.scatterplot(data=d, x=x_seed, y="fid", hue="name", hue_order=names,
                            palette=palette, s=16, alpha=0.6, edgecolor="none", legend=False,
                            ax=ax)
            ax.grid(alpha=0.3)
        row[0].set_xlabel("training iterations")
        row[1].set_xlabel("training wall-clock (minutes, on the host that trained it)")
        row[0].set_ylabel(f"FID ({EXTRACTOR_NAMES.get(ex, ex)} features)")
        row[1].set_ylabel("")
        row[0].set_title("FID of intermediate checkpoints vs iterations", fontsize=10)
        row[1].set_title("... vs training time", fontsize=10)
    handles = [Line2D([], [], color=palette[n], lw=1.8,
                      label=f"{n} ({seeds[n]} seed{'s' if seeds[n] > 1 else ''})") for n in names]
    handles += [Line2D([], [], marker="o", ls="none", color="0.4", alpha=0.6, ms=4,
                       label="one seed's snapshot"),
                Patch(facecolor="0.4", alpha=0.18, label="mean, 95 % t-interval over seeds")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               fontsize=8, frameon=False)
    return fig
