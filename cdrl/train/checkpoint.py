"""Atomic checkpoints with a ``latest.json`` pointer (resume = run the same command again).

A checkpoint is one file holding everything a bit-exact resume needs (models, EMAs, optimizers,
schedulers, RNG states, iteration, resolved config). It is written to a temporary file in the same
folder, flushed to disk and renamed over the final name, and only then does ``latest.json`` move
to it, so a crash at any point leaves the previous checkpoint and pointer intact. Files are read
with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cdrl.io import atomic_torch_save, atomic_write_bytes, atomic_write_text

__all__ = ["save_checkpoint", "load_latest", "latest_info", "CheckpointError",
           "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]

LATEST = "latest.json"
CKPT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint named by ``latest.json`` is missing or unreadable."""


def latest_info(run_dir: Path) -> dict | None:
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    return json.loads(pointer.read_text())


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


def load_latest(run_dir: Path, map_location="cpu") -> dict | None:
    """The state saved by the newest ``save_checkpoint``, or None for a fresh run directory."""
    info = latest_info(run_dir)
    if info is None:
        return None
    path = Path(run_dir) / info["path"]
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, garbage or foreign files all fail differently
        raise CheckpointError(f"{path} (named by {Path(run_dir) / LATEST}) cannot be read: "
                              f"{err}. Point latest.json at an older checkpoint in "
                              f"{Path(run_dir) / CKPT_DIR} or delete the run directory") from err
