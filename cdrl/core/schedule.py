"""Noise schedules of CDRL and DRL, with every per-level and per-step quantity (spec 1.1-1.3, 2.3).

Levels ``i = 0..T`` carry marginals ``x_i = sqrt(alpha_bar_i) x + sqrt(1 - alpha_bar_i) eps``.
Step ``i = 1..T`` goes from level ``i-1`` to level ``i``; EBM ``i`` models level ``i-1`` given
level ``i``. Per-step arrays below are stored 0-based: entry ``k`` is step ``i = k + 1``.

* ``alpha_i = alpha_bar_i / alpha_bar_{i-1}``, ``beta_i = 1 - alpha_i``, ``sigma_i = sqrt(beta_i)``
* ``beta_tilde_i = (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i) * beta_i`` (DDPM "small" variance)
* ``c_i = sigma_bar_{i-1} / sigma_bar_0`` (``"std_ratio"``, CDRL and DRL images) or the constant
  ``1 / sigma_bar_0`` (``"constant"``, the official toy example, spec 11)
* ``s_i^2 = b2 * c_i * sigma_i^2`` with ``b2 = 4e-4`` (CDRL), ``2e-4`` (DRL), ``2e-3`` (toy)
* ``w_i = sigma_1 / sigma_i`` (EBM loss weight), ``m_i = alpha_i`` for ``i < T`` and ``m_T = 1``
  (the top step is an unconditional EBM on level T-1: no scaling, no quadratic term).

CDRL (spec 1.2): ``lambda(t) = -2 log tan(a t + b)`` with ``b = arctan(exp(-lambda_max / 2))``,
``a = arctan(exp(-lambda_min / 2)) - b``, ``t = i / T``.
DRL (spec 1.3): DDPM's linear beta schedule (1000 steps, 1e-4 to 0.02) read at step indices
``k * (1000 // (2 (T-1)))`` for ``k = 0..T-1`` and 999 for the top level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Schedule", "make_schedule", "cdrl_logsnr", "drl_alpha_bar", "DEFAULT_B2"]

DEFAULT_B2 = {"cdrl": 4e-4, "drl": 2e-4}
PER_LEVEL = ("logsnr", "alpha_bar", "sigma_bar")
PER_STEP = ("alpha", "beta", "sigma", "beta_tilde", "c", "step_size_sq", "weight", "m")


def cdrl_logsnr(levels: int, logsnr_max: float = 9.8, logsnr_min: float = -5.1) -> torch.Tensor:
    """Cosine schedule in logSNR form, truncated to [logsnr_min, logsnr_max], uniform in t."""
    if not logsnr_max > logsnr_min:
        raise ValueError(f"need logsnr_max > logsnr_min, got {logsnr_max} <= {logsnr_min}")
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    t = torch.arange(levels + 1, dtype=torch.float64) / levels
    return -2.0 * torch.log(torch.tan(a * t + b))


def drl_alpha_bar(levels: int, n_ddpm: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> torch.Tensor:
    """DRL's grouping of DDPM's linear schedule: cumulative alpha_bar at T+1 DDPM indices."""
    betas = torch.linspace(beta_start, beta_end, n_ddpm, dtype=torch.float64)
    ddpm_alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    spacing = n_ddpm // (2 * (levels - 1)) if levels > 1 else 0
    idx = [k * spacing for k in range(levels)] + [n_ddpm - 1]
    return ddpm_alpha_bar[idx]


@dataclass(frozen=True)
class Schedule:
    """All schedule quantities as float64 tensors (per level: T+1 values; per step: T values)."""

    kind: str
    levels: int
    b2: float
    c_mode: str
    logsnr: torch.Tensor
    alpha_bar: torch.Tensor
    sigma_bar: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    sigma: torch.Tensor
    beta_tilde: torch.Tensor
    c: torch.Tensor
    step_size_sq: torch.Tensor
    weight: torch.Tensor
    m: torch.Tensor

    def to_dict(self) -> dict:
        out: dict = {"kind": self.kind, "levels": self.levels, "b2": self.b2,
                     "c_mode": self.c_mode}
        for name in PER_LEVEL + PER_STEP:
            out[name] = [float(v) for v in getattr(self, name)]
        return out

    def table(self) -> str:
        """Readable per-level and per-step tables (the `cdrl schedule` output without --json)."""
        lines = [f"{self.kind} schedule, T = {self.levels}, s^2 = {self.b2:g} * c * sigma^2 "
                 f"(c: {self.c_mode})", "",
                 f"{'level':>5} {'logsnr':>9} {'alpha_bar':>10} {'sqrt_ab':>9} {'sigma_bar':>9}"]
        for i in range(self.levels + 1):
            ab = float(self.alpha_bar[i])
            lines.append(f"{i:>5} {float(self.logsnr[i]):>9.3f} {ab:>10.6f} {math.sqrt(ab):>9.5f}"
                         f" {float(self.sigma_bar[i]):>9.5f}")
        lines += ["", f"{'step':>5} {'alpha':>9} {'beta':>9} {'sigma':>8} {'beta_tilde':>11}"
                  f" {'c':>8} {'step_s':>8} {'s^2':>10} {'weight':>7} {'m':>8}"]
        for k in range(self.levels):
            lines.append(
                f"{k + 1:>5} {float(self.alpha[k]):>9.5f} {float(self.beta[k]):>9.5f}"
                f" {float(self.sigma[k]):>8.4f} {float(self.beta_tilde[k]):>11.5g}"
                f" {float(self.c[k]):>8.2f} {math.sqrt(float(self.step_size_sq[k])):>8.4g}"
                f" {float(self.step_size_sq[k]):>10.4g} {float(self.weight[k]):>7.3f}"
                f" {float(self.m[k]):>8.5f}")
        return "\n".join(lines)


def make_schedule(kind: str = "cdrl", levels: int = 6, *, logsnr_max: float = 9.8,
                  logsnr_min: float = -5.1, b2: float | None = None,
                  c_mode: str = "std_ratio") -> Schedule:
    """Build a schedule. ``b2`` defaults to the method's own constant (``DEFAULT_B2``)."""
    if kind not in DEFAULT_B2:
        raise ValueError(f"schedule kind must be one of {sorted(DEFAULT_B2)}, got {kind!r}")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"schedule levels must be an integer >= 1, got {levels!r}")
    if c_mode not in ("std_ratio", "constant"):
        raise ValueError(f"c_mode must be 'std_ratio' or 'constant', got {c_mode!r}")
    if kind == "cdrl":
        logsnr = cdrl_logsnr(levels, logsnr_max, logsnr_min)
        alpha_bar = torch.sigmoid(logsnr)
    else:
        alpha_bar = drl_alpha_bar(levels)
        logsnr = torch.log(alpha_bar) - torch.log1p(-alpha_bar)
    # 1 - sigmoid(l) = sigmoid(-l) keeps precision at the clean end for CDRL.
    one_minus_ab = torch.sigmoid(-logsnr) if kind == "cdrl" else 1.0 - alpha_bar
    sigma_bar = torch.sqrt(one_minus_ab)
    alpha = alpha_bar[1:] / alpha_bar[:-1]
    beta = 1.0 - alpha
    sigma = torch.sqrt(beta)
    beta_tilde = one_minus_ab[:-1] / one_minus_ab[1:] * beta
    if c_mode == "std_ratio":
        c = sigma_bar[:-1] / sigma_bar[0]
    else:
        c = torch.full((levels,), 1.0 / float(sigma_bar[0]), dtype=torch.float64)
    b2 = DEFAULT_B2[kind] if b2 is None else float(b2)
    m = alpha.clone()
    m[-1] = 1.0
    return Schedule(kind=kind, levels=levels, b2=b2, c_mode=c_mode, logsnr=logsnr,
                    alpha_bar=alpha_bar, sigma_bar=sigma_bar, alpha=alpha, beta=beta,
                    sigma=sigma, beta_tilde=beta_tilde, c=c, step_size_sq=b2 * c * beta,
                    weight=sigma[0] / sigma, m=m)
