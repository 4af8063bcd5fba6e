"""The workflow's figures (PNG and PDF): sample grids, FID against sampling steps, training curves.

Called by ``workflow/scripts/figures.py``; the toy figure is ``cdrl.report.plots.toy_figure``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["image_grid", "sample_grid", "fid_vs_steps", "training_curves", "guidance_figure",
           "save"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | Path) -> None:
    """``out`` (.png) and the same name as .pdf."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight")
    _plt().close(fig)


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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4.3))
    if len(x):
        ax.imshow(image_grid(x), interpolation="nearest")  # [N, H, W, C] -> [H', W', 3]
    else:
        ax.text(0.5, 0.5, meta.get("reason", "no samples"), ha="center", va="center",
                wrap=True, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    save(fig, out)


def fid_vs_steps(table, out: str | Path) -> None:
    """Reproduced FID against total Langevin steps per image (one line per run), and the
    published CIFAR-10 curve (spec 5.3) where the table carries it; sampling seconds on top."""
    import pandas as pd

    df = pd.DataFrame(table)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for _run, g in df.groupby("run", sort=False):
        g = g.sort_values("total_steps")
        label = f"{g['method'].iloc[0]} ({g['dataset'].iloc[0]}, {g['extractor'].iloc[0]})"
        axes[0].plot(g["total_steps"], g["mean"], "o-", label=label)
        pub = g.dropna(subset=["published"])
        if len(pub):
            axes[0].plot(pub["total_steps"], pub["published"], "s--", alpha=0.6,
                         label=f"{g['method'].iloc[0]} published ({pub['published_dataset'].iloc[0]})")
        if g["seconds_per_image"].notna().any():
            axes[1].plot(g["seconds_per_image"], g["mean"], "o-", label=label)
    axes[0].set_xlabel("Langevin steps per image (levels x K)")
    axes[0].set_ylabel("FID")
    axes[0].set_title("FID vs sampling steps")
    axes[1].set_xlabel("sampling seconds per image")
    axes[1].set_ylabel("FID")
    axes[1].set_title("FID vs sampling time")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save(fig, out)


def training_curves(runs: dict[str, Path], labels: dict[str, str], out: str | Path) -> None:
    """EBM loss, and initializer loss where there is one, against iteration for each run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, path in runs.items():
        lines = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
        if not lines:
            continue
        it = [ln["iteration"] for ln in lines]
        axes[0].plot(it, [ln.get("loss_ebm", np.nan) for ln in lines], label=labels.get(run, run), lw=1)
        if "loss_init" in lines[0]:
            axes[1].plot(it, [ln["loss_init"] for ln in lines], label=labels.get(run, run), lw=1)
    axes[0].set_title("EBM loss  mean w_i (F(y^K) - F(y+))")
    axes[1].set_title("initializer loss  |y^K - y0|^2")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    save(fig, out)


def guidance_figure(table, out: str | Path) -> None:
    """FID (and class accuracy) against the guidance weight w, and the paper's ImageNet 32 FID and
    IS curve (spec 6.1) beside it."""
    import pandas as pd

    df = pd.DataFrame(table).sort_values("w")
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ax = axes[0]
    for col in [c for c in df.columns if c.startswith("FID (")]:
        ax.plot(df["w"], df[col], "o-", label=f"reproduced {col} ({df['dataset'].iloc[0]})")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("FID")
    if "class_accuracy" in df:
        acc = ax.twinx()
        acc.plot(df["w"], df["class_accuracy"], "s--", color="tab:green", label="class accuracy")
        acc.set_ylabel("class accuracy of samples")
        acc.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("reproduced")
    pub = df.dropna(subset=["published_FID"])
    ax = axes[1]
    if len(pub):
        ax.plot(pub["w"], pub["published_FID"], "o-", label="published FID")
        ax2 = ax.twinx()
        ax2.plot(pub["w"], pub["published_IS"], "s--", color="tab:red", label="published IS")
        ax2.set_ylabel("IS")
        ax2.legend(fontsize=7, loc="lower right")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("FID")
    ax.set_title(f"paper ({df['published_dataset'].iloc[0]}, read off the figure)")
    for a in axes:
        a.grid(alpha=0.3)
    save(fig, out)
