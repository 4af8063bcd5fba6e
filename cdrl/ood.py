"""Out-of-distribution scoring with the learned energy (spec 6.4).

The score of an input ``x`` is the EBM energy at a chosen level ``l`` (default 0, the lowest
noise level, as the paper's OOD table uses): ``F(sqrt(m_{l+1}) x, level l)``, with EMA weights.
A higher energy means more in-distribution. The input scaling and level are NOT FOUND in the
sources; this treats the clean input as a level-``l`` sample, and ``noise=True`` instead draws
``x_l`` from the forward process first (seeded).

    cdrl ood --run-dir DIR --in-dist IN.npz --ood OOD.npz --out auroc.json [--level 0]
"""

from __future__ import annotations

import torch

from .nets.layers import frozen_spectral_norm, gather_rows

__all__ = ["energy_scores", "auroc"]


@torch.no_grad()
def energy_scores(method, x: torch.Tensor, level: int = 0, use_ema: bool = True,
                  noise: bool = False, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Energy ``F`` of each row of ``x`` (data coordinates) at ``level``."""
    if not 0 <= level < method.T:
        raise ValueError(f"level must be in 0..{method.T - 1}, got {level}")
    ebm = (method.ebm_ema.model if use_ema else method.ebm).eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    with frozen_spectral_norm(ebm):
        cond_levels = ebm.condition(method.t_level[: method.T])
        for lo in range(0, len(x), batch_size):
            xb = x[lo: lo + batch_size].to(method.device)
            if noise:
                eps = torch.randn(xb.shape, generator=gen).to(xb)
                xb = method.sqrt_ab[level] * xb + method.sigma_bar[level] * eps
            k = torch.full((len(xb),), level, dtype=torch.long, device=method.device)
            f = ebm.energy(method._per_sample("sqrt_m", k) * xb, gather_rows(cond_levels, k))
            out.append(f.cpu())
    return torch.cat(out) if out else torch.zeros(0)


def auroc(in_scores: torch.Tensor, ood_scores: torch.Tensor) -> float:
    """Area under the ROC curve for "in-distribution scores higher", ties counted as 1/2
    (the Mann-Whitney U statistic with average ranks)."""
    n_in, n_ood = len(in_scores), len(ood_scores)
    if n_in == 0 or n_ood == 0:
        raise ValueError("AUROC needs at least one in-distribution and one OOD score")
    scores = torch.cat([in_scores, ood_scores]).double()
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # Average the ranks of tied values.
    uniq, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    rank_sum = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    ranks = (rank_sum / counts)[inverse]
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_ood))
