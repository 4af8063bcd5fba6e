"""Single-EBM baselines: known-answer Langevin, training, sampling, CLI (bit-exact resume:
test_trainer.py::test_resume_is_bit_exact).

    .venv/bin/python -m pytest -q tests/test_single_ebm_baselines.py
"""

import math

import numpy as np
import pytest
import torch

import baselines.coopnets  # noqa: F401  (registers "coopnets")
import baselines.replay_buffer  # noqa: F401  (registers "replay_buffer")
import baselines.short_run  # noqa: F401  (registers "short_run")
from baselines.common import chain_start
from cdrl.cli import main as cli_main
from cdrl.core.config import config_from_dict
from cdrl.core.sampler import energy_grad_fn, langevin
from cdrl.tasks.generate import generate
from cdrl.train.checkpoint import load_latest
from cdrl.train.registry import METHODS
from cdrl.train.trainer import load_run, train
from tests.conftest import SINGLE_EBM_BASELINES as METHOD_NAMES
from tests.conftest import single_ebm_tiny


@pytest.fixture
def toy_config(tiny_config_dict):
    return lambda name: config_from_dict(tiny_config_dict(**single_ebm_tiny(name)))


def test_data_space_langevin_gaussian_known_answer():
    """F = -|x - mu|^2 / (2 tau^2), noise sqrt(2h): ULA's law N(mu, tau^2 / (1 - h / (2 tau^2)))."""
    torch.manual_seed(0)
    n, mu, tau2, h = 40_000, 1.5, 0.5, 0.05
    grad = energy_grad_fn(lambda x: -(x - mu).pow(2).sum(1) / (2 * tau2))
    x = langevin(grad, torch.zeros(n, 1), 300, grad_scale=h, noise_std=math.sqrt(2 * h))
    var = tau2 / (1 - h / (2 * tau2))
    assert abs(x.mean().item() - mu) < 4 * math.sqrt(var / n)
    assert abs(x.var().item() / var - 1) < 0.03


def test_uniform_chain_start_from_normals():
    x = chain_start((50_000, 1), "uniform", 2.0, torch.device("cpu"),
                    torch.Generator().manual_seed(0))
    assert x.abs().max() < 2.0
    assert abs(x.mean().item()) < 0.02 and abs(x.var().item() / (4.0 / 3) - 1) < 0.02


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_sample_and_cli_generate(tmp_path, toy_config, name):
    cfg = toy_config(name)
    run = tmp_path / "run"
    train(cfg, run, max_iters=2, progress=False)
    _, method, _ = load_run(run)
    x, levels = method.sample(10, generator=torch.Generator().manual_seed(1),
                              return_levels=True)
    assert x.shape == (10, 2) and torch.isfinite(x).all() and len(levels) == 2
    assert torch.equal(levels[-1], x) and not torch.equal(levels[0], x)
    x_all, lv, meta = generate(run, 0, 6, None, seed=5)
    x_part, _, _ = generate(run, 3, 3, None, seed=5, batch_size=2)
    assert x_all.shape == (6, 2) and lv.shape == (2, 6, 2) and meta["method"] == name
    assert torch.equal(x_all[3:], x_part)  # image i depends only on (seed, i)
    out = tmp_path / "s.npz"
    assert cli_main(["sample", "--run-dir", str(run), "--num", "4", "--out", str(out),
                     "--steps", "2"]) == 0
    with np.load(out) as npz:
        assert npz["x"].shape == (4, 2) and np.isfinite(npz["x"]).all()


def test_replay_buffer_changes_and_is_restored(tmp_path, toy_config):
    cfg = toy_config("replay_buffer")
    method = METHODS["replay_buffer"](cfg, (2,), torch.device("cpu"))
    before = method.buffer.clone()
    method.train_step(torch.randn(64, 2))
    changed = (method.buffer != before).any(1)
    assert int(changed.sum()) == 64  # exactly the batch's slots were written back
    run = tmp_path / "run"
    train(cfg, run, max_iters=4, progress=False)
    saved = load_latest(run)["method"]["buffer"]
    _, restored, _ = load_run(run)
    assert torch.equal(restored.buffer, saved) and restored.buffer.shape == (256, 2)
    restored.train_step(torch.randn(64, 2))
    assert not torch.equal(restored.buffer, saved)
    assert torch.equal(load_latest(run)["method"]["buffer"], saved)  # checkpoint not aliased


def test_sampler_noise_argument_and_no_steps(toy_config):
    for name in METHOD_NAMES:
        method = METHODS[name](toy_config(name), (2,), torch.device("cpu"))
        start = torch.randn(5, 4 if name == "coopnets" else 2)
        x, levels = method.sample(5, steps=0, noise=start, return_levels=True)
        assert torch.equal(x, levels[0]) and x.shape == (5, 2)
        if name != "coopnets":
            assert torch.equal(x, start)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_digits_image_run(tmp_path, name):
    cfg = config_from_dict({
        "method": name, "seed": 0, "device": "cpu",
        "data": {"name": "digits16", "flip": False},
        "ebm": {"arch": "image", "width": 8, "ch_mult": [1, 2], "blocks_per_level": 1,
                "emb_in_dim": 16, "temb_dim": 32},
        "initializer": {"arch": "none"},
        "train": {"iterations": 2, "batch_size": 8, "log_every": 1, "ckpt_every": 2,
                  "langevin_steps": 2,
                  "ebm_optim": {"lr": 1e-4, "warmup_iters": 2}},
        "sample": {"langevin_steps": 2, "batch_size": 4},
        "baseline": {"buffer_size": 16, "latent_dim": 8,
                     "generator_width": 8}})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    x, lv, _ = generate(run, 0, 3, None, seed=1)
    assert x.shape == (3, 1, 16, 16) and lv.shape == (2, 3, 1, 16, 16)
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
