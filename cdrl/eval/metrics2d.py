"""2-D sample metrics: exact support fraction, sliced Wasserstein distance and MMD to held-out
data."""

from __future__ import annotations

import torch

from cdrl.data.toy import in_checkerboard

__all__ = ["support_fraction", "sliced_wasserstein", "mmd_rbf", "toy_metrics"]


def support_fraction(x: torch.Tensor, scale: float = 4.0) -> float:
    """Fraction of points inside the filled checkerboard cells (exact for the checkerboard)."""
    return float(in_checkerboard(x, scale).float().mean())


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 256,
                       seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two equally sized 2-D point sets."""
    n = min(len(x), len(y))
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_proj, generator=gen)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px = torch.sort(x[:n].double() @ dirs.double(), dim=0).values
    py = torch.sort(y[:n].double() @ dirs.double(), dim=0).values
    return float((px - py).abs().mean())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with a Gaussian kernel (bandwidth: median pairwise distance)."""
    x, y = x.double(), y.double()
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt())
    k = torch.exp(-d2 / (2 * bandwidth**2))
    n, m = len(x), len(y)
    kxx = (k[:n, :n].sum() - k[:n, :n].diagonal().sum()) / (n * (n - 1))
    kyy = (k[n:, n:].sum() - k[n:, n:].diagonal().sum()) / (m * (m - 1))
    return float(kxx + kyy - 2 * k[:n, n:].mean())


HELD_OUT_SEED_OFFSET = 1_000_003


def toy_metrics(samples: torch.Tensor, name: str, scale: float, seed: int,
                mmd_points: int = 2000) -> dict:
    """Sample quality of a 2-D toy against held-out data: a fresh point cloud drawn with
    ``seed + HELD_OUT_SEED_OFFSET`` (never the training points). The support fraction is exact
    for the checkerboard and omitted for the others."""
    from cdrl.data.toy import make_toy

    held_out = make_toy(name, len(samples), scale, seed + HELD_OUT_SEED_OFFSET).points
    out = {"sliced_wasserstein": sliced_wasserstein(samples, held_out),
           "mmd_rbf": mmd_rbf(samples[:mmd_points], held_out[:mmd_points]),
           "held_out_seed": seed + HELD_OUT_SEED_OFFSET}
    if name == "checkerboard":
        out["support_fraction"] = support_fraction(samples, scale)
        out["support_fraction_held_out"] = support_fraction(held_out, scale)
    return out
