"""2-D toy distributions: checkerboard (spec 11), 8 Gaussians, rings, and quadrants.

Checkerboard: a 4x4 board of cells of side ``scale`` centred on the origin (``[-2s, 2s]^2``,
``[-8, 8]^2`` for the official ``s = 4``); the 8 cells whose integer coordinates
``floor(x / s) + floor(y / s)`` are odd are filled uniformly. These are exactly the 8 squares the
official ``toy_example.py`` lists (``(1, 0)``, ``(0, 1)``, ``(0, -1)``, ``(1, -2)``, ``(-1, -2)``,
``(-2, -1)``, ``(-1, 0)``, ``(-2, 1)`` by lower-left corner, in units of ``s``): the cell
touching the origin from the lower left, ``[-s, 0)^2``, is empty. ``in_checkerboard`` tests
membership exactly, so the fraction of samples in the support is a known-answer metric.

Quadrants (for compositional generation, spec 6.2): four Gaussian blobs centred at
``(+-scale/2, +-scale/2)`` with std ``0.15 * scale``, each point carrying two binary attributes
``right`` (blob centre x > 0) and ``upper`` (centre y > 0). Conditioning on ``right`` alone gives
the right half-plane, ``upper`` the upper one; composing both should give only the upper-right blob.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["TOY_DATASETS", "ToyData", "make_toy", "in_checkerboard"]


def _checkerboard(n: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    cells = torch.tensor([(cx, cy) for cx in range(-2, 2) for cy in range(-2, 2)
                          if (cx + cy) % 2 == 1], dtype=torch.float32)
    pick = torch.randint(len(cells), (n,), generator=gen)
    return (cells[pick] + torch.rand(n, 2, generator=gen)) * scale


def _eight_gaussians(n: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float32) * (math.pi / 4)
    centers = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * scale
    pick = torch.randint(8, (n,), generator=gen)
    return centers[pick] + 0.1 * scale * torch.randn(n, 2, generator=gen)


def _rings(n: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    radii = torch.tensor([0.5, 1.0, 1.5, 2.0]) * scale
    pick = torch.randint(len(radii), (n,), generator=gen)
    theta = torch.rand(n, generator=gen) * (2 * math.pi)
    r = radii[pick] + 0.04 * scale * torch.randn(n, generator=gen)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


QUADRANT_ATTRIBUTES = ("right", "upper")


def _quadrants(n: int, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    attrs = torch.randint(2, (n, 2), generator=gen)
    centers = (attrs.float() * 2 - 1) * (scale / 2)
    return centers + 0.15 * scale * torch.randn(n, 2, generator=gen), attrs


TOY_DATASETS = {"checkerboard": _checkerboard, "8gaussians": _eight_gaussians, "rings": _rings,
                "quadrants": _quadrants}
TOY_ATTRIBUTES = {"quadrants": QUADRANT_ATTRIBUTES}


def in_checkerboard(x: torch.Tensor, scale: float = 4.0) -> torch.Tensor:
    """Boolean mask: the points that lie inside a filled checkerboard cell."""
    cell = torch.floor(x / scale)
    inside_board = (cell >= -2).all(dim=1) & (cell <= 1).all(dim=1)
    return inside_board & ((cell[:, 0] + cell[:, 1]).remainder(2) == 1)


@dataclass
class ToyData:
    """A fixed point cloud; batches are drawn without replacement each iteration (spec 11)."""

    points: torch.Tensor
    name: str
    scale: float
    attributes: torch.Tensor | None = None  # long 0/1 [N, A] (quadrants), else None
    attribute_names: tuple[str, ...] = ()

    def batch(self, batch_size: int, device: torch.device, with_index: bool = False):
        """``batch_size`` points (and with ``with_index`` their row indices)."""
        n = self.points.shape[0]
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} toy points; lower "
                             f"train.batch_size or raise data.num_points")
        idx = torch.randperm(n)[:batch_size]
        return (self.points[idx].to(device), idx) if with_index else self.points[idx].to(device)

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)


def make_toy(name: str, num_points: int, scale: float, seed: int) -> ToyData:
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
    gen = torch.Generator().manual_seed(seed)
    drawn = TOY_DATASETS[name](num_points, scale, gen)
    if name in TOY_ATTRIBUTES:
        return ToyData(drawn[0], name, scale, drawn[1], TOY_ATTRIBUTES[name])
    return ToyData(drawn, name, scale)
