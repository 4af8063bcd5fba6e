"""Shared fixtures and helpers: a tiny toy config that trains in well under a second per
iteration, its digits and baseline variants, the repository root, the environment of child
processes, loading ``scripts/*.py``, and comparing training states.

Test files import the helpers with ``from tests.conftest import ...`` (pytest registers this
module under that name; a separate helpers module would not be importable the same way)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml

from cdrl.train.checkpoint import load_latest

# Every path in the tests is absolute from here, so they run from any working directory.
ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY = {
    "method": "cdrl",
    "seed": 3,
    "device": "cpu",
    "data": {"name": "checkerboard", "num_points": 2000, "scale": 4.0, "seed": 7},
    "schedule": {"kind": "cdrl", "levels": 6, "b2": 2.0e-3, "c_mode": "constant"},
    "ebm": {"arch": "toy_mlp", "width": 32, "ch_mult": [1, 2], "blocks_per_level": 1,
            "emb_in_dim": 32, "temb_dim": 64},
    "initializer": {"arch": "toy_mlp", "width": 32, "num_blocks": 1, "emb_in_dim": 32,
                    "temb_dim": 32, "groups": 8, "dropout": 0.1},
    "train": {"iterations": 8, "batch_size": 64, "langevin_steps": 3,
              "ebm_optim": {"name": "adam", "lr": 1.0e-4, "warmup_iters": 4,
                            "ema_decay": 0.99},
              "init_optim": {"name": "adamw", "lr": 1.0e-3, "warmup_iters": 4,
                             "warmup_offset": 1, "ema_decay": 0.99},
              "log_every": 2, "ckpt_every": 4},
    "sample": {"langevin_steps": 3, "tweedie": False, "batch_size": 128},
}


# A toy that learns visibly in a few hundred iterations (seconds on 2 cores).
LEARNING = {
    "ebm": {"width": 64, "ch_mult": [1, 2, 2]},
    "initializer": {"width": 64, "groups": 32, "dropout": 0.0},
    "train": {"batch_size": 256, "langevin_steps": 15,
              "ebm_optim": {"lr": 3e-4, "warmup_iters": 50, "ema_decay": 0.98},
              "init_optim": {"lr": 2e-3, "warmup_iters": 50, "ema_decay": 0.98},
              "log_every": 50},
    "sample": {"langevin_steps": 15, "batch_size": 2000},
}


@pytest.fixture(scope="session", autouse=True)
def _flops_cache(tmp_path_factory):
    """One FLOP-count cache for the session (cdrl.measure.run_flops.cache_file), outside the
    user's: every plan of a GPU preset reads it, and Snakemake subprocesses inherit it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CDRL_FLOPS_CACHE", str(tmp_path_factory.mktemp("flops") / "flops.json"))
    yield
    mp.undo()


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, val in over.items():
        out[key] = merge(out[key], val) if isinstance(val, dict) and key in out else val
    return out


# A digits run small enough to train in seconds (image runs), and its class-conditional twin
# (downstream tests, shards).
TINY_DIGITS = {
    "method": "cdrl", "seed": 0, "device": "cpu",
    "data": {"name": "digits16", "flip": False},
    "ebm": {"arch": "image", "width": 8, "ch_mult": [1, 2], "blocks_per_level": 1,
            "emb_in_dim": 16, "temb_dim": 32},
    "initializer": {"arch": "unet", "width": 8, "num_blocks": 1, "dim_mults": [1, 1],
                    "attn_resolutions": [8], "emb_in_dim": 16, "temb_dim": 32, "groups": 4},
    "train": {"iterations": 4, "batch_size": 8, "langevin_steps": 2, "log_every": 2,
              "ckpt_every": 2,
              "ebm_optim": {"lr": 1e-4, "warmup_iters": 2},
              "init_optim": {"name": "adamw", "lr": 1e-4, "warmup_iters": 2}},
    "sample": {"langevin_steps": 2, "batch_size": 4},
}
TINY_COND_DIGITS = merge(TINY_DIGITS, {"data": {"conditional": True},
                                       "sample": {"tweedie": True}})


@pytest.fixture
def tiny_config_dict():
    return lambda **over: merge(TINY, over)


@pytest.fixture
def learning_config_dict():
    """The tiny config grown into ``LEARNING``, trained for ``iterations``."""
    return lambda iterations: merge(merge(TINY, LEARNING), {
        "train": {"iterations": iterations, "ckpt_every": iterations}})


@pytest.fixture
def write_config(tmp_path):
    def write(data: dict, name: str = "cfg.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


# DRL and the single-EBM baselines on the tiny toy (merged onto TINY).
DRL_TINY = {"method": "drl", "initializer": {"arch": "none"},
            "schedule": {"kind": "drl", "b2": 2e-3, "c_mode": "constant"},
            "ebm": {"time_input": "index"},
            "train": {"langevin_steps": 4, "variance_reduction": False, "ema_ramp": False},
            "sample": {"langevin_steps": 4, "noise_scale": 0.99}}
TOY_BASELINE = {"step_size": 0.05, "noise_std": 0.3, "clamp": 0.0,
                "init": "uniform", "init_scale": 8.0, "buffer_size": 256, "reinit_prob": 0.2,
                "energy_reg": 0.1, "latent_dim": 4, "generator_width": 16,
                "generator_lr": 1e-3}
SINGLE_EBM_BASELINES = ["short_run", "coopnets", "replay_buffer"]


def single_ebm_tiny(name: str) -> dict:
    """The override of TINY that trains the single-EBM baseline ``name``."""
    return {"method": name, "initializer": {"arch": "none"}, "baseline": TOY_BASELINE}


# ---- child processes and scripts ----------------------------------------------------------------

def subprocess_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a child process: the virtualenv's ``bin`` first on PATH
    (Snakemake's jobs run ``python`` and ``cdrl``), ``OMP_NUM_THREADS`` set to ``threads`` when
    given, then ``extra``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra)
    return env


def load_script(name: str, register: bool = False) -> ModuleType:
    """``scripts/<name>.py`` imported as the module ``name``; ``register`` also puts it in
    ``sys.modules`` (dataclasses look their module up there; the caller removes it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_json(path: Path, data) -> None:
    """``data`` as JSON at ``path``, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def markdown_rows(md: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the one pipe table in ``md``."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    return cells[0], cells[2:]


def stage_dataset_stand_ins(work: Path) -> Path:
    """Empty stand-ins under ``work/resources/datasets`` for every dataset file the pre-flight
    asks for (cdrl.plan.preflight.REQUIRED, the first layout of each split): planning checks
    only that they exist, so the GPU presets can be planned anywhere. Returns ``work``."""
    from cdrl.plan.preflight import REQUIRED

    root = work / "resources" / "datasets"
    for splits in REQUIRED.values():
        for alternatives in splits.values():
            for rel in alternatives[0]:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).touch()
    return work


def staged_inception() -> Path | None:
    """The Inception FID weights where they are staged ($CDRL_INCEPTION_WEIGHTS, else
    resources/weights/ of this checkout), or None."""
    from cdrl.eval.evaluate import INCEPTION_ENV
    from cdrl.eval.inception_weights import FID_PORT_FILE

    for cand in (os.environ.get(INCEPTION_ENV), ROOT / "resources" / "weights" / FID_PORT_FILE):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


# ---- comparing training states -------------------------------------------------------------------

def _join(path: str, key) -> str:
    return f"{path}/{key}" if path else str(key)


def state_leaves(state, path: str = "") -> dict[str, object]:
    """Every leaf of a nested state (dicts, lists and tuples inside each other) by its path,
    ``"method/ebm/conv.weight"``; an empty container is a leaf."""
    if isinstance(state, Mapping) and state:
        return {k: v for key, val in state.items() for k, v in
                state_leaves(val, _join(path, key)).items()}
    if isinstance(state, (list, tuple)) and state:
        return {k: v for i, val in enumerate(state) for k, v in
                state_leaves(val, _join(path, i)).items()}
    return {path: state}


def float_leaves(state) -> dict[str, torch.Tensor]:
    """The floating-point tensors among ``state_leaves(state)``."""
    return {k: v for k, v in state_leaves(state).items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()}


def _same_leaf(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.detach().cpu(), b.detach().cpu()))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                and a.dtype == b.dtype and np.array_equal(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def state_differences(a, b, path: str = "") -> list[str]:
    """Where two nested states differ, over the union of their keys: the path of every leaf
    whose values differ (tensors by ``torch.equal`` with dtype and shape, arrays by
    ``np.array_equal``, anything else by ``==``), and ``"path (why)"`` where the
    structure differs (a key on one side only, lengths or types). Empty when they are equal,
    so ``assert not state_differences(a, b)`` asserts equality."""
    name = path or "(top)"
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = _join(path, key)
            if key not in b:
                out.append(f"{sub} (only in the first)")
            elif key not in a:
                out.append(f"{sub} (only in the second)")
            else:
                out += state_differences(a[key], b[key], sub)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{name} (length {len(a)} against {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in
                state_differences(x, y, _join(path, i))]
    containers = (Mapping, list, tuple)
    if isinstance(a, containers) or isinstance(b, containers):
        return [f"{name} ({type(a).__name__} against {type(b).__name__})"]
    return [] if _same_leaf(a, b) else [name]


def assert_same_state(a, b) -> None:
    """Fail, naming the first differences, unless ``state_differences(a, b)`` is empty."""
    diffs = state_differences(a, b)
    assert not diffs, f"{len(diffs)} differences: " + ", ".join(diffs[:20])


def checkpoint_state(run_dir: Path) -> dict:
    """What resuming restores from a run's newest checkpoint: method, RNG and iteration."""
    ckpt = load_latest(run_dir, map_location="cpu")
    return {key: ckpt[key] for key in ("method", "rng", "iteration")}


def assert_same_checkpoint(dir_a: Path, dir_b: Path, min_entries: int = 20) -> None:
    """The newest checkpoints of two runs are equal on every tensor and value of the state
    (method, RNG, iteration), which has more than ``min_entries`` leaves: the resume check."""
    a, b = checkpoint_state(dir_a), checkpoint_state(dir_b)
    assert len(state_leaves(a)) > min_entries
    assert_same_state(a, b)
