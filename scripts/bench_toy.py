"""Seconds per training iteration of toy_official.yaml on this machine (not a test).

    .venv/bin/python scripts/bench_toy.py [--iters 20] [--config ...]

Prints the mean seconds per iteration after warm-up, the speed-up over the official code's
2.1 s/iteration measured on the project's machines (shared/notes/machines.md), and a breakdown of
one iteration into its named steps, so a change can be measured against the table in the README.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cdrl.config import load_config
from cdrl.registry import build_method
from cdrl.trainer import build_data

OFFICIAL_SEC_PER_ITER = 2.1
ROOT = Path(__file__).resolve().parents[1]


def _time(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "workflow/config/experiments/toy_official.yaml"))
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg.device = "cpu"
    torch.manual_seed(0)
    data = build_data(cfg)
    method = build_method(cfg, data.shape, torch.device("cpu"))
    batch = lambda: data.batch(cfg.train.batch_size, method.device)  # noqa: E731
    for _ in range(3):
        method.train_step(batch())
    sec = _time(lambda: method.train_step(batch()), args.iters)
    print(f"threads: {torch.get_num_threads()}, batch {cfg.train.batch_size}, "
          f"K = {cfg.train.langevin_steps}")
    print(f"seconds per iteration: {sec:.3f}")
    print(f"speed-up over the official code ({OFFICIAL_SEC_PER_ITER} s/it): "
          f"{OFFICIAL_SEC_PER_ITER / sec:.2f}x")
    # Breakdown of one iteration.
    x = batch()
    k = torch.randint(0, method.T, (x.shape[0],))
    x_prev, x_i = method.positive_pair(x, k)
    y0 = method.propose(method.initializer, x_i, k)
    refine = _time(lambda: method.refine(method.ebm, y0, x_i, k, cfg.train.langevin_steps), 5)
    print(f"  Langevin chain ({cfg.train.langevin_steps} steps): {refine:.3f} s "
          f"({100 * refine / sec:.0f}%)")
    print(f"  rest (pair, proposal, EBM and initializer updates, EMA): {sec - refine:.3f} s")


if __name__ == "__main__":
    main()
