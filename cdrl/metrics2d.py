"""2-D sample metrics: exact support fraction and the sliced Wasserstein distance."""

from __future__ import annotations

import torch

from .data.toy import in_checkerboard

__all__ = ["support_fraction", "sliced_wasserstein"]


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
