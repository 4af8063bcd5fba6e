"""Short-run MCMC EBM (Nijkamp, Hill, Zhu, Wu 2019, "Learning non-convergent non-persistent
short-run MCMC toward energy-based model").

Every training chain starts from noise (``baseline.init``: ``U(-s, s)`` as in the paper, or
``N(0, s^2)``), runs ``K = train.langevin_steps`` data-space Langevin steps on the current
EBM (``baselines.common``), and is thrown away: no persistence, no diffusion, no initializer.
The EBM loss is ``mean(F(x_neg) - F(x_pos))`` (plus ``energy_reg`` times the squared energies,
0 by default, which the paper does not use). The learned model is the K-step sampler itself,
so sampling runs the same kind of chain from noise (``sample.langevin_steps`` steps; set it
equal to ``train.langevin_steps`` to sample exactly as trained).

    cdrl train --config workflow/config/experiments/short_run_digits.yaml --run-dir results/runs/short_run

Differences from the paper: the EBM is this project's ``ebm`` network (spectral norm and time
input 0) rather than the paper's plain ConvNet, trained with the project's Adam, warm-up,
gradient clipping and EMA.
"""

from __future__ import annotations

import torch

from .common import SingleEBM

__all__ = ["ShortRunEBM"]


class ShortRunEBM(SingleEBM):
    """Non-persistent short-run MCMC from noise."""

    def _train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Noise -> K Langevin steps -> contrastive update."""
        x0 = self.init_noise(x.shape[0])
        self._prepare_chain()
        x_neg = self.langevin(self.ebm, x0, self.cfg.train.langevin_steps)
        return self.ebm_update(x, x_neg)
