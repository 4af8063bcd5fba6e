"""Seconds per toy training iteration, ours and the official code's, measured side by side here.

    .venv/bin/python scripts/bench_toy.py [--iters 20] [--rounds 3] [--official ~/src/CDRL]
                                          [--config PATH] [--json bench_toy.json]

Every figure comes from this host and this run; nothing is divided by a number measured elsewhere.

Ours: one iteration is ``method.train_step`` on a fresh batch of
``workflow/config/experiments/toy_official.yaml``, timed after ``--warmup`` iterations.

Official (``--official``: a checkout of github.com/AlvinZhuyx/CDRL, or its ``toy_example.py``):
the file is copied into a temporary folder, never into this repository, and patched there by the
small textual substitutions in ``PATCHES`` (CUDA to CPU, ``LambdaLR`` without ``verbose``, the
copy of itself into its log folder fixed, checkpoints and figures off, a torch_ema fallback, a
timing hook). A substitution whose anchor text is missing stops the run with an error naming it. It runs as one child process on the same number
of torch threads. The hook wraps the training loop's ``range``: after ``--warmup`` iterations the
child waits on its stdin; each "go" line starts a round of ``--iters`` iterations, at the end of
which it prints ``CDRL_BENCH_ROUND <seconds>`` (``perf_counter``) and waits again. So start-up,
data generation, model construction and warm-up are excluded, as on our side.

Rounds alternate official, ours, official, ours, ... so that changes in the host's load hit both.
Printed: the median seconds per iteration over rounds with their min..max, and the ratio
official/ours of the medians. Without ``--official`` only our figure is printed and no ratio.

Also measured in each of our rounds, right after its iterations so that both numbers of a pair
see the same load: one Langevin chain (its share of an iteration) and this host's fp32 matmul
roofline, the faster of ``torch.mm`` (MKL) and oneDNN's linear on ``--matmul-n`` square matrices,
best of 3 each. The FLOPs of one of our iterations are counted once as executed
(``FlopCounterMode``: forwards and backwards, the Langevin gradients included, with a formula for
the oneDNN linear it does not know); achieved GFLOP/s = FLOPs / (s/it), and its fraction of the
roofline is taken per round. Shares and fractions printed are medians over rounds. ``--json``
writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from math import prod
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from cdrl.core.config import load_config
from cdrl.io import atomic_write_text
from cdrl.train.registry import build_method
from cdrl.train.trainer import build_data

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_NAME = "toy_example.py"
ROUND_MARK = "CDRL_BENCH_ROUND"


class Patch(NamedTuple):
    name: str
    anchor: str
    new: str
    once: bool  # the anchor must occur exactly once (else: at least once, every one replaced)
    why: str


# Inserted in place of the torch_ema import (after ``import torch``): thread count, an EMA with
# torch_ema 0.3's update arithmetic for hosts without that package, and the timing hook.
HOOK = f'''\
import os as _bench_os, sys as _bench_sys, time as _bench_time
torch.set_num_threads(int(_bench_os.environ["CDRL_BENCH_THREADS"]))
try:
    from torch_ema import ExponentialMovingAverage
except ImportError:
    class ExponentialMovingAverage:
        def __init__(self, parameters, decay):
            self.params = list(parameters)
            self.shadow = [p.detach().clone() for p in self.params]
            self.decay, self.num_updates = decay, 0

        def update(self):
            self.num_updates += 1
            one_minus = 1.0 - min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
            with torch.no_grad():
                for s, p in zip(self.shadow, self.params):
                    s.sub_((s - p).mul_(one_minus))


def _cdrl_bench_rounds(counters):
    warmup, iters, rounds = (int(_bench_os.environ[k]) for k in
                             ("CDRL_BENCH_WARMUP", "CDRL_BENCH_ITERS", "CDRL_BENCH_ROUNDS"))
    start = None
    for i in counters:
        if i >= warmup and (i - warmup) % iters == 0:
            if start is not None:
                print("{ROUND_MARK}", _bench_time.perf_counter() - start, flush=True)
            if i - warmup == rounds * iters or not _bench_sys.stdin.readline():
                _bench_sys.stdout.flush()
                _bench_os._exit(0)
            start = _bench_time.perf_counter()
        yield i
'''

PATCHES = (
    Patch("torch-ema-and-timing-hook", "from torch_ema import ExponentialMovingAverage\n", HOOK,
          True, "defines the timing hook; torch_ema is optional"),
    Patch("cuda-tensors", ".cuda()", "", False, "tensors are made on the CPU"),
    Patch("cuda-models", ".to('cuda')", ".to('cpu')", False, "models live on the CPU"),
    Patch("lambdalr-verbose", ", verbose=False)", ")", False,
          "current torch removed LambdaLR's verbose argument"),
    Patch("log-copy", "os.path.join(log_path, timestamp, __file__)",
          "os.path.join(log_path, timestamp, os.path.basename(__file__))", True,
          "__file__ is absolute, so the copy would land on the script itself"),
    Patch("no-checkpoints", "if counter % n_save == 0:", "if False:", True,
          "our timed step saves nothing either"),
    Patch("no-figures", "if counter % n_plot == 0:", "if False:", True,
          "sampling and plotting are not part of a training iteration"),
    Patch("training-loop-hook", "for counter in range(n_iteration + 1):",
          "for counter in _cdrl_bench_rounds(range(n_iteration + 1)):", True,
          "times rounds of iterations inside the loop"),
)


def patch_source(text: str) -> str:
    """The official script with every patch applied; a missing anchor is an error naming it."""
    for p in PATCHES:
        n = text.count(p.anchor)
        if n == 0 or (p.once and n > 1):
            want = "exactly once" if p.once else "at least once"
            raise SystemExit(f"bench_toy: patch {p.name!r} ({p.why}) cannot be applied: its "
                             f"anchor {p.anchor!r} occurs {n} times in {OFFICIAL_NAME}, "
                             f"expected {want}")
        text = text.replace(p.anchor, p.new)
    return text


def find_official(path: Path) -> Path:
    """``toy_example.py`` given itself or a checkout holding it (shallowest match)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise SystemExit(f"bench_toy: --official {path}: no such file or directory")
    hits = [p for p in path.rglob(OFFICIAL_NAME) if ".git" not in p.relative_to(path).parts]
    if not hits:
        raise SystemExit(f"bench_toy: no {OFFICIAL_NAME} under --official {path}")
    return min(hits, key=lambda p: (len(p.parts), str(p)))


class OfficialRun:
    """The patched official script as a child process, one round of iterations per ``round()``."""

    def __init__(self, source: Path, workdir: Path, args) -> None:
        self.iters = args.iters
        script = workdir / OFFICIAL_NAME
        script.write_text(patch_source(source.read_text()))
        threads = str(args.threads)
        env = dict(os.environ, CDRL_BENCH_WARMUP=str(args.warmup), CDRL_BENCH_ITERS=str(args.iters),
                   CDRL_BENCH_ROUNDS=str(args.rounds), CDRL_BENCH_THREADS=threads,
                   OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, MPLBACKEND="Agg")
        self.stderr = open(workdir / "stderr.txt", "w+")
        self.proc = subprocess.Popen([sys.executable, script.name], cwd=workdir, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr)

    def round(self) -> float:
        """Seconds per iteration of one round."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(ROUND_MARK):
                return float(line.split()[1]) / self.iters
        self.proc.wait()
        self.stderr.seek(0)
        tail = "".join(self.stderr.readlines()[-20:])
        raise SystemExit(f"bench_toy: the official {OFFICIAL_NAME} stopped (exit "
                         f"{self.proc.returncode}) before finishing a round:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def matmul_gflops(n: int, repeats: int = 3) -> dict[str, float]:
    """fp32 ``n x n`` product throughput of this host, best of ``repeats`` per kernel:
    ``torch.mm`` (MKL) and oneDNN's linear, which our toy's layers use and which is the faster
    of the two on AVX-512 AMD hosts (``cdrl.core.nets.layers``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    kernels = {"mm": lambda: torch.mm(a, b)}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    out = {}
    for name, fn in kernels.items():
        fn()
        out[name] = 2 * n**3 / min(_time(fn, 1) for _ in range(repeats)) / 1e9
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.4f} s/it (min {min(xs):.4f}, max {max(xs):.4f})"


def _linear_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    """``x @ w.T``: 2 * (output elements) * (inner size)."""
    return 2 * prod(out_shape) * x_shape[-1]


def count_flops(step) -> int:
    """FLOPs of one ``step()`` as executed, forwards and backwards. Our toy's linear layers run
    through oneDNN (``cdrl.core.nets.layers.fast_linear``), which FlopCounterMode does not know;
    without a formula for it most of the iteration would go uncounted."""
    mapping = {}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        mapping[torch.ops.mkldnn._linear_pointwise] = _linear_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return counter.get_total_flops()


def build_ours(args):
    cfg = load_config(args.config)
    cfg.device = "cpu"
    if args.batch:
        cfg.train.batch_size = args.batch
    torch.manual_seed(0)
    data = build_data(cfg)
    method = build_method(cfg, data.shape, torch.device("cpu"))
    return cfg, method, lambda: data.batch(cfg.train.batch_size, method.device)


def langevin_chain(cfg, method, batch):
    """One Langevin chain of an iteration, as ``train_step`` runs it, as a callable."""
    x = batch()
    k = torch.randint(0, method.T, (x.shape[0],))
    _, x_i = method.positive_pair(x, k)
    y0 = method.propose(method.initializer, x_i, k)
    return lambda: method.refine(method.ebm, y0, x_i, k, cfg.train.langevin_steps)


def our_round(args, step, chain) -> dict:
    """Seconds per iteration, then, while the host's load is about the same, one Langevin chain
    and the matmul roofline (so that shares and fractions pair numbers of one moment)."""
    sec, langevin = _time(step, args.iters), _time(chain, 1)
    matmul = matmul_gflops(args.matmul_n)
    return {"sec": sec, "langevin": langevin, "matmul": matmul, "roofline": max(matmul.values())}


def run_rounds(args, step, chain, official: OfficialRun | None):
    """Alternate official and our rounds."""
    ours, theirs = [], []
    for r in range(args.rounds):
        if official is not None:
            theirs.append(official.round())
            print(f"  round {r + 1}: official {theirs[-1]:.4f} s/it", flush=True)
        ours.append(our_round(args, step, chain))
        print(f"  round {r + 1}: ours     {ours[-1]['sec']:.4f} s/it (Langevin chain "
              f"{ours[-1]['langevin']:.4f} s, matmul {ours[-1]['roofline']:.1f} GFLOP/s)",
              flush=True)
    return ours, theirs or None


def measure(args, workdir: Path | None) -> dict:
    official = None
    if workdir is not None:
        official = OfficialRun(find_official(Path(args.official)), workdir, args)
    try:
        cfg, method, batch = build_ours(args)
        step = lambda: method.train_step(batch())  # noqa: E731
        _time(step, args.warmup)
        ours, theirs = run_rounds(args, step, langevin_chain(cfg, method, batch), official)
    finally:
        if official is not None:
            official.close()
    return {"cfg": cfg, "ours": ours, "theirs": theirs, "flops": count_flops(step)}


def summary(args, m: dict) -> dict:
    """Every number of the run, as written by ``--json`` (None where there is no official run).
    Medians over rounds; shares and fractions are taken per round, then their median."""
    cfg, ours, theirs, flops = m["cfg"], m["ours"], m["theirs"], m["flops"]
    med = statistics.median
    sec = med([r["sec"] for r in ours])
    official = med(theirs) if theirs else None
    return {
        "torch": torch.__version__, "threads": args.threads, "cpu_model": cpu_model(),
        "config": str(args.config), "batch_size": cfg.train.batch_size,
        "langevin_steps": cfg.train.langevin_steps, "iters": args.iters,
        "warmup": args.warmup, "rounds": args.rounds, "matmul_n": args.matmul_n,
        "matmul_gflops": med([r["roofline"] for r in ours]),
        "matmul_gflops_by_kernel": {k: med([r["matmul"][k] for r in ours])
                                    for k in ours[0]["matmul"]},
        "ours_sec_per_iter": sec, "ours_rounds": [r["sec"] for r in ours],
        "official": str(args.official) if args.official else None,
        "official_sec_per_iter": official, "official_rounds": theirs,
        "ratio_official_over_ours": official / sec if official else None,
        "flops_per_iter": flops, "achieved_gflops": flops / sec / 1e9,
        "roofline_fraction": med([flops / r["sec"] / 1e9 / r["roofline"] for r in ours]),
        "langevin_sec": med([r["langevin"] for r in ours]),
        "langevin_share": med([r["langevin"] / r["sec"] for r in ours]),
    }


def print_summary(out: dict, shrunk: bool) -> None:
    langevin, share = out["langevin_sec"], out["langevin_share"]
    print(f"host: {out['cpu_model']}, torch {out['torch']}, {out['threads']} threads")
    print(f"ours: batch {out['batch_size']}, K = {out['langevin_steps']}, {out['rounds']} rounds "
          f"of {out['iters']} iterations after {out['warmup']} warm-up")
    print(f"seconds per iteration, ours:     {spread(out['ours_rounds'])}")
    if out["official_rounds"] is None:
        print("no --official checkout given: no official timing and no ratio printed")
    else:
        print(f"seconds per iteration, official: {spread(out['official_rounds'])}")
        print(f"ratio official/ours: {out['ratio_official_over_ours']:.2f}x")
        if shrunk:
            print("  (--batch shrinks only our side; this ratio is not like for like)")
    kernels = ", ".join(f"{k} {v:.1f}" for k, v in out["matmul_gflops_by_kernel"].items())
    print(f"fp32 matmul roofline ({out['matmul_n']}^2, best of 3 per round): "
          f"{out['matmul_gflops']:.1f} GFLOP/s ({kernels})")
    print(f"ours: {out['flops_per_iter'] / 1e9:.2f} GFLOP per iteration, "
          f"{out['achieved_gflops']:.1f} GFLOP/s, "
          f"{100 * out['roofline_fraction']:.1f}% of the matmul roofline")
    print(f"  Langevin chain ({out['langevin_steps']} steps): {langevin:.4f} s "
          f"({100 * share:.0f}%)")
    print(f"  rest (pair, proposal, EBM and initializer updates, EMA): {100 - 100 * share:.0f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "workflow/config/experiments/toy_official.yaml"))
    ap.add_argument("--official", help="checkout of AlvinZhuyx/CDRL, or its toy_example.py")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first, each side")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, help="override our batch size (smoke tests)")
    ap.add_argument("--matmul-n", type=int, default=2048, help="matrix size of the roofline")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    if min(args.iters, args.rounds, args.threads) < 1 or args.warmup < 0:
        ap.error("--iters, --rounds and --threads must be positive, --warmup non-negative")
    torch.set_num_threads(args.threads)
    # A plain SIGTERM would leave the official child running and its temporary copy behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.official:
        with tempfile.TemporaryDirectory(prefix="cdrl-official-") as tmp:
            m = measure(args, Path(tmp))
    else:
        m = measure(args, None)
    out = summary(args, m)
    print_summary(out, shrunk=bool(args.batch))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
