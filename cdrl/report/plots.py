"""The toy figure of the paper (spec 11, ``Images/toy_example.png`` layout), from a run directory,
and the toy table's numbers (``toy_run_metrics``), computed on their own: the figure only shows them.

Rows: observed noisy data ``x_l``, the learned density ``exp(F(sqrt(m) x, level l) / s^2)``
normalised on a grid, and generated samples, for levels ``l = T-1, ..., 0`` (EMA weights).

    cdrl plot-toy --run-dir results/runs/toy_fast --samples results/samples/toy_fast.npz \
        --out results/figures/toy_fast.png
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cdrl.core.nets.layers import frozen_spectral_norm
from cdrl.eval.metrics2d import toy_metrics
from cdrl.io import atomic_savefig
from cdrl.train.trainer import build_data, load_run

__all__ = ["toy_figure", "toy_run_metrics", "level_densities"]


@torch.no_grad()
def level_densities(method, extent: float, grid: int) -> torch.Tensor:
    """Normalised densities ``[T, grid, grid]`` of the EBM energy term on ``[-extent, extent]^2``
    (rows follow the second coordinate, as ``imshow`` expects)."""
    ebm = method.ebm_ema.model.eval()
    axis = torch.linspace(-extent, extent, grid, device=method.device)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    out = []
    with frozen_spectral_norm(ebm):
        for step in range(method.T):
            k = torch.full((pts.shape[0],), step, dtype=torch.long, device=method.device)
            f = method.energy(pts, k, ebm)
            logp = f / method.coef["step_size_sq"][step]
            out.append(torch.softmax(logp, dim=0).reshape(grid, grid).cpu())
    return torch.stack(out)


def _read_samples(samples: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A ``cdrl sample`` file of 2-D data: every level ``[T+1, N, 2]``, the final samples (after
    the Tweedie step, when one is configured) and the metadata."""
    import numpy as np

    with np.load(samples) as npz:
        return (torch.from_numpy(npz["levels"]), torch.from_numpy(npz["x"]),
                json.loads(str(npz["meta"])))


def toy_run_metrics(run_dir: Path, samples: Path) -> dict:
    """The toy table's numbers for a run's samples (``cdrl.eval.metrics2d.toy_metrics``: support
    fraction, sliced Wasserstein, MMD against the data), with the iteration, seed and steps they
    were drawn at. Computed here, apart from the figure, which only shows them."""
    cfg, _, state = load_run(run_dir)
    levels, x_final, meta = _read_samples(samples)
    return {"iteration": meta["iteration"], "num_samples": levels.shape[1], "seed": meta["seed"],
            "steps": meta["steps"], "checkpoint_iteration": int(state["iteration"]),
            **toy_metrics(x_final, cfg.data.name, cfg.data.scale, cfg.data.seed)}


def toy_figure(run_dir: Path, samples: Path, out: Path, grid: int = 200,
               metrics: dict | None = None) -> None:
    """Draw the figure to ``out`` (PNG, plus PDF beside it); ``metrics`` (``toy_run_metrics``),
    when given, puts the support fraction in the title.

    ``samples`` is the ``.npz`` of ``cdrl sample`` (its ``levels`` array gives the samples row).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, method, _ = load_run(run_dir)
    levels, _, meta = _read_samples(samples)
    num, seed = levels.shape[1], meta["seed"]
    data = build_data(cfg)
    extent = float(data.points.abs().max()) * 1.05
    dens = level_densities(method, extent, grid)
    gen = torch.Generator().manual_seed(seed)
    real = data.points[torch.randperm(len(data.points), generator=gen)[:num]]
    T = method.T
    fig, axes = plt.subplots(3, T, figsize=(2.2 * T, 6.9), squeeze=False)
    for col, lvl in enumerate(range(T - 1, -1, -1)):
        noisy = method.sqrt_ab[lvl].cpu() * real + method.sigma_bar[lvl].cpu() * torch.randn(
            real.shape, generator=gen)
        samples = levels[T - lvl].cpu()
        rng = [[-extent, extent]] * 2
        axes[0, col].hist2d(noisy[:, 0].numpy(), noisy[:, 1].numpy(), bins=100, range=rng,
                            cmap="viridis")
        axes[1, col].imshow(dens[lvl].numpy(), origin="lower", cmap="viridis",
                            extent=(-extent, extent, -extent, extent))
        axes[2, col].hist2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=100, range=rng,
                            cmap="viridis")
        axes[0, col].set_title(f"level {lvl}")
        for row in range(3):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    for row, name in enumerate(("data", "density", "samples")):
        axes[row, 0].set_ylabel(name)
    title = f"{run_dir.name}: iteration {meta['iteration']}"
    if metrics and "support_fraction" in metrics:
        title += f", {100 * metrics['support_fraction']:.1f}% of samples in the support"
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, out, dpi=110)
    atomic_savefig(fig, out.with_suffix(".pdf"))
    plt.close(fig)
