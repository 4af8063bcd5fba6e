"""Atomic checkpoints with a ``latest.json`` pointer (resume = run the same command again).

A checkpoint is one file holding everything a bit-exact resume needs (models, EMAs, optimizers,
schedulers, RNG states, iteration, resolved config). It is written to a temporary file in the same
folder, flushed to disk and renamed over the final name, and only then does ``latest.json`` move
to it, so a crash at any point leaves the previous checkpoint and pointer intact. Files are read
with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from cdrl.io import atomic_torch_save, atomic_write_bytes, atomic_write_text

__all__ = ["save_checkpoint", "load_latest", "latest_info", "CheckpointError",
           "CheckpointFallbackWarning",
           "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]

LATEST = "latest.json"
CKPT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """No readable checkpoint where ``latest.json`` says there is one."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was unreadable; an older one is used."""


def latest_info(run_dir: Path) -> dict | None:
    """The ``latest.json`` pointer of a run directory, None for a fresh one; a pointer that is
    not valid JSON raises ``CheckpointError``."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text())
        return {"iteration": int(info["iteration"]), "path": str(info["path"])}
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{pointer} is corrupt ({err})") from err


def save_checkpoint(run_dir: Path, iteration: int, state: dict, keep: int = 2) -> Path:
    """Write ``checkpoints/ckpt-<iteration>.pt`` atomically, point ``latest.json`` at it, and
    delete all but the newest ``keep`` checkpoints."""
    run_dir = Path(run_dir)
    rel = Path(CKPT_DIR) / f"ckpt-{iteration:08d}.pt"
    atomic_torch_save(state, run_dir / rel)
    atomic_write_text(run_dir / LATEST, json.dumps({"iteration": iteration, "path": str(rel)}))
    ckpts = sorted((run_dir / CKPT_DIR).glob("ckpt-*.pt"))
    for old in ckpts[:-keep]:
        if old.name != rel.name:
            old.unlink(missing_ok=True)
    return run_dir / rel


def _read(path: Path, map_location):
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(run_dir: Path, map_location="cpu") -> dict | None:
    """The state saved by the newest ``save_checkpoint``, or None for a fresh run directory.

    If the checkpoint ``latest.json`` names is unreadable (truncated by a crash of the file
    system, say) or the pointer itself is corrupt, the newest readable checkpoint beside it is
    used instead, with a warning: training then repeats the iterations since that one."""
    run_dir = Path(run_dir)
    try:
        info = latest_info(run_dir)
    except CheckpointError as err:
        return _fall_back(run_dir, map_location, str(err))
    if info is None:
        return None
    path = run_dir / info["path"]
    try:
        return _read(path, map_location)
    except Exception as err:  # truncated, garbage or foreign files all fail differently
        return _fall_back(run_dir, map_location, f"{path} (named by {run_dir / LATEST}) "
                          f"cannot be read: {err}", skip=path)


def _fall_back(run_dir: Path, map_location, problem: str, skip: Path | None = None) -> dict:
    """The newest readable checkpoint of ``run_dir`` other than ``skip``, with a warning."""
    for path in sorted((run_dir / CKPT_DIR).glob("ckpt-*.pt"), reverse=True):
        if skip is not None and path.resolve() == skip.resolve():
            continue
        try:
            state = _read(path, map_location)
        except Exception:  # noqa: BLE001 - try the next older one
            continue
        warnings.warn(f"{problem}; resuming from {path} (iteration {state.get('iteration')}) "
                      "instead", CheckpointFallbackWarning, stacklevel=3)
        return state
    raise CheckpointError(f"{problem}, and no other readable checkpoint is in "
                          f"{run_dir / CKPT_DIR}; delete the run directory to start afresh")
