"""The workflow's figures (PNG and PDF): the claims figure, sample grids, FID against sampling
steps, training curves and guidance.

One palette for every figure: a method (a run's ``label`` in the preset: "CDRL", "DRL", ...) has
the same colour in each panel and each figure (``method_colour``); the claims figure colours a
verdict by ``VERDICT_COLOURS``. A published number is drawn only on an axis of its own dataset
and feature space, or normalised (FID relative to the method's own full-step FID) on a panel of
its own: the paper's CIFAR-10 FIDs never share an axis with MNIST-CNN FIDs. Intervals are 95 %
t-intervals over seeds, as in the claims table (``cdrl.report.claim_stats``).

Called by ``workflow/scripts/figures.py``; the toy figure is ``cdrl.report.plots.toy_figure``
and the learning curves ``cdrl.report.curves.learning_curves_figure``.
"""

from __future__ import annotations

import json
import math
import textwrap
import zlib
from pathlib import Path

import numpy as np

__all__ = ["pyplot", "METHOD_COLOURS", "VERDICT_COLOURS", "method_colour", "method_palette",
           "t_interval", "image_grid", "sample_grid", "draw_fid_vs_steps", "fid_vs_steps",
           "draw_training_curves", "training_curves",
           "guidance_figure", "draw_claims", "claims_figure", "save"]

# Method -> colour, by the run labels the presets use (workflow/config/*.yaml). CDRL and DRL keep
# matplotlib's first two colours (blue, orange), which most earlier figures happened to give them;
# a label not listed here gets a colour of _SPARE fixed by its name, the same in every figure.
METHOD_COLOURS = {
    "CDRL": "#1f77b4",
    "DRL": "#ff7f0e",
    "CDRL, no variance reduction": "#2ca02c",
    "CDRL, DRL's noise schedule": "#9467bd",
    "CDRL, no initializer (chains start at x_i)": "#8c564b",
    "CDRL, K = 5 in training": "#e377c2",
    "CDRL, K = 30 in training": "#bcbd22",
    "CDRL (class-conditional)": "#17becf",
    "CDRL (attribute-conditional)": "#393b79",
    "Short-run EBM": "#7f7f7f",
    "Replay-buffer EBM": "#637939",
    "CoopNets": "#843c39",
}
_SPARE = ["#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#ad494a", "#8c6d31"]
# Verdict -> colour (and marker, so the verdict reads without colour too).
VERDICT_COLOURS = {"reproduced": "#1a9850", "not reproduced": "#d73027",
                   "inconclusive": "#e6a100", "n/a": "#969696"}
VERDICT_MARKERS = {"reproduced": "o", "not reproduced": "X", "inconclusive": "D", "n/a": "s"}


def method_colour(label: str) -> str:
    """The colour of a method (run label) in every figure."""
    label = str(label)
    if label in METHOD_COLOURS:
        return METHOD_COLOURS[label]
    return _SPARE[zlib.crc32(label.encode()) % len(_SPARE)]


def method_palette(labels) -> dict[str, str]:
    """``{label: colour}`` for seaborn's ``palette=`` (first-seen order kept)."""
    return {str(lab): method_colour(lab) for lab in dict.fromkeys(labels)}


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean over seeds (seaborn's ``errorbar=``); a single value is its own
    interval."""
    from cdrl.report.claim_stats import mean_ci

    m, low, high, _n = mean_ci([float(v) for v in values], level)
    if m is None:
        return math.nan, math.nan
    return (m, m) if low is None else (low, high)


def _t_half(std, n, level: float = 0.95) -> float:
    """Half-width of the t-interval of a mean from its standard deviation over ``n`` seeds."""
    from cdrl.report.claim_stats import t_ppf

    if not (n and n > 1) or std is None or not np.isfinite(std):
        return 0.0
    return t_ppf(0.5 + level / 2.0, int(n) - 1) * float(std) / math.sqrt(n)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (every figure here is written, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | Path) -> None:
    """``out`` (.png) and the same name as .pdf."""
    from cdrl.io import atomic_savefig

    out = Path(out)
    atomic_savefig(fig, out, dpi=150, bbox_inches="tight")
    atomic_savefig(fig, out.with_suffix(".pdf"), bbox_inches="tight")
    pyplot().close(fig)


def _legend_below(fig, axes, ncols: int = 3, title: str | None = None) -> None:
    """One legend for the whole figure, under the panels (each label once)."""
    handles: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if not lab.startswith("_"):
                handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(ncols, len(handles)), fontsize=8, frameon=False, title=title,
                   title_fontsize=8)


def image_grid(x_uint8: np.ndarray) -> np.ndarray:
    """uint8 images ``[N, H, W, C]`` tiled ``ceil(sqrt(N))`` to a row with 1-pixel white lines
    (``torchvision.utils.make_grid``), as ``[H', W', 3]`` uint8 (grey images repeated to RGB)."""
    import torch
    from torchvision.utils import make_grid

    x = torch.from_numpy(np.ascontiguousarray(x_uint8)).permute(0, 3, 1, 2)
    side = int(np.ceil(np.sqrt(len(x))))
    return make_grid(x, nrow=side, padding=1, pad_value=255).permute(1, 2, 0).numpy()


def sample_grid(samples: str | Path, out: str | Path, title: str, n: int = 64) -> None:
    """The first ``n`` images of a ``cdrl sample`` .npz as a square grid (a note instead for the
    empty file of a run that diverged before its first snapshot)."""
    with np.load(samples) as npz:
        x = npz["x_uint8"][:n]
        meta = json.loads(str(npz["meta"])) if "meta" in npz else {}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4.3))
    if len(x):
        ax.imshow(image_grid(x), interpolation="nearest")  # [N, H, W, C] -> [H', W', 3]
    else:
        ax.text(0.5, 0.5, meta.get("reason", "no samples"), ha="center", va="center",
                wrap=True, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    save(fig, out)


# ------------------------------------------------------------------------- FID vs sampling steps
_STEPS_NUMERIC = ["total_steps", "mean", "std", "seeds", "published", "difference",
                  "seconds_per_image"]


def draw_fid_vs_steps(table):
    """The figure of ``fid_vs_steps`` (returned, not saved): one row of panels per measured
    (dataset, feature extractor).

    Left: measured FID against Langevin steps per image (levels x K), mean and 95 % t-interval
    over seeds; middle: the same FIDs against measured sampling seconds per image (same y-axis);
    right: each method's FID relative to its own FID at its full (training) steps, measured
    (solid) and published (dashed, hollow squares) where the paper gives at least two step counts
    including that one. A published FID appears on the left panel only where its dataset and
    feature space are the measured ones (the table's ``difference`` is set); otherwise only
    normalised, on the right panel.
    """
    import pandas as pd

    from cdrl.report.render import dataset_name

    df = pd.DataFrame(table).copy()
    for col in _STEPS_NUMERIC:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
        else:
            df[col] = np.nan
    for col in ("dataset", "extractor", "run", "method"):
        if col not in df:
            df[col] = pd.Series(dtype=object)
    groups = list(dict.fromkeys(zip(df["dataset"], df["extractor"], strict=True)))
    plt = pyplot()
    if not groups:  # a preset without a sampling-steps sweep
        fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
        ax.text(0.5, 0.5, "no sampling-steps results in this preset", ha="center", va="center")
        ax.axis("off")
        return fig
    fig, axes = plt.subplots(len(groups), 3, figsize=(12.5, 3.9 * len(groups) + 0.7),
                             squeeze=False, layout="constrained")
    for row, (dataset, extractor) in zip(axes, groups, strict=True):
        ax_steps, ax_secs, ax_rel = row
        ax_secs.sharey(ax_steps)
        sub = df[(df["dataset"] == dataset) & (df["extractor"] == extractor)]
        where = f"{extractor} features, {dataset_name(dataset)}"
        for _run, g in sub.groupby("run", sort=False):
            g = g.sort_values("total_steps")
            label = str(g["method"].iloc[0])
            colour = method_colour(label)
            half = [_t_half(s, n) for s, n in zip(g["std"], g["seeds"], strict=True)]
            seeds = int(g["seeds"].max()) if g["seeds"].notna().any() else 0
            name = f"{label}, measured ({seeds} seed{'s' if seeds != 1 else ''})"
            ax_steps.errorbar(g["total_steps"], g["mean"], yerr=half, fmt="o-", color=colour,
                              ms=4, lw=1.5, capsize=3, label=name)
            timed = g["seconds_per_image"].notna().to_numpy()
            if timed.any():
                ax_secs.errorbar(g["seconds_per_image"][timed], g["mean"][timed],
                                 yerr=np.asarray(half)[timed], fmt="o-", color=colour, ms=4,
                                 lw=1.5, capsize=3, label=name)
            same = g.dropna(subset=["published", "difference"])
            if len(same):  # the paper's own protocol: same dataset, same features
                ax_steps.plot(same["total_steps"], same["published"], "s--", mfc="white",
                              color=colour, ms=5, lw=1, label=f"{label}, paper")
            full = g.iloc[-1]
            if np.isfinite(full["mean"]) and full["mean"] > 0:
                ax_rel.plot(g["total_steps"], g["mean"] / full["mean"], "o-", color=colour,
                            ms=4, lw=1.5, label=name)
            pub = g.dropna(subset=["published"])
            ref = pub[pub["total_steps"] == full["total_steps"]]
            if len(pub) >= 2 and len(ref):
                on = dataset_name(pub["published_dataset"].iloc[0])
                ax_rel.plot(pub["total_steps"], pub["published"] / ref["published"].iloc[0],
                            "s--", mfc="white", color=colour, ms=5, lw=1.2,
                            label=f"{label}, paper ({on}, Inception)")
        ax_steps.set_xlabel("Langevin steps per image (levels x K)")
        ax_steps.set_ylabel(f"FID ({where})")
        ax_steps.set_title("Measured FID vs sampling steps", fontsize=10)
        ax_secs.set_xlabel("measured sampling seconds per image")
        ax_secs.tick_params(labelleft=False)
        ax_secs.set_title("... vs sampling time", fontsize=10)
        ax_rel.axhline(1.0, color="0.6", lw=0.8, zorder=0)
        ax_rel.set_xlabel("Langevin steps per image (levels x K)")
        ax_rel.set_ylabel("FID / FID at the method's full steps")
        ax_rel.set_title("Shape: FID relative to full steps", fontsize=10)
        for ax in row:
            ax.grid(alpha=0.3)
    _legend_below(fig, axes, ncols=4, title="bars: 95 % t-interval over seeds; hollow squares, "
                  "dashed: the paper's FIDs")
    return fig


def fid_vs_steps(table, out: str | Path) -> None:
    """``draw_fid_vs_steps`` saved to ``out`` (PNG and PDF)."""
    save(draw_fid_vs_steps(table), out)


# ------------------------------------------------------------------------- training curves
def training_curves(runs: dict[str, Path], labels: dict[str, str], out: str | Path) -> None:
    """``draw_training_curves`` saved to ``out`` (PNG and PDF)."""
    save(draw_training_curves(runs, labels), out)


def draw_training_curves(runs: dict[str, Path], labels: dict[str, str]):
    """The training-curves figure (returned, not saved): EBM loss, and initializer loss where there is one, against iteration: one thin line per
    run and seed (``runs``: key -> stats.jsonl), coloured by its method (``labels``: key -> run
    label), one legend entry per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    count: dict[str, int] = {}
    for key, path in runs.items():
        lines = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
        if not lines:
            continue
        label = labels.get(key, key)
        first = label not in count
        count[label] = count.get(label, 0) + 1
        it = [ln["iteration"] for ln in lines]
        style = {"color": method_colour(label), "lw": 0.9, "alpha": 0.8,
                 "label": label if first else "_"}
        axes[0].plot(it, [ln.get("loss_ebm", np.nan) for ln in lines], **style)
        if "loss_init" in lines[0]:
            axes[1].plot(it, [ln["loss_init"] for ln in lines], **style)
    for ax in axes:  # "CDRL (5 seeds)": the legend names each method once
        for line in ax.get_lines():
            if line.get_label() in count:
                n = count[line.get_label()]
                line.set_label(f"{line.get_label()} ({n} seed{'s' if n > 1 else ''})")
    axes[0].set_title("EBM loss: mean w_i (F(y^K) - F(y+))", fontsize=10)
    axes[0].set_ylabel("EBM loss")
    axes[1].set_title("initializer loss: |y^K - y0|^2", fontsize=10)
    axes[1].set_ylabel("initializer loss (log scale)")
    axes[1].set_yscale("log")
    if not axes[1].get_lines():
        axes[1].text(0.5, 0.5, "no initializer in these runs", ha="center", va="center",
                     transform=axes[1].transAxes, color="0.4")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    _legend_below(fig, axes, ncols=4)
    return fig


# ------------------------------------------------------------------------- guidance
def guidance_figure(table, out: str | Path) -> None:
    """FID (and class accuracy) against the guidance weight w, and the paper's ImageNet 32 FID and
    IS curve (spec 6.1) on a panel of its own (another dataset and feature space)."""
    import pandas as pd

    from cdrl.report.render import dataset_name

    df = pd.DataFrame(table).sort_values("w")
    colour = method_colour(df["method"].iloc[0]) if "method" in df else METHOD_COLOURS["CDRL"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    ax = axes[0]
    for col in [c for c in df.columns if c.startswith("FID (")]:
        ax.plot(df["w"], df[col], "o-", color=colour,
                label=f"measured {col}, {dataset_name(df['dataset'].iloc[0])}")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("FID (measured)")
    if "class_accuracy" in df:
        acc = ax.twinx()
        acc.plot(df["w"], df["class_accuracy"], "s--", color="0.35", label="class accuracy")
        acc.set_ylabel("class accuracy of samples")
        acc.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("measured", fontsize=10)
    pub = df.dropna(subset=["published_FID"])
    ax = axes[1]
    if len(pub):
        ax.plot(pub["w"], pub["published_FID"], "s--", mfc="white", color=colour,
                label="published FID")
        ax2 = ax.twinx()
        ax2.plot(pub["w"], pub["published_IS"], "^:", color="0.35", label="published IS")
        ax2.set_ylabel("Inception Score (published)")
        ax2.legend(fontsize=7, loc="lower right")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("FID (published)")
    ax.set_title(f"paper ({dataset_name(df['published_dataset'].iloc[0])}, read off its figure)",
                 fontsize=10)
    for a in axes:
        a.grid(alpha=0.3)
    save(fig, out)


# ------------------------------------------------------------------------- claims
_CLAIM_NUMERIC = ["estimate", "effect_low", "effect_high", "threshold", "a_mean", "a_n"]


def _text(v) -> str:
    """A CSV cell as text ('' for an empty cell, which pandas reads as NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _g(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _unit(quantity: str) -> str:
    """What a part measures, without its setting: ``FID (MNIST CNN 16x16, ...), CDRL K = 0 ...``
    -> ``FID``. Parts of one claim with different units get an x-axis each."""
    return quantity.split(",")[0].split("(")[0].strip()


def _part_labels(parts) -> list[str]:
    """``a vs b`` per part; where two parts of a claim would read the same, the quantity's first
    clause (C2's counts and seconds), else the quantity before ``a vs b`` (C10's masks)."""
    rows = list(parts.itertuples())
    pair = [f"{_text(r.a)} vs {_text(r.b)}" if _text(r.b) else _text(r.a) or _text(r.quantity)
            for r in rows]
    clause = [_text(r.quantity).split(",")[0] or p for r, p in zip(rows, pair, strict=True)]
    full = [f"{_text(r.quantity)}: {p}" if _text(r.quantity) else p
            for r, p in zip(rows, pair, strict=True)]
    labels = next((c for c in (pair, clause) if len(set(c)) == len(c)), full)
    return [textwrap.fill(lab, 30) for lab in labels]


def _tint(colour: str, amount: float = 0.12):
    from matplotlib.colors import to_rgb

    return tuple(1 - amount * (1 - c) for c in to_rgb(colour))


def _draw_parts(ax, parts, labels: list[str]) -> None:
    """One claim's parts of one unit on ``ax``: effect, interval and threshold."""
    from matplotlib.transforms import blended_transform_factory

    across = blended_transform_factory(ax.transAxes, ax.transData)
    xs: list[float] = []
    for y, r in enumerate(parts.itertuples()):
        pv = _text(r.part_verdict) or "inconclusive"
        colour = VERDICT_COLOURS.get(pv, VERDICT_COLOURS["n/a"])
        marker = VERDICT_MARKERS.get(pv, "o")
        est, low, high = r.estimate, r.effect_low, r.effect_high
        if not np.isfinite(est):
            ax.text(0.5, y, textwrap.fill(_text(r.reason) or "no estimate", 70),
                    transform=across, ha="center", va="center", fontsize=8, style="italic",
                    color="0.25")
            continue
        xs.append(est)
        note = _g(est)
        if np.isfinite(low) and np.isfinite(high) and low != high:
            bars = ax.errorbar([est], [y], xerr=[[est - low], [high - est]], fmt=marker,
                               color=colour, ms=7, lw=2.2, capsize=5, zorder=3)
            bars.lines[0].set_gid(f"part:{pv}")  # the marker's line, not the caps
            xs += [low, high]
            note += f" [{_g(low)}, {_g(high)}]"
        else:  # an exact count (C2's gradients), or too few seeds for an interval
            ax.plot([est], [y], marker=marker, ls="none", color=colour, ms=7, zorder=3,
                    gid=f"part:{pv}")
            note += " (exact)" if low == high else " (no interval)"
        ax.text(1.01, y, note, transform=across, ha="left", va="center", fontsize=8)
    thresholds = sorted({t for t in parts["threshold"] if np.isfinite(t)})
    for t in thresholds:
        ax.axvline(t, color="0.2", ls="--", lw=1.1, zorder=2)
    xs += thresholds
    if xs:
        lo, hi = min(xs), max(xs)
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
        ax.set_xlim(lo - pad, hi + pad)
        effects = [e for e in dict.fromkeys(map(_text, parts["effect"])) if e]
        unit = _unit(_text(parts["quantity"].iloc[0]))
        what = "; ".join(effects) if effects else unit
        if effects and unit and not any(unit in e for e in effects):
            what = f"{unit}: {what}"
        ax.set_xlabel(what + (f"  (threshold {', '.join(_g(t) for t in thresholds)})"
                              if thresholds else ""), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.set_xticks([])
    ax.set_yticks(range(len(parts)), labels, fontsize=8)
    ax.set_ylim(len(parts) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=8)


def draw_claims(table):
    """The claims figure (returned, not saved): one row per claim of the claims table
    (``results/tables/claims.csv``, long form), in its order, each a subfigure tinted by the
    claim's verdict with the verdict in a badge of its colour. In a row, one line per tested
    part: the effect (``estimate``) and its interval (``effect_low`` to ``effect_high``, at
    1 - alpha) against the rule's ``threshold`` (dashed: 0 for a difference, ``min_ratio`` for a
    ratio), coloured by the part's verdict. Parts of other units (C7's class accuracy beside its
    FIDs) get an x-axis each. The stability rows (not a claim of the paper) are summed up under
    the legend. Each row's subfigure has ``gid = "claim:<id>"``, its badge ``gid = "verdict"``."""
    import pandas as pd
    from matplotlib.lines import Line2D

    df = pd.DataFrame(table).copy()
    for col in _CLAIM_NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    stability = df[df["claim"] == "stability"]
    df = df[df["claim"] != "stability"]
    claims = list(dict.fromkeys(df["claim"]))
    layout = []  # per claim: its parts split by unit, in order
    for claim in claims:
        parts = df[df["claim"] == claim]
        units = list(dict.fromkeys(_unit(_text(q)) for q in parts["quantity"]))
        layout.append([parts[[_unit(_text(q)) == u for q in parts["quantity"]]] for u in units])
    heights = [sum(len(g) + 1.1 for g in groups) + 0.6 for groups in layout]
    plt = pyplot()
    fig = plt.figure(figsize=(10, 0.4 * sum(heights) + 1.2), layout="constrained")
    rows = fig.subfigures(len(claims), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, claim, groups in zip(rows, claims, layout, strict=True):
        parts = df[df["claim"] == claim]
        first = parts.iloc[0]
        verdict = _text(first["verdict"]) or "inconclusive"
        colour = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["n/a"])
        sub.set_gid(f"claim:{claim}")
        sub.set_facecolor(_tint(colour))
        sub.suptitle(textwrap.fill(f"{claim}: {_text(first['statement'])}", 85), x=0.01,
                     ha="left", fontsize=9)
        sub.text(0.995, 0.985, verdict, ha="right", va="top", fontsize=9, fontweight="bold",
                 color="white", gid="verdict",
                 bbox={"boxstyle": "round,pad=0.3", "facecolor": colour, "edgecolor": "none"})
        labels = _part_labels(parts)
        axes = sub.subplots(len(groups), 1, squeeze=False,
                            gridspec_kw={"height_ratios": [len(g) + 1.1 for g in groups]})[:, 0]
        at = 0
        for ax, group in zip(axes, groups, strict=True):
            _draw_parts(ax, group, labels[at:at + len(group)])
            at += len(group)
    handles = [Line2D([], [], marker=VERDICT_MARKERS[v], ls="none", color=VERDICT_COLOURS[v],
                      ms=7, label=v) for v in ("reproduced", "not reproduced", "inconclusive")]
    handles.append(Line2D([], [], color="0.2", ls="--", lw=1.1, label="threshold of the rule"))
    note = None
    if len(stability):
        note = "Training runs finished (not a claim of the paper): " + ", ".join(
            f"{_text(r.a)} {int(r.a_mean)} of {int(r.a_n)}" for r in stability.itertuples())
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False,
               title=note, title_fontsize=8)
    alphas = set(pd.to_numeric(df.get("alpha"), errors="coerce").dropna()) if "alpha" in df else set()
    level = f"{100 * (1 - alphas.pop()):g} %" if len(alphas) == 1 else "1 - alpha"
    fig.suptitle(f"Claims of the paper: measured effect and {level} interval against the "
                 "threshold of each claim's rule", fontsize=11)
    return fig


def claims_figure(table, out: str | Path) -> None:
    """``draw_claims`` saved to ``out`` (PNG and PDF)."""
    save(draw_claims(table), out)
