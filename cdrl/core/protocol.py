"""The interface every method provides: CDRL, DRL and the single-EBM baselines.

The trainer, ``cdrl sample``, the downstream tasks (OOD, inpainting, composition) and the
measurement code use a method only through these names. A chain of ``T`` recovery-likelihood
EBMs (CDRL, DRL) and a single EBM (``T = 1``, ``baselines.common.SingleEBM``) look alike here:

- **levels.** ``t_level[l]`` is the network's time input of level ``l`` (``0..T``),
  ``sqrt_ab[l]`` and ``sigma_bar[l]`` give the forward marginal ``x_l = sqrt_ab x_0 + sigma_bar
  eps`` (spec 1.1); ``coef[name][k]`` is a per-step coefficient of step ``i = k + 1`` (``sqrt_m``,
  ``step_size_sq`` and, for the chains, ``pull`` and the others of spec 1.2), gathered per sample
  and shaped to broadcast by ``per_sample(name, k)``. A single EBM has one level with time input
  0, no noise, ``sqrt_m = 1`` and its sampler's temperature as ``step_size_sq``.
- **energy.** ``energy(x, k, ebm, labels)`` is the per-sample energy ``F`` of data-space ``x``
  at step ``k`` (input scaled by ``sqrt_m``, spec 2.1); ``level_condition`` and ``grad_fn`` give
  the network condition and the Langevin gradient of step ``k``.
- **training.** ``train_step(x, labels=None)`` runs one iteration and returns detached
  statistics (a ``k`` entry per sample; see ``cdrl.train.trainer``); ``labels`` are the network
  labels ``1..C`` of a conditional run, and methods without classes refuse them.
- **sampling.** ``sample(n, steps, generator, use_ema, return_levels, noise, guide, callback)``:
  ``noise`` is the chain start, ``guide`` a ``cdrl.core.guidance.Guide`` (conditional methods),
  and ``callback(step, y) -> y`` runs after each level's proposal and each Langevin step (the
  hook inpainting uses); every chain is ``cdrl.core.sampler.langevin``.
- **state.** ``modules()``, ``state_dict()`` and ``load_state_dict()`` for checkpoints.

``tests/test_protocol.py`` checks that every registered method satisfies this, signatures
included, and that no module reaches into a method's private members.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from cdrl.core.config import Config

__all__ = ["Method"]


@runtime_checkable
class Method(Protocol):
    cfg: Config
    device: torch.device
    data_shape: tuple[int, ...]
    T: int                              # levels (1 for a single EBM)
    num_classes: int                    # 0: unconditional
    ebm: nn.Module
    ebm_ema: object                     # cdrl.core.optim.EMA: ``.model`` is the EMA network
    initializer: nn.Module | None       # None: no initializer (DRL, single EBMs)
    t_level: torch.Tensor               # network time input per level 0..T
    sqrt_ab: torch.Tensor               # sqrt(alpha_bar) per level
    sigma_bar: torch.Tensor             # sqrt(1 - alpha_bar) per level
    coef: dict[str, torch.Tensor]       # per-step coefficients, indexed by k = i - 1

    def modules(self) -> dict[str, nn.Module]: ...

    def per_sample(self, name: str, k: torch.Tensor) -> torch.Tensor: ...

    def level_condition(self, ebm: nn.Module, k: torch.Tensor,
                        labels: torch.Tensor | None = None): ...

    def grad_fn(self, ebm: nn.Module, k: torch.Tensor, guide=None): ...

    def energy(self, x: torch.Tensor, k: torch.Tensor, ebm: nn.Module | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor: ...

    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None = None
                   ) -> dict[str, torch.Tensor]: ...

    def sample(self, n: int, steps: int | None = None, generator=None,
               use_ema: bool | None = None, return_levels: bool = False,
               noise: torch.Tensor | None = None, guide=None, callback=None): ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
