"""Shared layers: spectral normalisation with explicit control, and the noise-level embedding.

Spectral normalisation (Miyato et al. 2018) follows `torch.nn.utils.spectral_norm` exactly
(weight viewed as ``[out, -1]``, one power iteration per training-mode call, ``u``/``v``
buffers, ``sigma = u^T W v``), but is written out so that the trainer can

* run the power iteration once per iteration at a chosen point (spec 3.4 step 3), and
* freeze the normalised weights (no grad) while the Langevin sampler calls the EBM 15 times,
  instead of recomputing ``W / sigma`` on every call (a large share of the official toy's time).

Spec 7.3: DRL's variant only scales weights down, ``W / max(sigma, 1)``; ``mode="down"`` gives it.

Noise-level embedding (spec 7.1): logSNR -> ``tau = arctan(exp(-lambda/2)) / (pi/2)``, times 1000,
then a sinusoidal embedding (sin half, cos half, frequency base 10000).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "fast_linear",
    "SNLinear",
    "SNConv2d",
    "power_iteration_",
    "frozen_spectral_norm",
    "gather_rows",
    "logsnr_to_time",
    "sinusoidal_embedding",
]


# --------------------------------------------------------------------------- fast CPU linear
# PyTorch sends fp32 CPU matmuls to MKL, which runs its AVX2 path on AMD processors (about
# 100 GFLOP/s per core on the project's machines); oneDNN's fp32 kernel uses AVX-512 there and
# measured 2.4x faster on the toy's 2500x256x256 products (scripts/bench_toy.py). Same IEEE fp32
# arithmetic, no reduced precision. CDRL_ONEDNN_LINEAR=0 turns it off.
_ONEDNN = (os.environ.get("CDRL_ONEDNN_LINEAR", "1") != "0"
           and torch.backends.mkldnn.is_available()
           and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _onednn_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and x.dim() == 2 and x.shape[0] > 0)


class _OneDNNLinear(torch.autograd.Function):
    """``x @ w.T + b`` through oneDNN; the backward calls it again, so it is twice-differentiable."""

    @staticmethod
    def forward(x, w, b):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.contiguous(), b, "none",
                                                  [], "")

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b = inputs
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = fast_linear(grad, w.t())
        if ctx.needs_input_grad[1]:
            # MKL reads the transposed operands in place; oneDNN would need two strided copies
            # of [C, B] (measured slower at B = 5000).
            gw = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return gx, gw, gb


def fast_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` with fp32 CPU products routed through oneDNN (see above)."""
    if _onednn_ok(x, w):
        return _OneDNNLinear.apply(x, w, b)
    return F.linear(x, w, b)


class _SpectralNormMixin:
    """Mixin giving ``self.weight`` a spectral-normalised view (see module docstring)."""

    sn_enabled: bool
    sn_mode: str

    def _init_sn(self, enabled: bool, mode: str, eps: float = 1e-12) -> None:
        if mode not in ("full", "down"):
            raise ValueError(f"spectral norm mode must be 'full' or 'down', got {mode!r}")
        self.sn_enabled = enabled
        self.sn_mode = mode
        self.sn_eps = eps
        self._frozen_weight: torch.Tensor | None = None
        if enabled:
            out = self.weight.shape[0]
            flat = self.weight.detach().reshape(out, -1)
            u = F.normalize(torch.randn(out), dim=0, eps=eps)
            v = F.normalize(torch.randn(flat.shape[1]), dim=0, eps=eps)
            self.register_buffer("sn_u", u)
            self.register_buffer("sn_v", v)

    @torch.no_grad()
    def power_iteration(self) -> None:
        """One power-iteration step on the stored ``u``/``v`` (torch's order: v first, then u)."""
        if not self.sn_enabled:
            return
        w = self.weight.reshape(self.weight.shape[0], -1)
        # A zero weight (zero-initialised layers) would zero u and v for good: keep the old ones.
        for vec, new in ((self.sn_v, lambda: torch.mv(w.t(), self.sn_u)),
                         (self.sn_u, lambda: torch.mv(w, self.sn_v))):
            cand = new()
            norm = torch.linalg.vector_norm(cand)
            vec.copy_(torch.where(norm > self.sn_eps, cand / norm.clamp_min(self.sn_eps), vec))

    def normalized_weight(self) -> torch.Tensor:
        if self._frozen_weight is not None:
            return self._frozen_weight
        if not self.sn_enabled:
            return self.weight
        if self.training:
            self.power_iteration()
        w = self.weight.reshape(self.weight.shape[0], -1)
        sigma = torch.dot(self.sn_u, torch.mv(w, self.sn_v))
        if self.sn_mode == "down":
            sigma = torch.clamp(sigma, min=1.0)
        return self.weight / sigma


class SNLinear(_SpectralNormMixin, nn.Linear):
    """``nn.Linear`` with optional spectral normalisation of its weight."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 sn: bool = True, sn_mode: str = "full") -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_sn(sn, sn_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_linear(x, self.normalized_weight(), self.bias)


class SNConv2d(_SpectralNormMixin, nn.Conv2d):
    """``nn.Conv2d`` with optional spectral normalisation (weight reshaped to ``[out, -1]``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, sn: bool = True,
                 sn_mode: str = "full") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias)
        self._init_sn(sn, sn_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


def _sn_modules(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, _SpectralNormMixin)]


def power_iteration_(model: nn.Module) -> None:
    """Refresh every spectral-norm ``u``/``v`` in ``model`` once (what a train-mode call does)."""
    for m in _sn_modules(model):
        m.power_iteration()


@contextmanager
def frozen_spectral_norm(model: nn.Module):
    """Within the block, every SN layer uses a detached, precomputed normalised weight.

    Used around the Langevin chain: the EBM's parameters do not change during it, and only
    gradients with respect to the sample are needed, so ``W / sigma`` is computed once instead
    of once per Langevin step. The maths is unchanged (eval-mode SN does no power iteration).
    """
    mods = _sn_modules(model)
    was_training = [m.training for m in mods]
    try:
        with torch.no_grad():
            for m in mods:
                m.train(False)
                m._frozen_weight = m.normalized_weight().detach()
        yield model
    finally:
        for m, t in zip(mods, was_training, strict=True):
            m._frozen_weight = None
            m.train(t)


def gather_rows(cond, index: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample rows ``c[index]`` of each per-level tensor in ``cond``.

    When gradients flow, the gather is a one-hot matrix product: its backward is one small
    matmul, where indexing's backward is a sort-based ``index_put_`` (about 3 ms per tensor at a
    batch of 2,000 on these CPUs). The values are identical (one-hot rows select exactly).
    """
    if not any(c.requires_grad for c in cond):
        return [c[index] for c in cond]
    onehot = F.one_hot(index, cond[0].shape[0]).to(cond[0].dtype)
    return [onehot @ c for c in cond]


def logsnr_to_time(logsnr: torch.Tensor) -> torch.Tensor:
    """Spec 7.1: clamp logSNR to [-20, 20], map to ``tau * 1000`` with tau in [0, 1]."""
    logsnr = torch.clamp(logsnr, -20.0, 20.0)
    return torch.atan(torch.exp(-0.5 * logsnr)) / (math.pi / 2) * 1000.0


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of a per-sample scalar: ``[sin(t f), cos(t f)]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                            device=t.device) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb
