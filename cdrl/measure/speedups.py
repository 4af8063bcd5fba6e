"""A/B of speed-ups for the EBM against strict float32 (``scripts/gpu_check.py``, docs/gpu.md).

    python scripts/gpu_check.py --out DIR          # runs ``run_ab`` on the paper-size CDRL

One change at a time against the reference ``Setting()`` (TF32 off, NCHW, eager, cudnn.benchmark
off), on two targets of cdrl_cifar10:

* the Langevin inner step ``y + 0.5 grad F(y) - pull (y - x) + s eps`` (spec 2.4) on the EMA EBM
  for a fixed batch of images at mixed levels; error: relative error of the drift
  ``0.5 grad F(y) - pull (y - x)`` against the reference;
* one training iteration (``CDRL.train_step``) from the same state and seed; error: relative error
  of the EBM loss against the reference.

Changes: TF32 matmuls and convolutions; bf16 autocast of the EBM (the U-Net stays float32);
channels-last; ``torch.compile`` of the energy behind the Langevin gradient (the EBM loss's own
forward stays eager, which saves a second compilation); one CUDA graph for the K-step chain
(Langevin only); cudnn.benchmark (an extra); a larger sampling batch (``ab_batch``). Each pair is
timed in alternating order after a warm-up round (compilation, autotuning, capture), medians
compared; ``decide`` applies ``KEEP_RULE``. The changes kept for a target are then measured
together (``kept: ...`` rows).
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch

from cdrl.core.nets.layers import frozen_spectral_norm
from cdrl.core.sampler import (
    NoiseList,
    ebm_grad_fn,
    energy_grad_fn,
    langevin,
    langevin_drift,
)
from cdrl.measure.bench import seconds

__all__ = ["MIN_SPEEDUP", "TOLERANCE", "KEEP_RULE", "VARIANTS", "Setting", "Chain", "ABContext",
           "make_chain", "drift", "grad_flops", "decide", "run_ab", "applied", "kept_variants"]

MIN_SPEEDUP = 1.05   # at least 5 % faster, median against median
# A drift changed by more than 1 % changes the sampler rather than its rounding (the injected
# noise is redrawn every step, a systematic drift error is not); the same bound for the loss.
TOLERANCE = 1e-2
KEEP_RULE = (f"keep when the median speed-up is >= {MIN_SPEEDUP}x (at least 5 % faster) and the "
             f"relative error against strict float32 (Langevin drift; training loss) is <= "
             f"{TOLERANCE:g}")
VARIANTS = {"torch_defaults": "torch's default precision flags (what the speed section ran)",
            "tf32": "TF32 matmuls and convolutions", "bf16": "bf16 autocast of the EBM",
            "channels_last": "channels-last EBM and inputs",
            "compile": "torch.compile of the energy gradient",
            "cuda_graph": "CUDA graph of the fixed-shape K-step chain",
            "cudnn_benchmark": "cudnn.benchmark (an extra: not in the issue's list)"}
NO_EFFECT_ON_CPU = {"torch_defaults", "tf32", "cuda_graph", "cudnn_benchmark"}
NOT_FOR_TRAINING = {"cuda_graph": "a graph holds one chain's frozen weights; training changes "
                                  "them every iteration, so it would be captured anew each time"}
ORDER = ["torch_defaults", "tf32", "cudnn_benchmark", "channels_last", "bf16", "cuda_graph", "compile"]
COMPILE_SECONDS = {"cuda": 150.0, "cpu": 30.0}  # time box allowance for one compilation


# ----------------------------------------------------------------------------- the chain
@dataclass
class Chain:
    """One fixed batch of the sampler's Langevin chain on the EMA EBM (levels mixed)."""

    ebm: torch.nn.Module
    cond: tuple
    x: torch.Tensor
    y: torch.Tensor
    step_size_sq: torch.Tensor
    pull: torch.Tensor

    def sub(self, n: int) -> Chain:
        """The first ``n`` images."""
        return Chain(self.ebm, tuple(c[:n] for c in self.cond),
                     *(getattr(self, f.name)[:n] for f in fields(self)[2:]))


def make_chain(method, batch: int, seed: int = 0) -> Chain:
    g = torch.Generator().manual_seed(seed)
    ebm, dev = method.ebm_ema.model.eval(), method.device
    k = (torch.arange(batch) % method.T).to(dev)
    x = torch.randn(batch, *method.data_shape, generator=g).to(dev)
    y = x + 0.1 * torch.randn(batch, *method.data_shape, generator=g).to(dev)
    return Chain(ebm, method.level_condition(ebm, k), x, y, method.per_sample("step_size_sq", k),
                 method.per_sample("pull", k))


def drift(chain: Chain, y: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 grad F(y) - pull (y - x)``: the deterministic part of one Langevin step."""
    y = chain.y if y is None else y
    return langevin_drift(ebm_grad_fn(chain.ebm, chain.cond), y, 0.5, chain.pull, chain.x)


def run_chain(chain: Chain, noise: torch.Tensor) -> torch.Tensor:
    """``len(noise)`` Langevin steps from the chain's ``y`` with the given noise (the
    sampler's own loop, ``cdrl.core.sampler.langevin``)."""
    return langevin(ebm_grad_fn(chain.ebm, chain.cond), chain.y, len(noise), grad_scale=0.5,
                    noise_std=chain.step_size_sq.sqrt(), pull=chain.pull, anchor=chain.x,
                    generator=NoiseList(noise))


def grad_flops(chain: Chain) -> int:
    """FLOPs of one EBM input gradient on the chain's batch (forward and input backward), by
    ``torch.utils.flop_counter``. ``backward`` rather than ``autograd.grad``, which the counter's
    module tracker refuses on a leaf; the EMA weights need no gradient, so the work is the same."""
    from torch.utils.flop_counter import FlopCounterMode

    y = chain.y.detach().clone().requires_grad_(True)
    with frozen_spectral_norm(chain.ebm), FlopCounterMode(display=False) as fc:
        chain.ebm.energy(y, chain.cond).sum().backward()
    return fc.get_total_flops()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """How the EBM runs. ``Setting()`` is the reference: strict float32, NCHW, eager."""

    tf32: bool = False                 # matmuls and convolutions
    cudnn_tf32: bool = False           # convolutions only (torch's default on a GPU)
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    cudnn_benchmark: bool = False


_COMPILED: dict = {}


def _energy(ebm, s: Setting):
    energy = type(ebm).energy.__get__(ebm)
    if not (s.bf16 or s.channels_last):
        return energy
    device_type = next(ebm.parameters()).device.type

    def wrapped(y, cond):
        if s.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        if not s.bf16:
            return energy(y, cond)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return energy(y, cond).float()
    return wrapped


def _compiled_grad(ebm, s: Setting, backend: str):
    """``cond -> (y -> grad_y F)`` through a compiled energy, cached per (EBM, setting)."""
    key = (id(ebm), replace(s, cuda_graph=False), backend)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(_energy(ebm, s), backend=backend, dynamic=False)
    f = _COMPILED[key]
    return lambda cond: energy_grad_fn(lambda y: f(y, cond))


@contextlib.contextmanager
def applied(s: Setting, ebms, backend: str = "inductor"):
    """Run ``ebms`` under ``s``: global flags, memory format, and instance-level ``energy``
    (bf16, channels-last) and ``langevin_grad`` (compile). Everything is restored on exit."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = s.tf32
    torch.backends.cudnn.allow_tf32 = s.tf32 or s.cudnn_tf32
    torch.backends.cudnn.benchmark = s.cudnn_benchmark
    for ebm in ebms:
        if s.channels_last:
            ebm.to(memory_format=torch.channels_last)
        if s.bf16 or s.channels_last:
            ebm.energy = _energy(ebm, s)
        if s.compile:
            ebm.langevin_grad = _compiled_grad(ebm, s, backend)
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = flags
        for ebm in ebms:
            ebm.__dict__.pop("energy", None)
            ebm.__dict__.pop("langevin_grad", None)
            if s.channels_last:
                ebm.to(memory_format=torch.contiguous_format)


# ----------------------------------------------------------------------------- measuring
@dataclass
class ABContext:
    """What the A/B needs: the paper-size CDRL method and the sizes, plus the references that
    ``prepare`` computes once under ``Setting()``."""

    method: object
    device: torch.device
    sample_batch: int
    train_batch: int
    rounds: int
    backend: str                       # torch.compile backend: inductor, or aot_eager on a CPU
    defaults: Setting                  # torch's precision flags as the process started
    allows: Callable[[float, str], bool]  # the caller's time box
    chain: Chain | None = None
    extra: dict = field(default_factory=dict)

    def prepare(self) -> None:
        m, dev = self.method, self.device
        self.chain = make_chain(m, self.sample_batch)
        self.extra["noise"] = torch.randn_like(self.chain.y)
        with applied(Setting(), [self.chain.ebm]), frozen_spectral_norm(self.chain.ebm):
            self.extra["ref_drift"] = drift(self.chain)
        self.extra["flops"] = grad_flops(self.chain)
        self.extra["x"] = torch.rand(self.train_batch, *m.data_shape,
                                     generator=torch.Generator().manual_seed(7)).to(dev) * 2 - 1
        self.extra["snapshot"] = copy.deepcopy(m.state_dict())
        with applied(Setting(), [m.ebm, m.ebm_ema.model]):
            self.restore()
            self.extra["ref"] = self.train_step()
        self.restore()

    def restore(self) -> None:
        """The state and seed every timed training iteration starts from."""
        self.method.load_state_dict(self.extra["snapshot"])
        torch.manual_seed(1234)

    def train_step(self) -> dict:
        return self.method.train_step(self.extra["x"])


def timed_pairs(ctx: ABContext, calls: dict, ebms: list, frozen=None, rounds=None):
    """``{name: (setting, prepare, fn)}``: one warm-up round, then ``rounds`` rounds with the
    order reversed every other round. Only ``fn`` is timed; ``prepare`` (restore a state, seed)
    and switching settings are not. Returns ``(times, last results)``."""
    times, last = {name: [] for name in calls}, {}
    for r in range((ctx.rounds if rounds is None else rounds) + 1):
        for name in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            setting, prepare, fn = calls[name]
            held = frozen_spectral_norm(frozen) if frozen is not None else contextlib.nullcontext()
            with applied(setting, ebms, ctx.backend), held:
                if prepare is not None:
                    prepare()
                out = {}
                t = seconds(lambda fn=fn, out=out: out.setdefault("v", fn()), ctx.device)
            last[name] = out["v"]
            if r:
                times[name].append(t)
    return times, last


def decide(speedup: float | None, error: float | None) -> tuple[str, str]:
    """``KEEP_RULE`` as ``(decision, reason)``."""
    if speedup is None or error is None or not math.isfinite(error):
        return "reject", "not measured, or a non-finite error"
    if error > TOLERANCE:
        return "reject", f"error {error:.2g} > {TOLERANCE:g}"
    if speedup < MIN_SPEEDUP:
        return "reject", f"speed-up {speedup:.3f}x < {MIN_SPEEDUP}x"
    return "keep", f"{speedup:.3f}x faster, error {error:.2g} <= {TOLERANCE:g}"


def _row(ctx, variant, target, batch, times, error, metric, **extra) -> dict:
    base = statistics.median(times["base"]) if times["base"] else None
    var = statistics.median(times["variant"]) if times["variant"] else None
    speedup = base / var if base and var else None
    decision, why = decide(speedup, error)
    row = {"variant": variant, "description": VARIANTS.get(variant, variant), "target": target,
           "batch": batch, "base_median_s": base, "variant_median_s": var,
           "base_s": times["base"], "variant_s": times["variant"], "speedup": speedup,
           "error": error, "error_metric": metric, "tolerance": TOLERANCE, "decision": decision,
           "reason": why, "measured_on": ctx.device.type, **extra}
    if target == "langevin_step" and var:
        row["ebm_grad_tflop_per_s"] = ctx.extra["flops"] / var / 1e12
    return row


def not_measured(ctx, variant: str, target: str, why: str) -> dict:
    return {"variant": variant, "description": VARIANTS.get(variant, variant), "target": target,
            "speedup": None, "error": None, "tolerance": TOLERANCE, "decision": "not measured",
            "reason": why, "measured_on": ctx.device.type}


# ----------------------------------------------------------------------------- the rows
def ab_langevin(ctx: ABContext, s: Setting, label: str) -> dict:
    """One Langevin step on ``sample_batch`` images; error of the drift."""
    chain, eps = ctx.chain, ctx.extra["noise"]

    def step():
        return run_chain(chain, (eps,))

    times, _ = timed_pairs(ctx, {"base": (Setting(), None, step), "variant": (s, None, step)},
                           [chain.ebm], frozen=chain.ebm)
    with applied(s, [chain.ebm], ctx.backend), frozen_spectral_norm(chain.ebm):
        err = rel_err(drift(chain), ctx.extra["ref_drift"])
    return _row(ctx, label, "langevin_step", chain.y.shape[0], times, err,
                "relative error of the Langevin drift against strict float32")


def ab_graph(ctx: ABContext, steps: int) -> dict:
    """The K-step chain as one CUDA graph (static state and noise) against the same chain run
    eagerly, per step; error of the K-step displacement."""
    chain, dev = ctx.chain, ctx.device
    noise = torch.randn(steps, *chain.y.shape, device=dev,
                        generator=torch.Generator(dev).manual_seed(3))
    # One set of frozen weights for capture and replays; captured under the reference flags.
    with frozen_spectral_norm(chain.ebm), applied(Setting(), [chain.ebm]):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                run_chain(chain, noise)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run_chain(chain, noise)
        calls = {"base": (Setting(), None, lambda: run_chain(chain, noise)),
                 "variant": (Setting(cuda_graph=True), None, lambda: graph.replay() or out)}
        times, last = timed_pairs(ctx, calls, [chain.ebm])
        err = rel_err(last["variant"] - chain.y, last["base"] - chain.y)
    per_step = {k: [t / steps for t in v] for k, v in times.items()}
    return _row(ctx, "cuda_graph", "langevin_step", chain.y.shape[0], per_step, err,
                f"relative error of the {steps}-step displacement against the eager chain",
                note=f"per step: the time of the {steps}-step chain / {steps}")


def ab_train(ctx: ABContext, s: Setting, label: str) -> dict:
    """One CDRL training iteration from the same state and seed; error of the EBM loss."""
    m = ctx.method
    calls = {"base": (Setting(), ctx.restore, ctx.train_step),
             "variant": (s, ctx.restore, ctx.train_step)}
    times, last = timed_pairs(ctx, calls, [m.ebm, m.ebm_ema.model])
    ctx.restore()
    ref = ctx.extra["ref"]
    loss = float(last["variant"]["loss_ebm"])
    ref_loss, ref_init = float(ref["loss_ebm"]), float(ref.get("loss_init", float("nan")))
    init = float(last["variant"].get("loss_init", float("nan")))
    return _row(ctx, label, "train_iteration", ctx.train_batch, times,
                abs(loss - ref_loss) / max(abs(ref_loss), 1e-30),
                "relative error of the EBM loss against strict float32 (same state and seed)",
                loss_ebm={"reference": ref_loss, "variant": loss},
                loss_init_rel_err=abs(init - ref_init) / max(abs(ref_init), 1e-30))


def ab_batch(ctx: ABContext, base_s: list[float], big: dict | None) -> dict:
    """Sampling at the largest batch that fits against ``sample_batch`` (times measured by the
    caller); error of the drift of the same images computed inside the larger batch."""
    n = ctx.sample_batch
    if not big or not big.get("batch") or big["batch"] <= n:
        return not_measured(ctx, "larger_batch", "sampling", "no larger batch was measured")
    chain = make_chain(ctx.method, big["batch"])
    with applied(Setting(), [chain.ebm]), frozen_spectral_norm(chain.ebm):
        err = rel_err(drift(chain)[:n], drift(chain.sub(n)))
    row = _row(ctx, "larger_batch", "sampling", big["batch"],
               {"base": base_s, "variant": [big["s_per_image"]]}, err,
               f"relative error of the drift of {n} images inside a batch of {big['batch']} "
               "against alone", timing=big.get("timing"),
               note="times at torch's default precision, from the speed section")
    row["description"] = f"sampling batch {big['batch']} (largest that fits) instead of {n}"
    return row


def _one(ctx: ABContext, v: str, target: str, steps: int) -> dict:
    try:
        if v == "cuda_graph":
            return ab_graph(ctx, steps)
        fn = ab_langevin if target == "langevin_step" else ab_train
        row = fn(ctx, ctx.defaults if v == "torch_defaults" else Setting(**{v: True}), v)
        if v == "torch_defaults":  # the speed section's precision: a reference, not a candidate
            row["decision"], row["reason"] = "reference", "not a candidate: " + row["reason"]
        return row
    except Exception as err:  # a compiler or capture error is a result, not a crash
        return not_measured(ctx, v, target, f"failed: {type(err).__name__}: {str(err)[:300]}")


def run_ab(ctx: ABContext, steps: int, train_s: float, sample_base_s: list[float],
           largest: dict | None) -> dict:
    """Every row (``ORDER`` on both targets, compilation last; then the larger batch and the
    kept changes together); ``train_s`` sizes a training row's time box, ``steps`` is K."""
    ctx.prepare()
    t_step = statistics.median(timed_pairs(ctx, {"base": (Setting(), None, lambda: drift(
        ctx.chain))}, [ctx.chain.ebm], frozen=ctx.chain.ebm, rounds=2)[0]["base"])
    dev, rows = ctx.device.type, []
    per_call = {"langevin_step": t_step, "train_iteration": train_s}
    # The cheap changes on both targets first, compilation (the slow one) last.
    plan = [(v, t) for v in ORDER if v != "compile" for t in per_call]
    plan += [("compile", t) for t in per_call]
    for v, target in plan:
        need = (2 * (ctx.rounds + 1) * per_call[target] * (steps if v == "cuda_graph" else 1)
                + 2 + COMPILE_SECONDS[dev] * (v == "compile"))
        if dev != "cuda" and v in NO_EFFECT_ON_CPU:
            rows.append(not_measured(ctx, v, target, f"not applicable on {dev}"))
        elif target == "train_iteration" and v in NOT_FOR_TRAINING:
            rows.append(not_measured(ctx, v, target, NOT_FOR_TRAINING[v]))
        elif not ctx.allows(need, f"{v} on the {target}"):
            rows.append(not_measured(ctx, v, target, "skipped: time box"))
        else:
            rows.append(_one(ctx, v, target, steps))
    rows.append(ab_batch(ctx, sample_base_s, largest))
    rows += _kept_together(ctx, rows, t_step, train_s)
    return {"rule": KEEP_RULE, "tolerance": TOLERANCE, "min_speedup": MIN_SPEEDUP,
            "reference": "strict float32: TF32 off, NCHW, eager, cudnn.benchmark off",
            "model": "cdrl_cifar10: the EMA EBM for the Langevin step; EBM and initializer for "
                     "the training iteration", "rounds": ctx.rounds, "measured_on": dev,
            "ebm_grad_flops": ctx.extra["flops"], "ebm_grad_batch": ctx.sample_batch,
            "rows": rows}


def kept_variants(rows: list[dict], target: str) -> list[str]:
    """Variants of ``Setting`` kept on ``target`` (the CUDA graph and the batch apart)."""
    return [r["variant"] for r in rows if r["target"] == target and r["decision"] == "keep"
            and r["variant"] in Setting.__dataclass_fields__ and r["variant"] != "cuda_graph"]


def _kept_together(ctx: ABContext, rows: list[dict], t_step: float, train_s: float) -> list:
    out = []
    for target, fn, t_one in (("langevin_step", ab_langevin, t_step),
                              ("train_iteration", ab_train, train_s)):
        kept = kept_variants(rows, target)
        need = 2 * (ctx.rounds + 1) * t_one + COMPILE_SECONDS[ctx.device.type] * ("compile" in kept)
        if len(kept) >= 2 and ctx.allows(need, f"the kept changes together on the {target}"):
            row = fn(ctx, Setting(**{v: True for v in kept}), "kept: " + " + ".join(kept))
            row["description"] = "the kept changes together"
            out.append(row)
    return out
