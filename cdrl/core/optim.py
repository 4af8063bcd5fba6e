"""Optimizers, warm-up schedules and the exponential moving average (spec 3.5)."""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn

from cdrl.core.config import OptimConfig

__all__ = ["WarmUp", "EMA", "build_optimizer", "clip_grad", "optimizer_step", "DivergenceError",
           "average_gradients"]


class WarmUp:
    """Learning-rate factor: linear warm-up ``min(1, (it + offset) / iters)`` (spec 3.5), then an
    optional decay to ``final`` over ``decay_iters`` (not in the official recipe; off there).
    A class, not a lambda, so that the scheduler's state checkpoints."""

    def __init__(self, iters: int, offset: int = 0, decay: str = "none", decay_iters: int = 0,
                 final: float = 0.0) -> None:
        self.iters = iters
        self.offset = offset
        self.decay = decay
        self.decay_iters = decay_iters
        self.final = final

    def __call__(self, it: int) -> float:
        warm = 1.0 if self.iters <= 0 else min(1.0, (it + self.offset) / self.iters)
        if self.decay == "none" or self.decay_iters <= 0:
            return warm
        frac = min(1.0, it / self.decay_iters)
        shape = 1.0 - frac if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return warm * (self.final + (1.0 - self.final) * shape)


def build_optimizer(params, oc: OptimConfig):
    """Adam (EBM) or AdamW (initializer) with the linear warm-up of spec 3.5."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[oc.name]
    opt = cls(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
    factor = WarmUp(oc.warmup_iters, oc.warmup_offset, oc.decay, oc.decay_iters, oc.final_lr_ratio)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


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


class DivergenceError(RuntimeError):
    """Training produced a non-finite or exploding value (the run stops, nothing is saved)."""


def clip_grad(params, max_norm: float) -> torch.Tensor:
    """Global gradient L2 norm, clipped to ``max_norm`` when it is positive."""
    params = [p for p in params if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))


def _data_parallel() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(model: nn.Module) -> None:
    """All-reduce the gradients of ``model`` to their mean over the ranks of a data-parallel run
    (``cdrl.train.distributed``); a no-op in one process."""
    if not _data_parallel():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def _guard(loss, values, gnorm, max_abs: float) -> None:
    """Stop on a non-finite loss or gradient, or values beyond ``max_abs`` (train.max_abs_energy).
    In a data-parallel run the verdict is all-reduced, so every rank raises at the same step
    (one rank raising alone would leave the others waiting in the next all-reduce)."""
    bad = ~torch.isfinite(loss) | ~torch.isfinite(gnorm) | ~torch.isfinite(values).all()
    big = values.detach().abs().max() > max_abs
    flag = (bad | big).float().reshape(1)
    if _data_parallel():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if bool(flag.item() > 0):
        raise DivergenceError(
            f"non-finite or exploding values (loss={float(loss.detach()):.4g}, grad norm="
            f"{float(gnorm):.4g}, max |values|={float(values.detach().abs().max()):.4g}); "
            "lower the learning rate or step size, keep spectral norm and clipping on, or "
            "resume from the last good checkpoint with another seed")


def optimizer_step(loss, values, model: nn.Module, opt, sched, ema: EMA, clip: float,
                   max_abs: float) -> torch.Tensor:
    """Backward, clip, divergence check, optimizer step, warm-up step, EMA update; returns the
    gradient norm. Nothing is updated when the check fails."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(model)  # data-parallel runs: the mean over ranks
    gnorm = clip_grad(model.parameters(), clip)
    _guard(loss, values, gnorm, max_abs)
    opt.step()
    sched.step()
    ema.update(model)
    return gnorm
