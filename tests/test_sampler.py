"""Known answers for the samplers and the positive pair (spec 2.4, 4)."""

import math

import torch
from torch import nn

from cdrl.core.config import config_from_dict
from cdrl.core.method import CDRL
from cdrl.core.sampler import energy_grad_fn, langevin


def ula_variance(v: float, h: float) -> float:
    """Stationary variance of unadjusted Langevin with step h on a Gaussian of variance v."""
    return v / (1 - h / (4 * v))


def test_langevin_recovers_gaussian_mean_and_variance():
    torch.manual_seed(0)
    n, mu, tau2, s2, sigma2 = 40_000, 1.5, 0.5, 0.05, 0.8
    x_cond = torch.full((n, 1), -1.0)
    # F / s^2 is the log-density of N(mu, tau2); the recovery term adds N(x_cond, sigma2).
    grad = energy_grad_fn(lambda y: -s2 * (y - mu).pow(2).sum(1) / (2 * tau2))
    y = langevin(grad, torch.zeros(n, 1), 300, grad_scale=0.5, noise_std=torch.tensor(s2).sqrt(),
                 pull=torch.tensor(s2 / (2 * sigma2)), anchor=x_cond)
    prec = 1 / tau2 + 1 / sigma2
    mean, var = (mu / tau2 - 1.0 / sigma2) / prec, 1 / prec
    expected_var = ula_variance(var, s2)
    assert abs(y.mean().item() - mean) < 4 * math.sqrt(expected_var / n)
    assert abs(y.var().item() / expected_var - 1) < 0.03


class GaussianEBM(nn.Module):
    """F(y, level) = -s_level^2 |y - mu|^2 / (2 tau2): an exact Gaussian marginal at each level."""

    def __init__(self, s2_per_level: torch.Tensor, mu: float, tau2: float) -> None:
        super().__init__()
        self.register_buffer("s2", s2_per_level.float())
        self.mu, self.tau2 = mu, tau2
        self.dummy = nn.Parameter(torch.zeros(()))

    def condition(self, t):
        return [self.s2[: len(t)]]

    def energy(self, y, cond):
        return -cond[0] * (y - self.mu).pow(2).sum(1) / (2 * self.tau2)


def test_method_refine_uses_per_level_step_sizes_and_top_step():
    """Through CDRL.refine: below the top step the recovery term pulls towards x_i, at the top
    step the chain samples the unconditional marginal (no pull)."""
    cfg = config_from_dict({"ebm": {"arch": "toy_mlp", "width": 8, "ch_mult": [1]},
                            "initializer": {"arch": "none"},
                            "schedule": {"b2": 2e-3, "c_mode": "constant"}})
    method = CDRL(cfg, (2,), torch.device("cpu"))
    s = method.schedule
    ebm = GaussianEBM(s.step_size_sq, mu=0.5, tau2=0.3)
    n = 20_000
    torch.manual_seed(1)
    for step in (1, 6):
        k = torch.full((n,), step - 1, dtype=torch.long)
        x_i = torch.full((n, 2), 2.0)
        y = method.refine(ebm, x_i.clone(), x_i, k, n_steps=400)
        s2 = float(s.step_size_sq[step - 1])
        if step == 6:  # unconditional: N(mu, tau2)
            mean, var = 0.5, 0.3
        else:
            prec = 1 / 0.3 + 1 / float(s.beta[step - 1])
            mean, var = (0.5 / 0.3 + 2.0 / float(s.beta[step - 1])) / prec, 1 / prec
        expected_var = ula_variance(var, s2)
        assert abs(y.mean().item() - mean) < 5 * math.sqrt(expected_var / (2 * n)), step
        assert abs(y.var().item() / expected_var - 1) < 0.05, step


def _pair_method(vr: bool) -> CDRL:
    cfg = config_from_dict({"ebm": {"arch": "toy_mlp", "width": 8, "ch_mult": [1]},
                            "initializer": {"arch": "none"},
                            "train": {"variance_reduction": vr}})
    return CDRL(cfg, (1,), torch.device("cpu"))


def test_variance_reduction_keeps_both_marginals_exact():
    torch.manual_seed(2)
    n = 200_000
    x0 = torch.full((n, 1), 0.7)
    for vr in (True, False):
        method = _pair_method(vr)
        sab, sb = method.schedule.alpha_bar.sqrt(), method.schedule.sigma_bar
        for step in range(1, 7):
            k = torch.full((n,), step - 1, dtype=torch.long)
            x_prev, x_i = method.positive_pair(x0, k)
            for x, lvl in ((x_prev, step - 1), (x_i, step)):
                m, sd = float(sab[lvl]) * 0.7, float(sb[lvl])
                assert abs(x.mean().item() - m) < 5 * sd / math.sqrt(n), (vr, step, lvl)
                assert abs(x.std().item() / sd - 1) < 0.01, (vr, step, lvl)


def test_variance_reduction_removes_posterior_variance():
    """With shared noise, x_{i-1} is a deterministic function of (x_0, x_i); without it, its
    conditional variance is DDPM's beta_tilde (spec 4)."""
    torch.manual_seed(3)
    n, step = 200_000, 3
    x0 = torch.zeros(n, 1)
    k = torch.full((n,), step - 1, dtype=torch.long)
    for vr in (True, False):
        method = _pair_method(vr)
        s = method.schedule
        x_prev, x_i = method.positive_pair(x0, k)
        # Residual of the linear regression of x_{i-1} on x_i (x_0 = 0 here).
        coef = (x_prev * x_i).mean() / (x_i * x_i).mean()
        resid_var = (x_prev - coef * x_i).var().item()
        if vr:
            assert resid_var < 1e-10
        else:
            assert abs(resid_var / float(s.beta_tilde[step - 1]) - 1) < 0.02


def test_hand_written_toy_gradient_matches_autograd():
    from cdrl.core.nets.layers import frozen_spectral_norm, power_iteration_
    from cdrl.core.nets.toy import ToyEBM

    torch.manual_seed(4)
    ebm = ToyEBM(width=32, ch_mult=(1, 2, 2), emb_in_dim=32, temb_dim=64)
    for _ in range(20):
        power_iteration_(ebm)
    for blk in ebm.blocks:
        blk.g.data.uniform_(0.5, 1.5)
    ebm.head.weight.data.normal_()
    y, t = torch.randn(300, 2) * 4, torch.rand(300) * 900
    with frozen_spectral_norm(ebm):
        cond = ebm.condition(t)
        ref = energy_grad_fn(lambda v: ebm.energy(v, cond))(y)
        got = ebm.langevin_grad(cond)(y)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_image_networks_train_and_sample_through_the_method():
    """The image EBM and U-Net (small CPU sizes) plug into the same training step and sampler,
    including the Tweedie step; a few updates change the weights and keep everything finite."""
    cfg = config_from_dict({
        "ebm": {"arch": "image", "width": 8, "ch_mult": [1, 2], "blocks_per_level": 1,
                "emb_in_dim": 16, "temb_dim": 32},
        "initializer": {"arch": "unet", "width": 8, "num_blocks": 1, "dim_mults": [1, 1],
                        "attn_resolutions": [4], "emb_in_dim": 16, "temb_dim": 32,
                        "groups": 4},
        "train": {"batch_size": 4, "langevin_steps": 2},
        "sample": {"langevin_steps": 2, "tweedie": True}})
    torch.manual_seed(5)
    method = CDRL(cfg, (1, 8, 8), torch.device("cpu"))
    before = [p.clone() for p in method.ebm.parameters()]
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    for _ in range(3):
        stats = method.train_step(x)
    assert torch.isfinite(stats["loss_ebm"]) and torch.isfinite(stats["loss_init"])
    assert any(not torch.equal(a, b) for a, b in zip(before, method.ebm.parameters(),
                                                     strict=True))
    out, levels = method.sample(3, generator=torch.Generator().manual_seed(0),
                                return_levels=True)
    assert out.shape == (3, 1, 8, 8) and len(levels) == 7 and torch.isfinite(out).all()
    assert not torch.equal(out, levels[-1])  # the Tweedie step moved the samples
