"""The one Langevin loop of the project (spec 2.4 for CDRL and DRL, data-space Langevin for the
single-EBM baselines) and the sampler's noise sources.

Every chain, whatever the method, is ``langevin``::

    x <- x + grad_scale * grad F(x) - pull * (x - anchor) + noise_std * eps     (then clamp, callback)

- the recovery chain of CDRL and DRL runs in y-space, ``y = sqrt(m_i) x_{i-1}``, with
  ``grad_scale = 1/2``, ``pull_i = s_i^2 / (2 sigma_i^2) = b2 c_i / 2`` below the top step (0 at the
  top step, whose EBM is unconditional), anchor ``x_i`` and ``noise_std = noise_scale * s_i``:
  that is ``y + (s^2 / 2) grad log p(y | x_i) + s eps`` for ``log p = F / s^2 - |y - x_i|^2 /
  (2 sigma^2)`` (spec 2.2: ``f = F / s^2``). No Metropolis correction and no clipping.
- the single-EBM baselines run in data space with ``grad_scale = step_size``, no pull, their own
  ``noise_std`` and an optional clamp (``baselines.common``).
- ``callback(x) -> x`` runs after every step: inpainting resets the known pixels there
  (``cdrl.tasks.inpaint``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["energy_grad_fn", "ebm_grad_fn", "langevin", "langevin_drift", "randn", "PerImageNoise",
           "NoiseList", "image_seed", "Noise"]


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


class NoiseList:
    """Given noise, one tensor per draw in order (timing and A/B runs that replay a chain)."""

    def __init__(self, draws) -> None:
        self._draws = iter(draws)

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        eps = next(self._draws)
        if tuple(eps.shape) != tuple(shape):
            raise ValueError(f"given noise has shape {tuple(eps.shape)}, the chain draws {shape}")
        return eps.to(dtype=dtype)


Noise = torch.Generator | PerImageNoise | NoiseList | None


def randn(shape, like: torch.Tensor | None = None, generator: Noise = None,
          device: torch.device | None = None) -> torch.Tensor:
    """Standard normal noise from ``generator`` (a torch generator, per-image streams, or the
    global RNG) on ``like``'s (or ``device``'s) device."""
    device = like.device if like is not None else device
    dtype = like.dtype if like is not None else torch.float32
    if isinstance(generator, PerImageNoise | NoiseList):
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


def langevin_drift(grad_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   grad_scale: float | torch.Tensor, pull: torch.Tensor | None = None,
                   anchor: torch.Tensor | None = None) -> torch.Tensor:
    """The deterministic part of one Langevin step: ``grad_scale * grad F(x) - pull * (x - anchor)``
    (no pull term when ``pull`` is None)."""
    drift = grad_scale * grad_fn(x)
    if pull is not None:
        drift = drift - pull * (x - anchor)
    return drift


def langevin(grad_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_steps: int, *,
             grad_scale: float | torch.Tensor, noise_std: float | torch.Tensor,
             pull: torch.Tensor | None = None, anchor: torch.Tensor | None = None,
             clamp: float = 0.0, generator: Noise = None,
             callback: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Run ``n_steps`` Langevin steps from ``x`` (module docstring); returns the detached result.

    Per-sample coefficients broadcast against ``x`` (shape ``[B, 1, ...]``). Noise is drawn at
    every step unless ``noise_std`` is the number 0 (a tensor is always drawn for, so a chain's
    random stream does not depend on its values); ``clamp > 0`` clips to ``[-clamp, clamp]``.
    """
    x = x.detach()
    draw = isinstance(noise_std, torch.Tensor) or noise_std > 0
    for _ in range(n_steps):
        x = x + langevin_drift(grad_fn, x, grad_scale, pull, anchor)
        if draw:
            x = x + noise_std * randn(x.shape, x, generator)
        if clamp > 0:
            x = x.clamp(-clamp, clamp)
        if callback is not None:
            x = callback(x)
    return x
