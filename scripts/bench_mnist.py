"""One MNIST-16x16 CDRL training iteration: where its time goes, how close it runs to this host's
fp32 matmul roofline, and which speed changes pay, each measured side by side with the current
code.

    .venv/bin/python scripts/bench_mnist.py [--data mnist16] [--batch 32] [--threads 1]
        [--rounds 10] [--iters 5] [--warmup 2] [--matmul-n 1024] [--json bench_mnist.json]
    .venv/bin/python scripts/bench_mnist.py --quick --data digits16   # seconds: a smoke test

The iteration is ``method.train_step`` of workflow/config/experiments/cdrl_digits.yaml with
``data.name`` set to ``--data`` (``mnist16``, MNIST area-resized to 16x16; ``digits16`` has the
same shape) and ``train.batch_size`` to ``--batch``, on one fixed batch of real images, with
random weights whose spectral norms are converged (``cdrl bench``'s ``build_for_bench``), on the
CPU with ``--threads`` torch threads. Printed, and written by ``--json``:

1. profile: one iteration under torch.profiler, its time split into the EBM gradient calls of
   the Langevin chain, the initializer (proposal forward, loss backward, AdamW step), the EBM
   update (forward of the positive and negative batch, backward, Adam step), the two EMA
   updates, and the rest (positive pair, power iteration, Langevin drift and noise, ...); plus
   the operators with the most self time and the number of allocating ATen calls.
2. FLOPs of one iteration, counted with FlopCounterMode piece by piece, because it cannot count
   through ``torch.autograd.grad`` (the Langevin gradient): one Langevin step as the EBM
   forward plus ``backward()`` of the energy sum with the EBM's parameters frozen (so only the
   input's gradient is computed, as in the chain), times K; the initializer's proposal forward;
   the EBM update's forward and backward (parameter gradients); the initializer loss's
   backward; the noise-level embedding and the power iteration. Matmuls and convolutions are
   counted (oneDNN's linear by ``bench_toy.count_flops``' formula); optimizer steps, EMAs and
   elementwise ops count none.
3. roofline: ``scripts/bench_toy.py``'s ``matmul_gflops`` (torch.mm and oneDNN's linear on
   ``--matmul-n`` square fp32 matrices, best of 3, the faster kernel) on the same threads, in
   each baseline round right after its iterations; achieved GFLOP/s = FLOPs / (s/iteration) and
   its fraction of the roofline, per round, medians printed.
4. A/B: each candidate against the current code in ``--rounds`` rounds of ``--iters``
   iterations per side, alternating which side goes first; speed-up = baseline / candidate
   seconds as ``cdrl bench``'s paired ratio (geometric mean of the per-round ratios, 95 %
   t-interval; ``claim_stats.paired_ratio``). The relative error ``|c - b| / |b|`` of one
   iteration's outputs against the baseline from the same weights, batch and seed, after 2
   identical warm-up iterations (the EBM's learning rate is 0 at the first): both losses and
   both networks' parameter updates as the optimizers receive them (the clipped gradients),
   which ``KEEP_RULE`` reads; and, printed only, the updates after Adam's per-element scaling.
   Those are ill-conditioned this early: the U-Net's zero-initialised output convolutions leave
   the gradients upstream of them at rounding level, Adam scales every element to about the
   learning rate whatever its size, so any change in summation order (channels-last kernels, a
   thread count) moves those updates by tens of percent.

Candidates are toggles inside this script; nothing under cdrl/ changes: ``channels_last``
(networks, their EMA copies and the input in channels-last memory format); ``bf16_autocast``
(``torch.autocast("cpu", torch.bfloat16)``, only where the CPU has avx512_bf16 or amx_bf16 and
oneDNN supports bf16, else "skipped: no native bf16"); ``langevin_inplace`` (the Langevin
update written in place into reused buffers, the same floating-point operations in the same
order: it removes the chain's per-step temporaries, the allocations the profile shows besides
the networks'); ``flush_denormal`` (``torch.set_flush_denormal``: subnormal floats become 0,
which x86 CPUs otherwise handle in slow microcode). ``zero_grad(set_to_none=True)`` is already
what ``cdrl.core.optim.optimizer_step`` does, so it is no candidate. Numbers mean something only
on an idle host: see docs/speed.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_toy  # noqa: E402  (the roofline and the FLOP counter of scripts/bench_toy.py)

from cdrl.core import method as method_module  # noqa: E402
from cdrl.core.nets.layers import frozen_spectral_norm, power_iteration_  # noqa: E402
from cdrl.core.sampler import randn  # noqa: E402
from cdrl.io import atomic_write_text  # noqa: E402
from cdrl.measure.bench import build_for_bench  # noqa: E402
from cdrl.report.claim_stats import paired_ratio  # noqa: E402
from cdrl.train.trainer import build_data  # noqa: E402

CONFIG = ROOT / "workflow/config/experiments/cdrl_digits.yaml"
MIN_SPEEDUP, MAX_ERROR = 1.05, 1e-2
# The outputs the keep rule reads (iteration_outputs): losses and clipped gradients.
KEPT_OUTPUTS = ("loss_ebm", "loss_init", "grad_ebm", "grad_initializer")
KEEP_RULE = (f"keep when the lower end of the speed-up's 95 % interval is >= {MIN_SPEEDUP} (the "
             f"rounds rule out a gain under 5 %) and the largest relative error of the "
             f"iteration's losses and clipped gradients is <= {MAX_ERROR:g}")
# --quick: networks and chain small enough that the whole script takes seconds.
QUICK_SET = ["ebm.width=8", "ebm.temb_dim=32", "initializer.width=8", "initializer.temb_dim=32",
             "train.langevin_steps=2"]
PARTS = {"langevin_ebm_grad": "EBM gradient calls in the Langevin chain",
         "initializer": "initializer: proposal, loss backward, AdamW step",
         "ebm_update": "EBM update: forward, backward, Adam step",
         "ema": "EMA updates of both networks",
         "other": "other: positive pair, power iteration, Langevin drift and noise, ..."}


# ----------------------------------------------------------------------------- set-up
def build(args):
    """``(cfg, method)``: the same random weights for the same arguments (seeded)."""
    sets = [f"data.name={args.data}", f"train.batch_size={args.batch}",
            f"data.root={args.data_root}", *(QUICK_SET if args.quick else [])]
    cfg, method, _ = build_for_bench(str(args.config), None, sets, "cpu")
    return cfg, method


def fixed_batch(cfg, batch: int) -> torch.Tensor:
    torch.manual_seed(cfg.seed)
    return build_data(cfg).batch(batch, torch.device("cpu"), flip=False)[0]


def _time(step: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


# ----------------------------------------------------------------------------- profile
@contextlib.contextmanager
def labelled(method):
    """Profiler labels on the parts of ``train_step``, by wrapping them on the instance."""
    def wrap(fn, label):
        def inner(*a, **kw):
            with record_function(label):
                return fn(*a, **kw)
        return inner

    def grad_fn(ebm, k, guide):
        return wrap(type(method).grad_fn(method, ebm, k, guide), "langevin_ebm_grad")

    patches = [(method, "grad_fn", grad_fn),
               (method, "propose", wrap(method.propose, "initializer")),
               (method, "initializer_update", wrap(method.initializer_update, "initializer")),
               (method, "ebm_update", wrap(method.ebm_update, "ebm_update")),
               (method.ebm_ema, "update", wrap(method.ebm_ema.update, "ema/ebm")),
               (method.init_ema, "update", wrap(method.init_ema.update, "ema/initializer"))]
    for obj, name, fn in patches:
        setattr(obj, name, fn)  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        for obj, name, _ in patches:
            vars(obj).pop(name)


def profile_iteration(method, x, top: int = 8) -> dict:
    """Shares of one iteration (``PARTS``), the top operators by self time, allocations."""
    with labelled(method), profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("iteration"):
            method.train_step(x)
    avg = {e.key: e for e in prof.key_averages()}
    total = {k: (avg[k].cpu_time_total if k in avg else 0.0) / 1e6
             for k in ("iteration", "langevin_ebm_grad", "initializer", "ebm_update", "ema/ebm",
                       "ema/initializer")}
    sec = {"langevin_ebm_grad": total["langevin_ebm_grad"],
           "initializer": total["initializer"] - total["ema/initializer"],
           "ebm_update": total["ebm_update"] - total["ema/ebm"],
           "ema": total["ema/ebm"] + total["ema/initializer"]}
    sec["other"] = total["iteration"] - sum(sec.values())
    ops = sorted((e for k, e in avg.items() if k.startswith("aten::")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"seconds": total["iteration"], "parts_s": sec,
            "shares": {k: v / total["iteration"] for k, v in sec.items()},
            "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count,
                         "share": e.self_cpu_time_total / 1e6 / total["iteration"]}
                        for e in ops[:top]],
            "allocating_calls": sum(avg[k].count for k in ("aten::empty", "aten::empty_strided")
                                    if k in avg)}


# ----------------------------------------------------------------------------- FLOPs
def count_flops(cfg, method, x) -> dict:
    """FLOPs of one iteration's pieces (module docstring, item 2), on a copy of ``method``."""
    m = copy.deepcopy(method)
    count = bench_toy.count_flops
    torch.manual_seed(0)
    k = torch.randint(0, m.T, (x.shape[0],))
    x_prev, x_i = m.positive_pair(x, k)
    y_pos = m.per_sample("sqrt_m", k) * x_prev
    m.ebm.train()
    m.initializer.train()
    out, kept = {"power_iteration": count(lambda: power_iteration_(m.ebm))}, {}
    out["initializer_forward"] = count(
        lambda: kept.setdefault("y0", m.propose(m.initializer, x_i, k)))
    y0 = kept["y0"]
    with frozen_spectral_norm(m.ebm):
        out["condition_embedding"] = count(lambda: m.level_condition(m.ebm, k))
        cond = m.level_condition(m.ebm, k)
        frozen = [p for p in m.ebm.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            y = y0.detach().requires_grad_(True)
            out["langevin_step"] = count(lambda: m.ebm.energy(y, cond).sum().backward())
        finally:
            for p in frozen:
                p.requires_grad_(True)
    out["langevin"] = cfg.train.langevin_steps * out["langevin_step"]
    y_neg = y0.detach() + 0.01 * torch.randn_like(y0)  # FLOPs do not depend on the values
    out["ebm_update"] = count(lambda: m.ebm_update(k, y_pos, y_neg))
    out["initializer_update"] = count(lambda: m.initializer_update(y0, y_neg))
    out["total"] = sum(v for key, v in out.items() if key != "langevin_step")
    return out


# ----------------------------------------------------------------------------- candidates
def inplace_langevin(grad_fn, x, n_steps, *, grad_scale, noise_std, pull=None, anchor=None,
                     clamp=0.0, generator=None, callback=None):
    """``cdrl.core.sampler.langevin`` with its temporaries in two reused buffers: the same
    operations in the same order (``x + drift + s * eps``), so the same bits."""
    y = x.detach().clone()  # the caller keeps y0 (the initializer's target): never write it
    diff = torch.empty_like(y)
    noise = torch.empty(y.shape, dtype=y.dtype, device=y.device)  # what randn would return
    draw = isinstance(noise_std, torch.Tensor) or noise_std > 0
    for _ in range(n_steps):
        drift = grad_fn(y).mul_(grad_scale)
        if pull is not None:
            drift.sub_(torch.sub(y, anchor, out=diff).mul_(pull))
        y.add_(drift)
        if draw:
            if generator is None:
                noise.normal_()  # torch.randn draws the same numbers from the same RNG
            else:
                noise.copy_(randn(y.shape, y, generator))
            y.add_(noise.mul_(noise_std))
        if clamp > 0:
            y.clamp_(-clamp, clamp)
        if callback is not None:
            y = callback(y)
    return y


@contextlib.contextmanager
def langevin_inplace():
    saved = method_module.langevin
    method_module.langevin = inplace_langevin
    try:
        yield
    finally:
        method_module.langevin = saved


@contextlib.contextmanager
def flush_denormal():
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def to_channels_last(method, x: torch.Tensor) -> torch.Tensor:
    """The networks and their EMA copies in channels-last format (parameters keep their
    identity, so the optimizers still hold them); the input converted likewise."""
    for net in (method.ebm, method.ebm_ema.model, method.initializer, method.init_ema.model):
        net.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (avx512_bf16 or amx_bf16, and oneDNN says so)."""
    found = sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())
    mkldnn = (torch.backends.mkldnn.is_available()
              and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
              and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not (found and mkldnn):
        return False, "skipped: no native bf16"
    return True, f"CPU flags {', '.join(found)}, oneDNN bf16"


@dataclass
class Candidate:
    name: str
    what: str
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    prepare: Callable | None = None          # (method, x) -> x, once, before any timed call
    available: Callable[[], tuple[bool, str]] = lambda: (True, "")


CANDIDATES = [
    Candidate("channels_last", "networks, EMA copies and input in channels-last memory format",
              prepare=to_channels_last),
    Candidate("bf16_autocast", "torch.autocast('cpu', dtype=torch.bfloat16) around the iteration",
              context=lambda: torch.autocast("cpu", dtype=torch.bfloat16), available=native_bf16),
    Candidate("langevin_inplace", "Langevin update in place in two reused buffers",
              context=langevin_inplace),
    Candidate("flush_denormal", "torch.set_flush_denormal(True): subnormals become 0",
              context=flush_denormal),
]


class Arm:
    """One side of an A/B: its own method (same seed), input and toggle."""

    def __init__(self, args, candidate: Candidate | None = None) -> None:
        self.cfg, self.method = build(args)
        self.x = fixed_batch(self.cfg, args.batch)
        self.context = candidate.context if candidate else contextlib.nullcontext
        if candidate and candidate.prepare:
            self.x = candidate.prepare(self.method, self.x)

    def step(self) -> None:
        with self.context():
            self.method.train_step(self.x)


# ----------------------------------------------------------------------------- errors
def _flat(net) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _grads(net) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])


def iteration_outputs(args, candidate: Candidate | None, warm: int = 2) -> dict:
    """Both losses, both networks' clipped gradients and Adam updates of iteration
    ``warm + 1`` from fixed weights, batch and seeds; the warm-up iterations on the current
    code, the last one ``candidate``'s."""
    cfg, m = build(args)
    x = fixed_batch(cfg, args.batch)
    for seed in range(1, warm + 1):
        torch.manual_seed(seed)
        m.train_step(x)
    ctx = contextlib.nullcontext
    if candidate is not None:
        x = candidate.prepare(m, x) if candidate.prepare else x
        ctx = candidate.context
    before = _flat(m.ebm), _flat(m.initializer)
    torch.manual_seed(warm + 1)
    with ctx():
        stats = m.train_step(x)
    return {"loss_ebm": stats["loss_ebm"].float(), "loss_init": stats["loss_init"].float(),
            "grad_ebm": _grads(m.ebm), "grad_initializer": _grads(m.initializer),
            "adam_update_ebm": _flat(m.ebm) - before[0],
            "adam_update_initializer": _flat(m.initializer) - before[1]}


def relative_errors(out: dict, ref: dict) -> dict:
    def rel(a, b) -> float:
        num, den = float((a - b).norm()), float(b.norm())
        return num / den if den > 0 else (0.0 if num == 0 else float("inf"))
    return {k: rel(out[k], ref[k]) for k in ref}


# ----------------------------------------------------------------------------- rounds
def baseline_rounds(args, arm: Arm) -> list[dict]:
    """Seconds per iteration, then the roofline at about the same load, per round."""
    rounds = []
    for _ in range(args.rounds):
        sec = _time(arm.step, args.iters)
        matmul = bench_toy.matmul_gflops(args.matmul_n)
        rounds.append({"sec": sec, "matmul": matmul, "roofline": max(matmul.values())})
    return rounds


def ab_rounds(args, base: Arm, cand: Arm) -> tuple[list[float], list[float]]:
    """Seconds per iteration of both sides, round by round, alternating which goes first."""
    secs = {"base": [], "cand": []}
    arms = {"base": base, "cand": cand}
    for r in range(args.rounds):
        for side in (("base", "cand") if r % 2 == 0 else ("cand", "base")):
            secs[side].append(_time(arms[side].step, args.iters))
    return secs["base"], secs["cand"]


def decide(low: float | None, error: float) -> tuple[str, str]:
    if low is None:
        return "reject", "no interval (fewer than 2 rounds)"
    if error > MAX_ERROR:
        return "reject", f"relative error {error:.2g} > {MAX_ERROR:g}"
    if low < MIN_SPEEDUP:
        return "reject", f"speed-up's lower bound {low:.3f} < {MIN_SPEEDUP}"
    return "keep", f"speed-up's lower bound {low:.3f} >= {MIN_SPEEDUP}, error {error:.2g}"


def try_candidate(args, c: Candidate, base: Arm, ref: dict) -> dict:
    ok, why = c.available()
    row = {"name": c.name, "what": c.what}
    if not ok:
        return row | {"status": "skipped", "reason": why, "decision": "skipped"}
    errors = relative_errors(iteration_outputs(args, c), ref)
    error = max(errors[k] for k in KEPT_OUTPUTS)
    cand = Arm(args, c)
    _time(cand.step, args.warmup)
    b, s = ab_rounds(args, base, cand)
    t = paired_ratio(s, b)  # baseline / candidate seconds: > 1 is faster
    decision, reason = decide(t.low, error)
    return row | {"status": "measured", "reason": why, "speedup": t.estimate, "low": t.low,
                  "high": t.high, "base_rounds": b, "cand_rounds": s, "rel_errors": errors,
                  "max_rel_error": error, "decision": decision, "why": reason}


# ----------------------------------------------------------------------------- main
def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    base = Arm(args)
    _time(base.step, max(args.warmup, 1))  # the first call also builds oneDNN's kernels
    prof = profile_iteration(base.method, base.x)
    flops = count_flops(base.cfg, base.method, base.x)
    rounds = baseline_rounds(args, base)
    ref = iteration_outputs(args, None)
    med = statistics.median
    sec = med(r["sec"] for r in rounds)
    return {
        "torch": torch.__version__, "cpu_model": bench_toy.cpu_model(), "threads": args.threads,
        "config": str(args.config), "data": args.data, "batch": args.batch,
        "langevin_steps": base.cfg.train.langevin_steps, "quick": args.quick,
        "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup,
        "profile": prof, "flops": flops,
        "baseline": {"sec_per_iter": sec, "rounds": [r["sec"] for r in rounds]},
        "roofline": {"gflops": med(r["roofline"] for r in rounds), "matmul_n": args.matmul_n,
                     "by_kernel": {k: med(r["matmul"][k] for r in rounds)
                                   for k in rounds[0]["matmul"]}},
        "achieved_gflops": flops["total"] / sec / 1e9,
        "roofline_fraction": med(flops["total"] / r["sec"] / 1e9 / r["roofline"]
                                 for r in rounds),
        "baseline_rerun_error": max(relative_errors(iteration_outputs(args, None), ref)[k]
                                    for k in KEPT_OUTPUTS),
        "candidates": [try_candidate(args, c, base, ref) for c in CANDIDATES],
        "keep_rule": KEEP_RULE,
    }


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms"


def print_report(out: dict) -> None:
    p, f = out["profile"], out["flops"]
    print(f"host: {out['cpu_model']}, torch {out['torch']}, {out['threads']} thread(s); "
          f"{out['data']}, batch {out['batch']}, K = {out['langevin_steps']}"
          + (" (--quick: tiny networks)" if out["quick"] else ""))
    print(f"profile of one iteration (torch.profiler, {_ms(p['seconds'])}):")
    for key, text in PARTS.items():
        print(f"  {text:<70} {100 * p['shares'][key]:5.1f} %")
    print("  top operators by self time: " + "; ".join(
        f"{o['op']} {100 * o['share']:.1f} % ({o['calls']} calls)" for o in p["top_ops"][:5]))
    print(f"  allocating ATen calls (aten::empty, empty_strided): {p['allocating_calls']}")
    print(f"FLOPs of one iteration: {f['total'] / 1e9:.3f} GFLOP = Langevin "
          f"{out['langevin_steps']} x {f['langevin_step'] / 1e9:.4f} (EBM forward + input "
          f"backward) + initializer forward {f['initializer_forward'] / 1e9:.4f} + EBM update "
          f"{f['ebm_update'] / 1e9:.4f} + initializer update {f['initializer_update'] / 1e9:.4f}"
          f" + embedding and power iteration "
          f"{(f['condition_embedding'] + f['power_iteration']) / 1e9:.4f}")
    b, r = out["baseline"]["rounds"], out["roofline"]
    print(f"baseline: {out['baseline']['sec_per_iter']:.4f} s/iteration, median of "
          f"{out['rounds']} rounds of {out['iters']} (min {min(b):.4f}, max {max(b):.4f})")
    kernels = ", ".join(f"{k} {v:.1f}" for k, v in r["by_kernel"].items())
    print(f"fp32 matmul roofline ({r['matmul_n']}^2, {out['threads']} thread(s)): "
          f"{r['gflops']:.1f} GFLOP/s ({kernels})")
    print(f"achieved: {out['achieved_gflops']:.1f} GFLOP/s, {100 * out['roofline_fraction']:.1f} "
          f"% of the roofline")
    print(f"A/B against the current code, {out['rounds']} interleaved rounds of {out['iters']} "
          f"iterations; speed-up = baseline / candidate, geometric mean [95 % interval]; "
          f"error: largest relative error of the losses and clipped gradients (baseline "
          f"rerun: {out['baseline_rerun_error']:.2g}); Adam update: that of the updates after "
          f"Adam's scaling, not used (module docstring)")
    for c in out["candidates"]:
        if c["status"] == "skipped":
            print(f"  {c['name']:<17} {c['reason']}")
            continue
        adam = max(v for k, v in c["rel_errors"].items() if k.startswith("adam_"))
        print(f"  {c['name']:<17} {c['speedup']:.3f}x [{c['low']:.3f}, {c['high']:.3f}]  error "
              f"{c['max_rel_error']:.2g} (Adam update {adam:.2g})  -> {c['decision']}: "
              f"{c['why']}")
    print(f"keep rule: {out['keep_rule']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(CONFIG), help="CDRL experiment config")
    ap.add_argument("--data", default="mnist16", help="16x16 image dataset (mnist16, digits16)")
    ap.add_argument("--data-root", default=str(ROOT / "resources/datasets"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (at least 2)")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per side and round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations per side first")
    ap.add_argument("--matmul-n", type=int, default=1024, help="matrix size of the roofline")
    ap.add_argument("--quick", action="store_true",
                    help="tiny networks, K = 2, 2 rounds of 1 iteration, 128^2 roofline (tests)")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.iters, args.warmup, args.matmul_n = 2, 1, 1, 128
    if args.rounds < 2 or min(args.iters, args.threads, args.batch) < 1 or args.warmup < 0:
        ap.error("--rounds must be >= 2, --iters, --threads and --batch >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = measure(args)
    print_report(out)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
