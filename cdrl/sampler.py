"""Samplers: the recovery Langevin chain (spec 2.4) and the final Tweedie step (spec 5.1).

One Langevin step in y-space, with ``y = sqrt(m_i) x_{i-1}``::

    y <- y + 0.5 * grad_y F(y, level i-1) - pull_i * (y - x_i) + noise_scale * s_i * eps

which is ``y + (s^2 / 2) grad log p(y | x_i) + s eps`` for ``log p = F / s^2 - |y - x_i|^2 / (2 sigma^2)``
(spec 2.2: ``f = F / s^2``). ``pull_i = s_i^2 / (2 sigma_i^2) = b2 c_i / 2`` below the top step and
0 at the top step, whose EBM is unconditional. No Metropolis correction and no clipping.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["energy_grad_fn", "recovery_langevin", "randn"]


def randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise from ``generator`` (or the global RNG) on ``like``'s device."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def energy_grad_fn(energy: Callable[[torch.Tensor], torch.Tensor]):
    """Return ``y -> grad_y sum(energy(y))``; only the sample's gradient is computed."""

    def grad(y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(y).sum(), y)
        return g

    return grad


def recovery_langevin(grad_fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                      x_cond: torch.Tensor, step_size_sq: torch.Tensor, pull: torch.Tensor,
                      n_steps: int, noise_scale: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Run ``n_steps`` of the recovery Langevin chain from ``y`` (per-sample coefficients are
    broadcastable to ``y``: shape ``[B, 1, ...]``). Returns the detached final sample."""
    y = y.detach()
    noise_std = noise_scale * torch.sqrt(step_size_sq)
    for _ in range(n_steps):
        drift = 0.5 * grad_fn(y) - pull * (y - x_cond)
        y = y + drift + noise_std * randn(y.shape, y, generator)
    return y
