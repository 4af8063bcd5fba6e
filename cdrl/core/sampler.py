"""Samplers: the recovery Langevin chain (spec 2.4) and the final Tweedie step (spec 5.1).

One Langevin step in y-space, with ``y = sqrt(m_i) x_{i-1}``::

    y <- y + 0.5 * grad_y F(y, level i-1) - pull_i * (y - x_i) + noise_scale * s_i * eps

which is ``y + (s^2 / 2) grad log p(y | x_i) + s eps`` for ``log p = F / s^2 - |y - x_i|^2 / (2 sigma^2)``
(spec 2.2: ``f = F / s^2``). ``pull_i = s_i^2 / (2 sigma_i^2) = b2 c_i / 2`` below the top step and
0 at the top step, whose EBM is unconditional. No Metropolis correction and no clipping.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["energy_grad_fn", "ebm_grad_fn", "recovery_langevin", "randn", "PerImageNoise", "image_seed", "Noise"]


def image_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for image ``index`` of a run sampled with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class PerImageNoise:
    """One random stream per image, so image ``i`` depends only on ``(seed, i)``.

    Every draw of the sampler (initial noise, proposal noise, each Langevin step) takes the
    next ``numel`` values of each image's own stream, whatever the batch size or sharding
    (``--start/--count``). Streams are generated on the CPU in blocks of a fixed size that
    depends only on the image shape, which keeps them identical across batchings.
    """

    def __init__(self, seed: int, indices, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._gens = [torch.Generator().manual_seed(image_seed(seed, i)) for i in indices]
        self._buf: torch.Tensor | None = None
        self._pos = 0

    def __len__(self) -> int:
        return len(self._gens)

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        if shape[0] != len(self._gens):
            raise ValueError(f"noise for {shape[0]} images requested from {len(self)} streams")
        numel = int(np.prod(shape[1:]))
        if self._buf is None or self._pos + numel > self._buf.shape[1]:
            block = max(1, 2**16 // numel) * numel
            self._buf = torch.stack([torch.randn(block, generator=g) for g in self._gens])
            self._pos = 0
        out = self._buf[:, self._pos: self._pos + numel]
        self._pos += numel
        return out.reshape(shape).to(self.device, dtype)


Noise = torch.Generator | PerImageNoise | None


def randn(shape, like: torch.Tensor | None = None, generator: Noise = None,
          device: torch.device | None = None) -> torch.Tensor:
    """Standard normal noise from ``generator`` (a torch generator, per-image streams, or the
    global RNG) on ``like``'s (or ``device``'s) device."""
    device = like.device if like is not None else device
    dtype = like.dtype if like is not None else torch.float32
    if isinstance(generator, PerImageNoise):
        return generator.randn(tuple(shape), dtype).to(device)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def energy_grad_fn(energy: Callable[[torch.Tensor], torch.Tensor]):
    """Return ``y -> grad_y sum(energy(y))``; only the sample's gradient is computed."""

    def grad(y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(y).sum(), y)
        return g

    return grad


def ebm_grad_fn(ebm, cond):
    """``y -> grad_y sum F(y, cond)`` for a Langevin chain: the network's hand-written gradient
    where it has one (``ToyEBM.langevin_grad``), autograd otherwise."""
    if hasattr(ebm, "langevin_grad"):
        return ebm.langevin_grad(cond)
    return energy_grad_fn(lambda y: ebm.energy(y, cond))


def recovery_langevin(grad_fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                      x_cond: torch.Tensor, step_size_sq: torch.Tensor, pull: torch.Tensor,
                      n_steps: int, noise_scale: float = 1.0,
                      generator: Noise = None) -> torch.Tensor:
    """Run ``n_steps`` of the recovery Langevin chain from ``y`` (per-sample coefficients are
    broadcastable to ``y``: shape ``[B, 1, ...]``). Returns the detached final sample."""
    y = y.detach()
    noise_std = noise_scale * torch.sqrt(step_size_sq)
    for _ in range(n_steps):
        drift = 0.5 * grad_fn(y) - pull * (y - x_cond)
        y = y + drift + noise_std * randn(y.shape, y, generator)
    return y
