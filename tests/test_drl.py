"""DRL baseline: its numbers match spec 1.3 / 2.3 and its chain starts at the noisier sample.
Training, bit-exact resume and sampling: test_trainer.py::test_resume_is_bit_exact[drl]."""

import pytest
import torch

from cdrl.core.config import ConfigError, config_from_dict, load_config
from cdrl.train.registry import build_method
from tests.conftest import DRL_TINY, ROOT

EXPERIMENTS = ROOT / "workflow" / "config" / "experiments"


def test_drl_cifar10_config_matches_the_spec():
    cfg = load_config(EXPERIMENTS / "drl_cifar10.yaml")
    method = build_method(cfg, (3, 32, 32), torch.device("cpu"))
    s = method.schedule
    assert type(method).__name__ == "DRL" and method.initializer is None
    assert (cfg.train.langevin_steps, cfg.sample.langevin_steps) == (30, 30)
    assert cfg.sample.noise_scale == 0.99 and not cfg.sample.tweedie
    assert not cfg.train.variance_reduction and cfg.train.ebm_optim.ema_decay == 0.999
    assert cfg.train.ebm_optim.warmup_iters == 1000 and cfg.train.ebm_optim.grad_clip == 0
    # spec 1.3: sigma_cum per level, and 2.3: s^2 = 2e-4 * (sigma_cum[t] / sigma_cum[0]) sigma^2
    assert torch.allclose(s.sigma_bar, torch.tensor(
        [0.0100, 0.3238, 0.5862, 0.7785, 0.8980, 0.9603, 0.99998], dtype=torch.float64),
        atol=1e-4)
    c = s.sigma_bar[:-1] / s.sigma_bar[0]
    assert torch.allclose(method.coef["step_size_sq"].double(), 2e-4 * c * s.sigma**2, rtol=1e-5)
    assert torch.allclose(method.coef["weight"].double(), s.sigma[0] / s.sigma, rtol=1e-6)
    assert method.t_level.tolist() == [0, 1, 2, 3, 4, 5, 6]  # the integer level index


def test_drl_ebm_has_drl_blocks():
    cfg = load_config(EXPERIMENTS / "drl_cifar10.yaml")
    method = build_method(cfg, (3, 32, 32), torch.device("cpu"))
    assert sum(p.numel() for p in method.ebm.parameters()) == 34_833_408  # 34.83 M + head bias
    down = [m for m in method.ebm.modules() if getattr(m, "sn_mode", None) == "down"]
    assert len(down) == 32 and all(float(m.weight.detach().abs().max()) == 0.0
                                for m in down)


def test_drl_refuses_an_initializer():
    with pytest.raises(ConfigError, match="DRL has no initializer"):
        build_method(config_from_dict({"method": "drl", "ebm": {"arch": "toy_mlp"},
                                       "initializer": {"arch": "toy_mlp"}}),
                     (2,), torch.device("cpu"))


def test_drl_chain_starts_at_the_noisier_sample(tiny_config_dict):
    cfg = config_from_dict(tiny_config_dict(**DRL_TINY))
    method = build_method(cfg, (2,), torch.device("cpu"))
    x_i = torch.randn(5, 2)
    k = torch.zeros(5, dtype=torch.long)
    assert method.propose(method.initializer, x_i, k) is x_i
    assert torch.equal(method.refine(method.ebm, x_i, x_i, k, n_steps=0), x_i)


def test_published_numbers_have_sources():
    import csv

    rows = list(csv.DictReader(open(ROOT / "workflow" / "data" / "published.csv")))
    assert rows and all(r["source"] and r["paper"] and float(r["value"]) > 0 for r in rows)
    drl = {(r["metric"]): float(r["value"]) for r in rows
           if r["method"] == "DRL" and r["dataset"] == "cifar10"}
    assert drl == {"fid": 9.58, "is": 8.30}
