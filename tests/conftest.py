"""Shared fixtures: a tiny toy config that trains in well under a second per iteration."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from cdrl.train.checkpoint import load_latest

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
    """One FLOP-count cache for the session (cdrl.report.run_flops.cache_file), outside the
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


def _flatten(obj, prefix: str, out: dict) -> dict:
    if isinstance(obj, dict):
        for key, val in obj.items():
            _flatten(val, f"{prefix}/{key}", out)
    elif isinstance(obj, (list, tuple)):
        for i, val in enumerate(obj):
            _flatten(val, f"{prefix}/{i}", out)
    else:
        out[prefix] = obj
    return out


@pytest.fixture
def assert_same_checkpoint():
    """Compare the newest checkpoints of two run directories on every tensor and value of the
    state (method, RNG, iteration): the resume-equivalence check."""

    def check(dir_a, dir_b, min_entries: int = 20) -> None:
        a, b = (_flatten({key: load_latest(d)[key] for key in ("method", "rng", "iteration")},
                         "", {}) for d in (dir_a, dir_b))
        assert a.keys() == b.keys() and len(a) > min_entries
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key

    return check
