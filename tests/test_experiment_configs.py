"""Every shipped experiment config loads, builds its method, and (when its data ships offline)
trains two iterations and samples through the CLI."""


import numpy as np
import pytest
import torch

from cdrl.cli import main as cli_main
from cdrl.core.config import load_config
from cdrl.data.images import IMAGE_DATASETS
from cdrl.train.registry import build_method
from tests.conftest import ROOT

EXPERIMENTS = sorted((ROOT / "workflow/config/experiments")
                     .glob("*.yaml"))
OFFLINE = {"checkerboard", "8gaussians", "rings", "quadrants", "digits16", "lfw25"}


def test_every_method_has_a_cpu_config():
    methods = {load_config(p).method for p in EXPERIMENTS
               if load_config(p).data.name in OFFLINE}
    assert methods >= {"cdrl", "drl", "short_run", "coopnets", "replay_buffer"}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_trains_and_samples(path, tmp_path):
    cfg = load_config(path)
    if cfg.data.name not in OFFLINE:  # paper-size configs: build the networks only
        spec = IMAGE_DATASETS[cfg.data.name]
        build_method(cfg, (spec.channels, spec.size, spec.size), torch.device("cpu"))
        return
    run, out = tmp_path / "run", tmp_path / "s.npz"
    assert cli_main(["train", "--config", str(path), "--run-dir", str(run), "--max-iters", "2",
                     "--device", "cpu", "--no-progress"]) == 0
    assert cli_main(["sample", "--run-dir", str(run), "--num", "4", "--out", str(out),
                     "--steps", "2", "--device", "cpu"]) == 0
    with np.load(out) as npz:
        assert len(npz["x"]) == 4 and np.isfinite(npz["x"]).all()
