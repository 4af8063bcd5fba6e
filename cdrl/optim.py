"""Optimizers, warm-up schedules and the exponential moving average (spec 3.5)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["WarmUp", "EMA", "build_optimizer"]


class WarmUp:
    """Learning-rate factor ``min(1, (it + offset) / iters)``; a class so that it checkpoints."""

    def __init__(self, iters: int, offset: int = 0) -> None:
        self.iters = iters
        self.offset = offset

    def __call__(self, it: int) -> float:
        return 1.0 if self.iters <= 0 else min(1.0, (it + self.offset) / self.iters)


def build_optimizer(params, oc: OptimConfig):
    """Adam (EBM) or AdamW (initializer) with the linear warm-up of spec 3.5."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[oc.name]
    opt = cls(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, WarmUp(oc.warmup_iters, oc.warmup_offset))


class EMA:
    """Parameter EMA as torch-ema computes it (``ramp``: decay ``min(d, (1+n)/(10+n))``).

    Buffers (spectral-norm ``u``/``v``) are copied from the live model, which is what sampling
    with torch-ema's ``copy_to`` does in the official code.
    """

    def __init__(self, model: nn.Module, decay: float, ramp: bool = True) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.ramp = ramp
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self.decay
        if self.ramp:
            d = min(d, (1 + self.num_updates) / (10 + self.num_updates))
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
