"""A/B timing of the image EBM's Langevin gradient (paper size) under layout/precision variants.

    python scripts/bench_langevin_variants.py [--batch 4] [--rounds 5] [--threads 2]

Variants: float32 NCHW (the default path), float32 channels-last, bf16 autocast (CPU). Rounds
alternate the variants so machine load hits all of them alike; medians are printed with the
ratio to float32 and the largest relative gradient error against float32.
"""

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from cdrl.core.nets.layers import frozen_spectral_norm, gather_rows
from cdrl.core.sampler import ebm_grad_fn
from cdrl.measure.bench import build_for_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="workflow/config/experiments/cdrl_cifar10.yaml")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, method, _ = build_for_bench(args.config, None, [], "cpu")
    ebm = method.ebm_ema.model.eval()
    k = torch.zeros(args.batch, dtype=torch.long)
    y = torch.randn(args.batch, *method.data_shape).clamp(-1, 1)
    with frozen_spectral_norm(ebm), torch.no_grad():
        cond = gather_rows(ebm.condition(method.t_level[: method.T]), k)

    def run(variant):
        model_fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        ebm.to(memory_format=model_fmt)
        yy = y.contiguous(memory_format=model_fmt)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else nullcontext()
        with frozen_spectral_norm(ebm), ctx:
            grad = ebm_grad_fn(ebm, cond)
            t0 = time.perf_counter()
            g = grad(yy)
            return time.perf_counter() - t0, g.float()

    variants = ["float32", "channels_last", "bf16"]
    ref = run("float32")[1]
    times = {v: [] for v in variants}
    err = {}
    for _ in range(args.rounds):
        for v in variants:
            t, g = run(v)
            times[v].append(t)
            err[v] = float((g - ref).norm() / ref.norm())
    base = statistics.median(times["float32"])
    print(f"paper-size EBM gradient, batch {args.batch}, {args.threads} threads, "
          f"{args.rounds} alternating rounds")
    print(f"{'variant':15s} {'median s':>9s} {'vs fp32':>8s} {'rel. error':>11s}")
    for v in variants:
        m = statistics.median(times[v])
        print(f"{v:15s} {m:9.4f} {base / m:7.2f}x {err[v]:11.2e}")


if __name__ == "__main__":
    main()
