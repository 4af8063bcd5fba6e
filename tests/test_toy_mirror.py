"""The 2-D toy against the official ``toy_example.py``: the checkerboard's filled cells and the
initializer's layers (``initializer.toy_variant``).

    .venv/bin/python -m pytest -q tests/test_toy_mirror.py

The official data are 8 axis-aligned squares given as (x from, x to, y from, y to) in units of the
board scale 4, one of them with its y interval written high-to-low; a point is drawn uniformly in
a square picked uniformly. Restated here as the set of lower-left corners, independently of
``cdrl.data.toy``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cdrl.core.config import ConfigError, config_from_dict, load_config
from cdrl.core.nets import build_initializer
from cdrl.core.nets.toy import ToyInitializer
from cdrl.data.toy import in_checkerboard, make_toy
from cdrl.eval.metrics2d import support_fraction
from tests.conftest import ROOT

SCALE = 4.0
# Lower-left corners, in board units, of the official squares (read from toy_example.py).
OFFICIAL_CORNERS = {(1, 0), (0, 1), (0, -1), (1, -2), (-1, -2), (-2, -1), (-1, 0), (-2, 1)}


def in_official_squares(x: torch.Tensor) -> torch.Tensor:
    """Whether each point lies in one of the official squares (open boxes: edges excluded)."""
    hits = torch.zeros(len(x), dtype=torch.bool)
    for cx, cy in OFFICIAL_CORNERS:
        lo = torch.tensor([cx, cy]) * SCALE
        hits |= ((x > lo) & (x < lo + SCALE)).all(dim=1)
    return hits


def test_official_squares_are_a_checkerboard():
    assert len(OFFICIAL_CORNERS) == 8
    assert all((cx + cy) % 2 == 1 for cx, cy in OFFICIAL_CORNERS)  # one colour of a 4x4 board
    assert all(-2 <= c <= 1 for corner in OFFICIAL_CORNERS for c in corner)


def test_membership_equals_the_official_definition_on_a_grid():
    # 241 x 241 points over [-9, 9]^2, shifted off the cell edges (where the open boxes and
    # floor() legitimately disagree) but including points outside the board.
    ticks = torch.linspace(-9.0, 9.0, 241) + 0.013
    grid = torch.cartesian_prod(ticks, ticks)
    assert torch.equal(in_checkerboard(grid, SCALE), in_official_squares(grid))
    inside = in_official_squares(grid)
    assert 0.15 < inside.float().mean() < 0.45  # a real mix of both answers


def test_samples_fill_exactly_the_official_cells_evenly():
    data = make_toy("checkerboard", 40_000, SCALE, seed=0).points
    assert in_official_squares(data).all() and support_fraction(data, SCALE) == 1.0
    cells = torch.floor(data / SCALE).long()
    counts = {c: int(((cells[:, 0] == c[0]) & (cells[:, 1] == c[1])).sum())
              for c in OFFICIAL_CORNERS}
    assert sum(counts.values()) == len(data)
    assert all(abs(n / len(data) - 1 / 8) < 0.01 for n in counts.values())
    # Moved one cell right, the points land in the other colour: none in the support.
    shifted = data + torch.tensor([SCALE, 0.0])  # one cell right: the other colour
    shifted = shifted[(shifted[:, 0] < 2 * SCALE)]
    assert support_fraction(shifted, SCALE) == 0.0


def _official_param_shapes(h: int = 64, t: int = 128) -> list[tuple[int, ...]]:
    """Parameter shapes of the official toy initializer (width h, time width t, one block)."""
    return sorted([(h, 2), (h,),                     # input Linear(2 -> h)
                   (t, t), (t,), (t, t), (t,),       # time MLP t -> t -> t
                   (2, h),                           # output Linear(h -> 2), no bias
                   (h,), (h,), (h,), (h,),           # two GroupNorms (weight, bias)
                   (h, h), (h,), (h, h), (h,),       # the block's two Linears
                   (2 * h, t), (2 * h,)])            # FiLM: Linear(t -> 2h)


def test_official_initializer_head_and_zero_init():
    torch.manual_seed(0)
    net = ToyInitializer(width=64, num_blocks=1, emb_in_dim=128, temb_dim=128, groups=32,
                         variant="official")
    assert sorted(tuple(p.shape) for p in net.parameters()) == _official_param_shapes()
    assert isinstance(net.norm_out, nn.Identity)
    assert net.fc_out.bias is None and (net.fc_out.in_features, net.fc_out.out_features) == (64, 2)
    assert torch.count_nonzero(net.fc_out.weight) == 0
    block = net.blocks[0]
    assert block.norm1.eps == block.norm2.eps == 1e-6
    assert torch.count_nonzero(block.fc2.weight) == 0 and torch.count_nonzero(block.fc2.bias) > 0
    x, t = torch.randn(50, 2), torch.rand(50) * 1000
    assert torch.equal(net(x, t), x)  # a fresh initializer returns its input

    # The head is SiLU -> Linear on the last block's output, nothing in between.
    nn.init.normal_(net.fc_out.weight)
    seen = {}
    block.register_forward_hook(lambda m, i, out: seen.setdefault("h", out))
    out = net(x, t)
    torch.testing.assert_close(out, x + torch.nn.functional.silu(seen["h"]) @ net.fc_out.weight.T)


def test_norm_bias_initializer_is_unchanged_by_default():
    net = ToyInitializer(width=64, groups=32)
    assert net.variant == "norm_bias" and isinstance(net.norm_out, nn.GroupNorm)
    assert net.fc_out.bias is not None and torch.count_nonzero(net.fc_out.bias) == 0
    assert net.blocks[0].norm1.eps == 1e-5 and torch.count_nonzero(net.blocks[0].fc2.bias) == 0
    with pytest.raises(ValueError, match="variant"):
        ToyInitializer(variant="other")


def test_toy_official_preset_builds_the_official_initializer():
    cfg = load_config(ROOT / "workflow/config/experiments/toy_official.yaml")
    assert cfg.initializer.toy_variant == "official" and cfg.data.name == "checkerboard"
    net = build_initializer(cfg.initializer, (2,))
    assert net.variant == "official" and net.fc_out.bias is None
    assert sorted(tuple(p.shape) for p in net.parameters()) == _official_param_shapes()


def test_toy_variant_is_validated(tiny_config_dict):
    with pytest.raises(ConfigError, match="initializer.toy_variant"):
        config_from_dict(tiny_config_dict(initializer={"toy_variant": "paper"}))
    with pytest.raises(ConfigError, match="needs initializer.arch toy_mlp"):
        config_from_dict(tiny_config_dict(initializer={"arch": "unet", "toy_variant": "official",
                                                       "dropout": 0.0}))
    with pytest.raises(ConfigError, match="no dropout"):
        config_from_dict(tiny_config_dict(initializer={"toy_variant": "official",
                                                       "dropout": 0.1}))
    cfg = config_from_dict(tiny_config_dict(initializer={"toy_variant": "official",
                                                         "dropout": 0.0}))
    assert build_initializer(cfg.initializer, (2,)).fc_out.bias is None
