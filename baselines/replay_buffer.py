"""Replay-buffer EBM (Du & Mordatch 2019, "Implicit Generation and Generalization in
Energy-Based Models").

A persistent buffer of ``baseline.buffer_size`` samples, initialised from noise, is part of the
method's state (and of every checkpoint, so resume is exact). Each iteration:

1. draw ``B`` distinct slots at random (``torch.randperm``; distinct so that writing back is
   well defined), restart each chain from noise with probability ``baseline.reinit_prob``;
2. run ``K = train.langevin_steps`` data-space Langevin steps (``baselines.common``) on the
   current EBM and write the results back into the same slots;
3. EBM loss ``mean(F(x_neg) - F(x_pos) + energy_reg * (F(x_pos)^2 + F(x_neg)^2))`` (the paper
   uses ``energy_reg = 1``).

    cdrl train --config workflow/config/experiments/replay_buffer_digits.yaml \
        --run-dir results/runs/replay_buffer

Differences from the paper: the EBM is this project's ``ebm`` network (spectral norm, time
input 0) with the project's Adam, warm-up, clipping and EMA; the paper's replay buffer grows
to its size from 100% noise chains, ours starts full of noise (same distribution of chain
starts from the first iteration on). ``sample`` starts fresh chains from noise (so that image
``i`` of ``cdrl sample`` depends only on its seed), where the paper reports samples of its
persistent chains; the buffer itself is ``method.buffer``.
"""

from __future__ import annotations

import torch

from cdrl.core.config import ConfigError

from .common import SingleEBM

__all__ = ["ReplayBufferEBM"]


class ReplayBufferEBM(SingleEBM):
    """Persistent chains kept in a replay buffer, restarted from noise with a small probability."""

    def __init__(self, cfg, data_shape, device, num_classes: int = 0) -> None:
        super().__init__(cfg, data_shape, device, num_classes)
        size, batch = cfg.baseline.buffer_size, cfg.train.batch_size
        if size < batch:
            raise ConfigError(f"baseline.buffer_size: must be >= train.batch_size ({batch}), "
                              f"got {size}")
        self.buffer = self.init_noise(size)

    def _train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Buffer slots (some restarted) -> K Langevin steps -> write back -> update."""
        bc = self.cfg.baseline
        n = x.shape[0]
        slots = torch.randperm(bc.buffer_size, device=self.device)[:n]
        restart = torch.rand(n, device=self.device) < bc.reinit_prob
        fresh = self.init_noise(n)
        mask = restart.view(-1, *([1] * len(self.data_shape)))
        x0 = torch.where(mask, fresh, self.buffer[slots])
        self._prepare_chain()
        x_neg = self.langevin(self.ebm, x0, self.cfg.train.langevin_steps)
        self.buffer[slots] = x_neg
        stats = self.ebm_update(x, x_neg)
        stats["restart_frac"] = restart.float().mean()
        return stats

    def _extra_state(self) -> dict:
        return {"buffer": self.buffer.clone()}

    def _load_extra_state(self, state: dict) -> None:
        buffer = state["buffer"].to(self.device)
        if buffer.shape != self.buffer.shape:
            raise ValueError(f"checkpoint replay buffer has shape {tuple(buffer.shape)}, the "
                             f"config asks for {tuple(self.buffer.shape)}")
        self.buffer = buffer.clone()
