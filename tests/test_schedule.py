"""Schedules against the tables of spec 1.2 and 1.3 (to 1e-3), and the `cdrl schedule` CLI."""

import json
import math
import subprocess
import sys

import pytest
import torch

from cdrl.core.schedule import make_schedule

# spec 1.2, per level: logsnr, alpha_bar, sqrt(alpha_bar), sigma_bar
CDRL_LEVELS = [
    (9.800, 0.999945, 0.999972, 0.00745), (2.689, 0.93636, 0.96766, 0.2523),
    (1.197, 0.76797, 0.87634, 0.4817), (0.141, 0.53521, 0.73158, 0.6818),
    (-0.876, 0.29399, 0.54221, 0.8402), (-2.172, 0.10226, 0.31978, 0.9475),
    (-5.100, 0.006060, 0.07784, 0.99697),
]
# spec 1.2, per step: alpha, beta, sigma, beta_tilde, c, step size s, weight
CDRL_STEPS = [
    (0.93642, 0.06358, 0.2522, 5.54e-5, 1.00, 0.00504, 1.000),
    (0.82016, 0.17984, 0.4241, 0.04932, 33.88, 0.0494, 0.595),
    (0.69692, 0.30308, 0.5505, 0.15130, 64.69, 0.0886, 0.458),
    (0.54930, 0.45070, 0.6713, 0.29671, 91.56, 0.1285, 0.376),
    (0.34782, 0.65218, 0.8076, 0.51289, 112.84, 0.1716, 0.312),
    (0.05926, 0.94074, 0.9699, 0.84969, 127.24, 0.2188, 0.260),
]
# spec 1.3, per DRL level: per-step sigma, a_s_cum, sigma_cum, logsnr
DRL_LEVELS = [
    (0.0100, 0.99995, 0.0100, 9.21), (0.3237, 0.94612, 0.3238, 2.14),
    (0.5165, 0.81015, 0.5862, 0.65), (0.6322, 0.62770, 0.7785, -0.43),
    (0.7132, 0.43997, 0.8980, -1.43), (0.7734, 0.27892, 0.9603, -2.47),
    (0.99974, 0.00635, 0.99998, -10.12),
]


def close(value, expected, shown):
    """Within 1e-3 relative, plus half a unit of the last digit the spec prints."""
    return abs(value - expected) <= 1e-3 * abs(expected) + 0.5 * 10 ** (-shown)


def decimals(x: float) -> int:
    s = f"{x}"
    if "e" in s:
        mant, exp = s.split("e")
        return len(mant.split(".")[1]) - int(exp) if "." in mant else -int(exp)
    return len(s.split(".")[1]) if "." in s else 0


def test_cdrl_levels_match_spec():
    s = make_schedule("cdrl", 6)
    for i, (lam, ab, sab, sb) in enumerate(CDRL_LEVELS):
        got = (float(s.logsnr[i]), float(s.alpha_bar[i]), math.sqrt(s.alpha_bar[i]),
               float(s.sigma_bar[i]))
        for g, e in zip(got, (lam, ab, sab, sb), strict=True):
            assert close(g, e, decimals(e)), (i, g, e)


def test_cdrl_steps_match_spec():
    s = make_schedule("cdrl", 6)
    for k, row in enumerate(CDRL_STEPS):
        got = (float(s.alpha[k]), float(s.beta[k]), float(s.sigma[k]), float(s.beta_tilde[k]),
               float(s.c[k]), math.sqrt(s.step_size_sq[k]), float(s.weight[k]))
        for g, e in zip(got, row, strict=True):
            assert close(g, e, decimals(e)), (k + 1, g, e)
    assert s.b2 == 4e-4
    assert float(s.m[-1]) == 1.0 and torch.allclose(s.m[:-1], s.alpha[:-1])


def test_cdrl_schedule_constants():
    b = math.atan(math.exp(-9.8 / 2))
    a = math.atan(math.exp(5.1 / 2)) - b
    assert abs(a - 1.48543) < 1e-5 and abs(b - 0.0074464) < 1e-7


def test_drl_levels_match_spec():
    s = make_schedule("drl", 6)
    assert s.b2 == 2e-4
    for i, (sig, acum, scum, lam) in enumerate(DRL_LEVELS):
        got_sig = math.sqrt(1 - s.alpha_bar[0]) if i == 0 else float(s.sigma[i - 1])
        got = (got_sig, math.sqrt(s.alpha_bar[i]), float(s.sigma_bar[i]), float(s.logsnr[i]))
        for g, e in zip(got, (sig, acum, scum, lam), strict=True):
            assert close(g, e, decimals(e)), (i, g, e)


def test_drl_step_sizes_and_weights():
    s = make_schedule("drl", 6)
    c = s.sigma_bar[:-1] / s.sigma_bar[0]
    assert torch.allclose(s.step_size_sq, 2e-4 * c * s.sigma**2)
    assert torch.allclose(s.weight, s.sigma[0] / s.sigma)


def test_toy_constant_c():
    s = make_schedule("cdrl", 6, b2=2e-3, c_mode="constant")
    assert torch.allclose(s.c, torch.full((6,), 134.26, dtype=torch.float64), atol=0.05)
    assert torch.allclose(s.step_size_sq / s.beta, torch.full((6,), 0.2685,
                                                              dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("kind", ["cdrl", "drl"])
@pytest.mark.parametrize("levels", [1, 2, 3, 10, 50])
def test_any_number_of_levels(kind, levels):
    s = make_schedule(kind, levels)
    assert len(s.logsnr) == levels + 1 and len(s.alpha) == levels
    assert torch.all(s.logsnr[1:] < s.logsnr[:-1])
    assert torch.all((s.alpha > 0) & (s.alpha < 1)) and torch.all(s.beta_tilde >= 0)
    assert torch.allclose(torch.cumprod(s.alpha, 0) * s.alpha_bar[0], s.alpha_bar[1:])


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'ddpm'"):
        make_schedule("ddpm", 6)
    with pytest.raises(ValueError, match="levels"):
        make_schedule("cdrl", 0)


@pytest.mark.slow
def test_cli_json_and_table():
    out = subprocess.run([sys.executable, "-m", "cdrl", "schedule", "--kind", "drl", "--levels",
                          "6", "--json"], capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    for key in ("logsnr", "alpha_bar"):
        assert len(data[key]) == 7
    for key in ("alpha", "sigma", "beta_tilde", "step_size_sq", "weight"):
        assert len(data[key]) == 6
    assert abs(data["logsnr"][-1] - (-10.12)) < 5e-3
    table = subprocess.run([sys.executable, "-m", "cdrl", "schedule"], capture_output=True,
                           text=True, check=True).stdout
    assert "127.24" in table and "9.800" in table
