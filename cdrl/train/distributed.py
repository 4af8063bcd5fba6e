"""Data-parallel training with torch.distributed: N processes, one global batch.

    CDRL_NPROC=2 python -m cdrl train --config C --run-dir D     # or: N visible CUDA GPUs

``cdrl train`` asks ``procs_wanted()`` how many processes the job should run: ``$CDRL_NPROC``
if set, else the number of visible CUDA devices (a SLURM job with ``gpu: N`` sees N), else the
GPUs SLURM granted (``$SLURM_GPUS_ON_NODE``; CPU processes on a node without CUDA), else 1.
With more than one, ``launch`` re-runs the same command N times, torchrun-style (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), forwards SIGTERM/SIGUSR2 to the workers and
returns the first non-zero exit status. Workers run ``train``: NCCL on GPUs (one per rank), gloo
on the CPU.

Results do not depend on N for the same global batch ``train.batch_size`` (B):
- every rank draws the whole global batch from the same RNG stream and keeps its B/N rows;
- inside a training step, every draw whose leading dimension is the local batch (steps ``k``,
  positive-pair noise, proposal and Langevin noise, label dropout) is drawn for the global batch
  and sliced (``sharded_randomness``), so rank r sees exactly rows r*B/N.. of the one-process
  randomness, and every rank's RNG stays in the one-process state;
- losses are per-rank means over equal shards and gradients are averaged across ranks before
  clipping (``average_gradients``, called by ``cdrl.core.optim.optimizer_step``), which equals the
  gradient of the global mean up to floating-point summation order.
So N = 1 and N = 2 agree to rounding (tests/test_distributed.py). Not covered: dropout masks
(drawn inside the kernels; configs with ``dropout > 0`` differ in which units drop) and the
statistics in stats.jsonl, which are rank 0's shard. Rank 0 writes the run directory; every rank
resumes from it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from cdrl.core.optim import average_gradients
from cdrl.train import trainer
from cdrl.train.trainer import Shard

__all__ = ["procs_wanted", "launch", "world", "train", "average_gradients",
           "sharded_randomness"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` outside a launch)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def procs_wanted() -> int:
    """How many training processes this command should run (1 inside a launched worker)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return 1
    if os.environ.get("CDRL_NPROC"):
        return max(1, int(os.environ["CDRL_NPROC"]))
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    # GPUs granted by SLURM but no CUDA (the test cluster's fake GPUs): CPU processes stand in.
    return max(1, int(os.environ.get("SLURM_GPUS_ON_NODE") or 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str] | None = None) -> int:
    """Run this process's command line as ``nproc`` workers; returns an exit status."""
    argv = argv or [sys.executable, *sys.orig_argv[1:]]
    base = {**os.environ, "WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port())}
    workers = [subprocess.Popen(argv, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)})
               for r in range(nproc)]

    def forward(signum, _frame):
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        codes = [w.wait() for w in workers]
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return next((c for c in codes if c != 0), 0)


def _init(device_name: str) -> torch.device:
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size)
    return torch.device("cuda", local) if cuda else torch.device("cpu")


def _split_shape(name: str, args: tuple, kwargs: dict):
    """``(shape, rebuild)`` of a torch random call: ``rebuild(new_shape)`` gives its arguments."""
    if "size" in kwargs:
        shape = kwargs["size"]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return shape, lambda new: (args, {**kwargs, "size": new})
    if name == "randint":
        pos = 2 if len(args) >= 3 else 1
        if len(args) <= pos:
            return None, None
        return tuple(args[pos]), lambda new: ((*args[:pos], new, *args[pos + 1:]), kwargs)
    if args and all(isinstance(a, int) for a in args):          # torch.randn(3, 4)
        return tuple(args), lambda new: ((new,), kwargs)
    if args:                                                    # torch.randn((3, 4), ...)
        return tuple(args[0]), lambda new: ((new, *args[1:]), kwargs)
    return None, None


@contextlib.contextmanager
def sharded_randomness(rank: int, size: int, local_batch: int):
    """Within the block, global-RNG draws whose leading dimension is ``local_batch`` are drawn
    for ``local_batch * size`` rows and this rank's rows are returned (see the module docs)."""
    names = ("randn", "rand", "randint", "randn_like", "rand_like")
    real = {name: getattr(torch, name) for name in names}
    rows = slice(rank * local_batch, (rank + 1) * local_batch)

    def sharded(name):
        def fn(*args, **kwargs):
            shape, rebuild = _split_shape(name, args, kwargs)
            if kwargs.get("generator") is not None or not shape or shape[0] != local_batch:
                return real[name](*args, **kwargs)
            args, kwargs = rebuild((local_batch * size, *shape[1:]))
            return real[name](*args, **kwargs)[rows]
        return fn

    def like(base):
        def fn(x, **kwargs):
            if x.dim() == 0 or x.shape[0] != local_batch:
                return real[base + "_like"](x, **kwargs)
            kwargs.setdefault("dtype", x.dtype)
            kwargs.setdefault("device", x.device)
            return real[base]((local_batch * size, *x.shape[1:]), **kwargs)[rows]
        return fn

    patched = {"randn": sharded("randn"), "rand": sharded("rand"),
               "randint": sharded("randint"), "randn_like": like("randn"),
               "rand_like": like("rand")}
    for name, fn in patched.items():
        setattr(torch, name, fn)
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(torch, name, fn)


class _RankShard(Shard):
    """A ``Shard`` whose ranks talk through the process group started by ``_init``."""

    def any(self, flag: bool, device: torch.device) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        dist.barrier()

    def randomness(self, local_batch: int):
        return sharded_randomness(self.rank, self.size, local_batch)


def train(cfg, run_dir: str | Path, max_iters: int | None = None, progress: bool = True,
          on_divergence: str = "fail") -> dict:
    """``cdrl.train.trainer.train`` as one rank of a data-parallel run started by ``launch``:
    the same loop, handed this rank's ``Shard``; rank 0 alone draws the progress bar."""
    device = _init(cfg.device)
    rank, size = world()
    try:
        return trainer.train(cfg, run_dir, max_iters=max_iters, progress=progress,
                             shard=_RankShard(rank, size, device), on_divergence=on_divergence)
    finally:
        dist.destroy_process_group()
