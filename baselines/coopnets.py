"""Cooperative networks (Xie, Lu, Gao, Zhu, Wu 2018, "Cooperative Training of Descriptor and
Generator Networks", TPAMI; CoopNets).

A generator ``G(z)``, ``z ~ N(0, I_{latent_dim})``, proposes; the EBM ("descriptor") revises
the proposals with ``K = train.langevin_steps`` data-space Langevin steps
(``baselines.common``); the EBM learns contrastively on the revised samples
``mean(F(x_rev) - F(x_pos))`` (+ optional ``energy_reg``), and the generator learns to
reproduce the revision: ``mean_batch sum_dims (G(z) - x_rev)^2`` with the same ``z`` (Adam,
``baseline.generator_lr``, otherwise the EBM's optimizer settings: betas, warm-up, clipping,
EMA decay; its own EMA is used for sampling when ``sample.use_ema``).

    cdrl train --config workflow/config/experiments/coopnets_digits.yaml --run-dir results/runs/coopnets

Differences from the paper:

* **No latent inference.** The original also revises ``z`` by Langevin dynamics on the
  generator posterior ``p(z | x_rev)`` (initialised at the proposal's ``z``) and fits ``G`` to
  the pairs ``(z_rev, x_rev)``. We use the simplified variant that regresses ``G(z)`` onto the
  revised samples with the *same* ``z`` (the form of CDRL's initializer loss), which needs no
  generator-side sampler and no generator noise variance.
* Generator: an MLP for vector data; for images a small upsampling ConvNet (4x4 seed, nearest
  upsampling + 3x3 convs, LeakyReLU, no BatchNorm, ``tanh`` output) rather than the paper's
  deconvolution/BatchNorm network. Width ``baseline.generator_width``.
* The EBM is this project's ``ebm`` network (spectral norm, time input 0).

The generator is not the trainer's ``initializer`` (``initializer`` is None); its statistics are
logged as ``loss_gen``, ``grad_norm_gen``, ``lr_gen`` and per-sample ``init_err``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from cdrl.core.optim import EMA, build_optimizer
from cdrl.core.sampler import Noise, randn

from .common import SingleEBM

__all__ = ["CoopNets", "MLPGenerator", "ConvGenerator", "build_generator"]


class MLPGenerator(nn.Module):
    """``z -> x`` for vector data: three hidden LeakyReLU layers."""

    def __init__(self, latent_dim: int, data_dim: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, data_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvGenerator(nn.Module):
    """``z -> [C, H, W]`` images in ``(-1, 1)``: a 4x4 seed doubled until it covers ``H, W``."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        channels, self.height, self.width = shape
        n_up = max(0, math.ceil(math.log2(max(self.height, self.width) / 4)))
        self.seed_ch = 2 * width
        self.fc = nn.Linear(latent_dim, self.seed_ch * 16)
        layers, ch = [], self.seed_ch
        for _ in range(n_up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, width, 3, padding=1), nn.LeakyReLU(0.2)]
            ch = width
        layers.append(nn.Conv2d(ch, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc(z), 0.2).view(-1, self.seed_ch, 4, 4)
        x = self.net(h)
        if x.shape[-2:] != (self.height, self.width):  # sizes that are not 4 * 2^n
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear",
                              align_corners=False)
        return torch.tanh(x)


def build_generator(latent_dim: int, data_shape: tuple[int, ...], width: int) -> nn.Module:
    if len(data_shape) == 1:
        return MLPGenerator(latent_dim, data_shape[0], width)
    if len(data_shape) == 3:
        return ConvGenerator(latent_dim, data_shape, width)
    raise ValueError(f"CoopNets needs vector or [C, H, W] data, got shape {data_shape}")


class CoopNets(SingleEBM):
    """Generator proposes, EBM revises, both learn from the revision."""

    def __init__(self, cfg, data_shape, device, num_classes: int = 0) -> None:
        super().__init__(cfg, data_shape, device, num_classes)
        bc = cfg.baseline
        self.generator = build_generator(bc.latent_dim, self.data_shape,
                                         bc.generator_width).to(device)
        oc = dataclasses.replace(cfg.train.ebm_optim, name="adam", lr=bc.generator_lr)
        self.gen_grad_clip = oc.grad_clip
        self.gen_ema = EMA(self.generator, oc.ema_decay, cfg.train.ema_ramp)
        self.opt_gen, self.sched_gen = build_optimizer(self.generator.parameters(), oc)

    def modules(self) -> dict[str, nn.Module]:
        return {"ebm": self.ebm, "generator": self.generator}

    def _train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Propose G(z) -> K Langevin steps -> EBM update -> generator regression."""
        z = torch.randn(x.shape[0], self.cfg.baseline.latent_dim, device=self.device)
        self.generator.train()
        x_gen = self.generator(z)
        self._prepare_chain()
        x_rev = self.langevin(self.ebm, x_gen.detach(), self.cfg.train.langevin_steps)
        stats = self.ebm_update(x, x_rev)
        # The target was revised by the EBM before this iteration's EBM step (as in CDRL).
        err = (x_gen - x_rev).pow(2).flatten(1).sum(1)
        loss = err.mean()
        gnorm = self.optimizer_step(loss, loss, self.generator, self.opt_gen, self.sched_gen,
                                    self.gen_ema, self.gen_grad_clip)
        stats.update(loss_gen=loss.detach(), init_err=err.detach(), grad_norm_gen=gnorm,
                     lr_gen=torch.tensor(self.sched_gen.get_last_lr()[0]))
        return stats

    def _chain_start(self, n: int, generator: Noise, use_ema: bool,
                     noise: torch.Tensor | None) -> torch.Tensor:
        """``G(z)``; ``noise``, if given, is the latent ``z`` [n, latent_dim]."""
        gen = (self.gen_ema.model if use_ema else self.generator).eval()
        z = noise if noise is not None else randn((n, self.cfg.baseline.latent_dim), None,
                                                  generator, self.device)
        return gen(z.to(self.device))

    def _extra_state(self) -> dict:
        return {"generator": self.generator.state_dict(), "gen_ema": self.gen_ema.state_dict(),
                "opt_gen": self.opt_gen.state_dict(), "sched_gen": self.sched_gen.state_dict()}

    def _load_extra_state(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.gen_ema.load_state_dict(state["gen_ema"])
        self.opt_gen.load_state_dict(state["opt_gen"])
        self.sched_gen.load_state_dict(state["sched_gen"])
