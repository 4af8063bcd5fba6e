"""The training loop: config in, run directory out, resumable, logged, guarded.

    cdrl train --config workflow/config/experiments/toy_fast.yaml --run-dir results/runs/toy_fast

Run directory layout::

    config.yaml          resolved config (all defaults filled in), written before the first step
    stats.jsonl          one line per ``train.log_every`` iterations (per-level losses, energies,
                         gradient norms, seconds per iteration, peak memory, learning rates)
    checkpoints/         ckpt-<iteration>.pt, full state, written atomically
    snapshots/           iter-<iteration>.pt every ``train.snapshot_every`` iterations, never
                         deleted (learning curves sample from them)
    latest.json          pointer to the newest checkpoint; running the same command resumes there
    final.json           written when the requested number of iterations is reached:
                         ``{"iteration", "total", "diverged": false}``; with
                         ``on_divergence="record"`` also when the run diverged (below)
    DIVERGED.json        written when the divergence guard stops the run: ``{"iteration",
                         "error", "last_good_checkpoint", "last_good_snapshot"}``

Divergence is an outcome, not a crash. The guard (``cdrl.core.optim``, ``train.max_abs_energy``)
fires at iteration ``i`` when the step after ``i`` completed iterations meets a non-finite or
exploding value (snapshots are written after whole steps only). ``on_divergence="fail"`` (the
default, ``cdrl train --on-divergence fail``) writes DIVERGED.json and raises ``DivergenceError``.
``on_divergence="record"`` (the workflow's) writes DIVERGED.json, then final.json
``{"iteration": i, "total", "diverged": true, "diverged_at": i, "last_good_snapshot", "error"}``
and returns, with a one-line warning. The rule: a diverged run is compared at its last good
snapshot: the newest snapshot strictly before the iteration at which the divergence guard fired
(the weights of iteration ``i`` are those whose values exploded); a run without one has no value,
and counts as not finished in the stability row. ``load_run`` applies it, so every consumer
(sampling, OOD, inpainting) gets those weights. A diverged run refuses to resume (delete
DIVERGED.json to try again); re-running ``record`` for the same total returns the recorded outcome.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from cdrl.core.config import Config, ConfigError, config_from_dict, config_to_dict
from cdrl.core.guidance import training_labels
from cdrl.core.optim import DivergenceError
from cdrl.data import ToyData
from cdrl.data.images import make_data
from cdrl.io import atomic_torch_save, atomic_write_text
from cdrl.train.checkpoint import load_latest, save_checkpoint
from cdrl.train.registry import build_method

__all__ = ["train", "Shard", "select_device", "build_data", "load_run", "RunStateError",
           "check_same_config", "read_divergence", "last_good_snapshot", "ON_DIVERGENCE"]

# What ``train`` does when the divergence guard fires (module docstring).
ON_DIVERGENCE = ("fail", "record")


class RunStateError(RuntimeError):
    """The run directory is in a state that needs a decision from the user."""


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; use 'cpu' "
                          "or 'auto'")
    return torch.device(name)


def build_data(cfg: Config):
    """The training data of a config: a toy point cloud or an in-memory image set."""
    return make_data(cfg.data)


def _next_batch(data, cfg: Config, device: torch.device, step: int = 0):
    """``(x, labels)`` of iteration ``step``: labels are the network labels ``1..C`` of a
    conditional run (spec 6.1; ``cdrl.core.guidance``), else None. Unconditional runs draw
    exactly what they always drew. Image rows follow ``data.order`` (``ImageSet.batch``)."""
    bs, conditional = cfg.train.batch_size, cfg.data.conditional
    if isinstance(data, ToyData):
        if not conditional:
            return data.batch(bs, device), None
        x, idx = data.batch(bs, device, with_index=True)
        return x, training_labels(cfg.data, data, None, idx, device)
    order = {"order": cfg.data.order, "step": step, "seed": cfg.seed}
    if not conditional:
        return data.batch(bs, device, flip=cfg.data.flip, **order)[0], None
    x, labels, idx = data.batch(bs, device, flip=cfg.data.flip, with_index=True, **order)
    return x, training_labels(cfg.data, data, labels, idx, device)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_config(run_dir: Path, resolved: dict) -> None:
    """Refuse to resume a run directory under a different config (iterations may grow)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text())
    # A run started before a config key existed stored no value for it: read its config through
    # today's schema, so the key takes its default, which by this project's rule is the
    # behaviour before the key was added (data.order: iid). A stored config the schema no longer
    # reads is compared as it is.
    with contextlib.suppress(ConfigError, TypeError, ValueError, KeyError):
        old = config_to_dict(config_from_dict(old))
    # Snapshots are read-only copies of the weights: asking for them later changes no result.
    diffs = sorted(_diff(old, resolved) - {"train.iterations", "train.snapshot_every"})
    if diffs:
        raise RunStateError(f"{run_dir} was started with a different config (keys: "
                            f"{', '.join(diffs)}); use a new --run-dir or restore the config")


def _diff(a, b, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return set() if a == b else {prefix}


class _StatsWindow:
    """Accumulates per-level statistics between log lines without per-iteration syncs."""

    FIELDS = ("count", "f_pos", "f_neg", "loss_ebm", "init_err")

    def __init__(self, levels: int, device: torch.device) -> None:
        self.levels = levels
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.per_level = torch.zeros(len(self.FIELDS), self.levels, device=self.device)
        self.scalars: dict[str, torch.Tensor] = {}
        self.iters = 0
        self.t0 = time.perf_counter()

    def add(self, stats: dict) -> None:
        k = stats["k"]
        diff = stats.get("loss_terms", stats["f_neg"] - stats["f_pos"])
        rows = [torch.ones_like(diff), stats["f_pos"], stats["f_neg"], diff,
                stats.get("init_err", torch.zeros_like(diff))]
        for r, vals in enumerate(rows):
            self.per_level[r].index_add_(0, k, vals.float())
        for key, val in stats.items():
            if val.dim() == 0:  # scalars; per-sample tensors go to the per-level rows
                self.scalars[key] = self.scalars.get(key, 0.0) + val.float()
        self.iters += 1

    def line(self, iteration: int, lrs: dict, device: torch.device) -> dict:
        pl = self.per_level.tolist()
        count = [max(c, 1.0) for c in pl[0]]
        per = {name: [v / c for v, c in zip(pl[i], count, strict=True)]
               for i, name in enumerate(self.FIELDS) if i > 0}
        out = {"iteration": iteration,
               "sec_per_iter": (time.perf_counter() - self.t0) / max(self.iters, 1),
               **{k: float(v) / self.iters for k, v in self.scalars.items()},
               "level_count": pl[0], "level_f_pos": per["f_pos"], "level_f_neg": per["f_neg"],
               "level_loss_ebm": per["loss_ebm"], "level_init_err": per["init_err"],
               "peak_mem_mb": _peak_memory_mb(device), **lrs}
        self.reset()
        return out


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _truncate_stats(path: Path, start: int) -> None:
    """Drop log lines past the checkpoint being resumed (they will be recomputed)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["iteration"] <= start]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def load_run(run_dir: Path, device: str | None = None, snapshot: int | None = None):
    """Rebuild the method of a run directory from its config and newest checkpoint, or from its
    snapshot of iteration ``snapshot`` (``train.snapshot_every``)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise RunStateError(f"{run_dir} has no config.yaml; train it first with `cdrl train`")
    cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()))
    dev = select_device(device or cfg.device)
    diverged = read_divergence(run_dir) if snapshot is None else None
    if diverged is not None:  # the rule of the module docstring
        snapshot = diverged["last_good_snapshot"]
        if snapshot is None:
            raise RunStateError(f"{run_dir} diverged at iteration {diverged['diverged_at']} "
                                "before its first snapshot (train.snapshot_every): it has no good "
                                "weights to load")
        warnings.warn(f"{run_dir} diverged at iteration {diverged['diverged_at']}; loading its "
                      f"last good snapshot, iteration {snapshot}", stacklevel=2)
    if snapshot is not None:
        path = snapshot_path(run_dir, snapshot)
        if not path.is_file():
            have = sorted(p.name for p in path.parent.glob("iter-*.pt"))
            raise RunStateError(f"{path} does not exist (snapshots here: {', '.join(have) or 'none'}"
                                "); set train.snapshot_every so that it divides the iteration")
        state = torch.load(path, map_location=dev, weights_only=True)
    else:
        state = load_latest(run_dir, map_location=dev)
    if state is None:
        raise RunStateError(f"{run_dir} has no checkpoint yet (latest.json is missing)")
    method = build_method(cfg, tuple(state["data_shape"]), dev)
    method.load_state_dict(state["method"])
    if diverged is not None:
        state["diverged_at"] = diverged["diverged_at"]
    return cfg, method, state


def read_divergence(run_dir: Path) -> dict | None:
    """The final.json of a run that ended at a divergence (``on_divergence="record"``), else
    None: ``diverged_at`` and ``last_good_snapshot`` (an iteration or None) say what it gives."""
    path = Path(run_dir) / "final.json"
    if not path.is_file():
        return None
    final = json.loads(path.read_text())
    return final if final.get("diverged") else None


def last_good_snapshot(run_dir: Path, diverged_at: int) -> int | None:
    """The iteration of the newest snapshot strictly before ``diverged_at``, or None."""
    its = [int(p.stem.removeprefix("iter-")) for p in (Path(run_dir) / SNAPSHOT_DIR).glob(
        "iter-*.pt")]
    return max((i for i in its if i < diverged_at), default=None)


@dataclass(frozen=True)
class Shard:
    """This process's part of the run: the whole of it by default. ``cdrl.train.distributed``
    passes one per rank (``rank`` of ``size``) whose methods talk to the other ranks, so the one
    loop below serves one process or many."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None  # set by the launcher (one GPU per rank)

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory; every rank reads it."""
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's rows of a global batch of ``batch``."""
        local = batch // self.size
        return slice(self.rank * local, (self.rank + 1) * local)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True when ``flag`` is set on any rank."""
        return flag

    def barrier(self) -> None:
        """Wait for every rank."""

    def randomness(self, local_batch: int):
        """Context in which the random draws of a training step are this rank's share."""
        return contextlib.nullcontext()


def train(cfg: Config, run_dir: str | Path, max_iters: int | None = None,
          progress: bool = True, shard: Shard | None = None, on_divergence: str = "fail") -> dict:
    """Train (or resume) ``cfg`` in ``run_dir`` up to ``max_iters`` (default: all) iterations.
    ``shard``: this process's rank in a data-parallel run (``cdrl.train.distributed``).
    ``on_divergence``: ``fail`` raises ``DivergenceError``, ``record`` ends the run with a
    final.json that says so (module docstring)."""
    shard = shard or Shard()
    run_dir = Path(run_dir)
    if on_divergence not in ON_DIVERGENCE:
        raise ConfigError(f"on_divergence: {on_divergence!r} is not one of {ON_DIVERGENCE}")
    if cfg.train.batch_size % shard.size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the "
                          f"{shard.size} training processes")
    total = cfg.train.iterations if max_iters is None else max_iters
    resolved = config_to_dict(cfg)
    if (run_dir / "DIVERGED.json").exists():
        done = read_divergence(run_dir)
        if on_divergence == "record" and done is not None and done["total"] == total:
            check_same_config(run_dir, resolved)
            if shard.main:
                _warn_diverged(run_dir, done)
            return done  # the recorded outcome of this very request
        raise RunStateError(f"{run_dir / 'DIVERGED.json'} marks a diverged run; read it, change "
                            "the config or delete the marker to resume from the last good "
                            "checkpoint")
    check_same_config(run_dir, resolved)  # every rank checks, so every rank stops alike
    if cfg.data.conditional and cfg.method != "cdrl":
        raise ConfigError(f"data.conditional: only method 'cdrl' is class-conditional, "
                          f"not {cfg.method!r}")
    if shard.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    shard.barrier()
    device = shard.device or select_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    data = build_data(cfg)
    method = build_method(cfg, data.shape, device)
    start = 0
    state = load_latest(run_dir, map_location=device)
    if state is not None:
        method.load_state_dict(state["method"])
        _set_rng_state(state["rng"])
        start = int(state["iteration"])
    if shard.main:
        _truncate_stats(run_dir / "stats.jsonl", start)
    it, diverged = _loop(cfg, method, data, run_dir, start, total, device, progress, shard,
                         on_divergence)
    result = {"iteration": it, "total": total, "diverged": diverged is not None}
    if diverged is not None:
        result.update(diverged_at=it, last_good_snapshot=last_good_snapshot(run_dir, it),
                      error=str(diverged))
    if shard.size > 1:
        result["world_size"] = shard.size
    if shard.main:
        atomic_write_text(run_dir / "final.json", json.dumps(result))
        if diverged is not None:
            _warn_diverged(run_dir, result)
    shard.barrier()
    return result


def _warn_diverged(run_dir: Path, final: dict) -> None:
    """One line on stderr: the run, where it diverged and where it will be compared."""
    good = final["last_good_snapshot"]
    where = (f"it will be compared at its snapshot of iteration {good}" if good is not None else
             "it has no snapshot before that, so it has no value (not finished)")
    print(f"cdrl train: warning: {_run_name(run_dir)} diverged at iteration "
          f"{final['diverged_at']}; {where}", file=sys.stderr, flush=True)


def _checkpoint(cfg, method, run_dir, it, data_shape) -> Path:
    state = {"iteration": it, "method": method.state_dict(), "rng": _rng_state(),
             "config": config_to_dict(cfg), "data_shape": list(data_shape)}
    return save_checkpoint(run_dir, it, state, keep=cfg.train.keep_checkpoints)


SNAPSHOT_DIR = "snapshots"


def snapshot_path(run_dir: Path, iteration: int) -> Path:
    """Where ``train.snapshot_every`` keeps the weights of ``iteration``."""
    return Path(run_dir) / SNAPSHOT_DIR / f"iter-{iteration:08d}.pt"


def _snapshot(cfg, method, run_dir, it, data_shape) -> Path:
    """The weights at iteration ``it``, kept for good (checkpoints rotate): learning curves
    sample from them after training (``cdrl sample --snapshot``). No RNG state: they are not
    for resuming."""
    state = {"iteration": it, "method": method.state_dict(), "config": config_to_dict(cfg),
             "data_shape": list(data_shape)}
    path = snapshot_path(run_dir, it)
    atomic_torch_save(state, path)
    return path


def _run_name(run_dir: Path) -> str:
    """``<run>/seed<s>`` for the workflow's run directories, else the folder's name."""
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.startswith("seed") else run_dir.name


def _progress_line(run_dir: Path, line: dict, total: int) -> str:
    """One plain line for logs that are files (``--no-progress``): a SLURM job's log shows how
    far training got and when it will end, without tqdm's carriage returns."""
    eta = (total - line["iteration"]) * line["sec_per_iter"]
    hours, rest = divmod(int(eta), 3600)
    return (f"train {_run_name(run_dir)}: iteration {line['iteration']}/{total}, loss_ebm "
            f"{line['loss_ebm']:.4g}, {line['sec_per_iter']:.3f} s/it, ETA "
            f"{hours}:{rest // 60:02d}:{rest % 60:02d}")


def _loop(cfg, method, data, run_dir, start, total, device, progress, shard,
          on_divergence: str = "fail") -> tuple[int, DivergenceError | None]:
    """Iterations ``start`` .. ``total``: batch, step, log, checkpoint; returns the iteration
    reached and the divergence that stopped it, if any. A SIGTERM/SIGUSR2 on any rank stops every
    rank after the same iteration with a checkpoint; a divergence stops every rank at the same
    step (``cdrl.core.optim``), rank 0 marks the run, and ``fail`` raises it."""
    tc = cfg.train
    window = _StatsWindow(method.T, device)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old = _install_handlers(on_signal)
    bar = tqdm(total=total, initial=start, disable=not (progress and shard.main),
               mininterval=2.0, desc=f"train {_run_name(run_dir)}", unit="it")
    rows = shard.rows(tc.batch_size)
    local_b = rows.stop - rows.start
    it, diverged = start, None
    log = open(run_dir / "stats.jsonl", "a") if shard.main else None
    try:
        while it < total and not shard.any(stop["signal"] is not None, device):
            x, labels = _next_batch(data, cfg, device, it)
            if shard.size > 1:
                x, labels = x[rows], None if labels is None else labels[rows]
            try:
                with shard.randomness(local_b):
                    stats = method.train_step(x, labels)
            except DivergenceError as err:
                if shard.main:
                    _mark_divergence(run_dir, it, err)
                if on_divergence == "fail":
                    raise
                diverged = err
                break
            window.add(stats)
            it += 1
            bar.update(1)
            if it % tc.log_every == 0 or it == total:
                line = window.line(it, _lrs(method), device)
                if shard.size > 1:
                    line["world_size"] = shard.size
                if log is not None:
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{line['loss_ebm']:.3g}",
                                    s_it=f"{line['sec_per_iter']:.3f}")
                    if not progress:
                        print(_progress_line(run_dir, line, total), file=sys.stderr, flush=True)
            if shard.main and (it % tc.ckpt_every == 0 or it == total):
                _checkpoint(cfg, method, run_dir, it, data.shape)
            if shard.main and tc.snapshot_every and it % tc.snapshot_every == 0:
                _snapshot(cfg, method, run_dir, it, data.shape)
        if it < total and diverged is None:  # stopped by a signal
            if shard.main:
                _checkpoint(cfg, method, run_dir, it, data.shape)
            shard.barrier()
            how = f"signal {stop['signal']}" if stop["signal"] else "a signal to another rank"
            raise SystemExit(f"stopped by {how} at iteration {it}; checkpoint saved, run the "
                             "same command to resume")
    finally:
        bar.close()
        if log is not None:
            log.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return it, diverged


def _install_handlers(handler) -> dict:
    """SIGTERM/SIGUSR2 (SLURM preemption, submitit) stop the loop at the next iteration with a
    checkpoint. Only the main thread may install handlers; elsewhere the run is not guarded."""
    old = {}
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:
            break
    return old


def _lrs(method) -> dict:
    out = {"lr_ebm": method.sched_ebm.get_last_lr()[0]}
    if getattr(method, "initializer", None) is not None:
        out["lr_init"] = method.sched_init.get_last_lr()[0]
    return out


def _mark_divergence(run_dir: Path, it: int, err: Exception) -> None:
    latest = run_dir / "latest.json"
    info = {"iteration": it, "error": str(err),
            "last_good_checkpoint": json.loads(latest.read_text()) if latest.exists() else None,
            "last_good_snapshot": last_good_snapshot(run_dir, it)}
    atomic_write_text(run_dir / "DIVERGED.json", json.dumps(info, indent=2))
