"""The one place that maps ``method:`` in a config to the class implementing it.

Every method exposes the same entry points (``train_step``, ``sample``, ``state_dict``,
``load_state_dict``), so the trainer, the sampler CLI and the workflow treat them alike.
"""

from __future__ import annotations

import torch

from .config import Config, ConfigError
from .method import CDRL

__all__ = ["METHODS", "register_method", "build_method"]

METHODS: dict[str, type] = {"cdrl": CDRL}


def register_method(name: str, cls: type) -> None:
    METHODS[name] = cls


# Baseline modules register themselves on import (``baselines/<name>.py``).
BASELINE_MODULES = ("drl", "short_run", "coopnets", "replay_buffer")


def _load_baselines() -> None:
    import importlib

    for name in BASELINE_MODULES:
        importlib.import_module(f"baselines.{name}")


def build_method(cfg: Config, data_shape: tuple[int, ...], device: torch.device):
    if cfg.method not in METHODS:
        _load_baselines()
    if cfg.method not in METHODS:
        raise ConfigError(f"method: unknown method {cfg.method!r}; known: {sorted(METHODS)}")
    return METHODS[cfg.method](cfg, data_shape, device)
