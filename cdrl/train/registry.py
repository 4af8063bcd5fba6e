"""The one place that maps ``method:`` in a config to the class implementing it.

Every method exposes the same entry points (``train_step``, ``sample``, ``state_dict``,
``load_state_dict``), so the trainer, the sampler CLI and the workflow treat them alike. The
baselines (``baselines/``) sit beside the method: they import ``cdrl.core``, never this module.
"""

from __future__ import annotations

import torch

from baselines.coopnets import CoopNets
from baselines.drl import DRL
from baselines.replay_buffer import ReplayBufferEBM
from baselines.short_run import ShortRunEBM
from cdrl.core.config import Config, ConfigError
from cdrl.core.method import CDRL

__all__ = ["METHODS", "build_method"]

METHODS: dict[str, type] = {
    "cdrl": CDRL,
    "drl": DRL,
    "short_run": ShortRunEBM,
    "coopnets": CoopNets,
    "replay_buffer": ReplayBufferEBM,
}


def build_method(cfg: Config, data_shape: tuple[int, ...], device: torch.device):
    if cfg.method not in METHODS:
        raise ConfigError(f"method: unknown method {cfg.method!r}; known: {sorted(METHODS)}")
    return METHODS[cfg.method](cfg, data_shape, device)
