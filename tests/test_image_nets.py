"""Tests for cdrl/nets/image.py: parameter counts against spec 7.1-7.3, shapes, the EBM's
condition/energy split, spectral norm, class conditioning, and the U-Net's identity at init.

Run: .venv/bin/python -m pytest tests/test_image_nets.py -q
"""

from __future__ import annotations

import pytest
import torch

from cdrl.core.nets.image import ImageEBM, UNetInitializer
from cdrl.core.nets.layers import SNConv2d, SNLinear, power_iteration_

SMALL_EBM = dict(
    in_channels=1, ch=16, ch_mult=(1, 2), blocks_per_level=1, temb_dim=32, emb_in_dim=16
)
SMALL_UNET = dict(
    in_channels=1,
    dim=16,
    dim_mults=(1, 2),
    num_res_blocks=1,
    groups=8,
    attn_resolutions=(8,),
    image_size=16,
    emb_in_dim=16,
    temb_dim=32,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_(module: torch.nn.Module) -> None:
    """Overwrite every parameter with noise, so that zero-initialised layers stop hiding paths."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.1)


# ---------------------------------------------------------------------------------------------
# Parameter counts (spec 7.1, 7.2, 7.3): exact values counted from the layer lists.


@pytest.fixture(scope="module")
def cifar_ebm() -> ImageEBM:
    torch.manual_seed(0)
    return ImageEBM()


def test_ebm_param_count_cifar(cifar_ebm):
    assert n_params(cifar_ebm) == 34_833_152  # 34.83 M
    assert round(n_params(cifar_ebm) / 1e6, 2) == 34.83


def test_ebm_param_count_imagenet_conditional():
    count = n_params(ImageEBM(num_classes=1001))
    assert count == 34_833_152 + 1001 * 512 + 512  # SN-Linear(1001 -> 512)
    assert round(count / 1e6, 2) == 35.35


def test_drl_ebm_param_count():
    drl = ImageEBM(zero_init_conv2=True, conv2_sn_mode="down", head_bias=True, temb_proj_act=False)
    assert round(n_params(drl) / 1e6, 2) == 34.83  # spec 7.3; head bias adds 256


@pytest.mark.parametrize(
    ("kwargs", "expected", "millions"),
    [
        ({}, 3_769_795, 3.77),
        (dict(num_res_blocks=2, num_classes=1001), 3_181_443, 3.18),
    ],
)
def test_unet_param_counts(kwargs, expected, millions):
    count = n_params(UNetInitializer(**kwargs))
    assert count == expected
    assert round(count / 1e6, 2) == millions


def test_full_size_ebm_forward(cifar_ebm):
    y = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = cifar_ebm(y, torch.tensor([5.0, 900.0]))
    assert f.shape == (2,) and torch.isfinite(f).all()


# ---------------------------------------------------------------------------------------------
# EBM behaviour at the CPU size.


@pytest.fixture
def small_ebm() -> ImageEBM:
    torch.manual_seed(0)
    return ImageEBM(**SMALL_EBM).eval()


def test_ebm_condition_layout(small_ebm):
    cond = small_ebm.condition(torch.tensor([1.0, 2.0, 3.0]))
    # One bias per block (16 then 32 channels), then the head vector.
    assert [tuple(c.shape) for c in cond] == [(3, 16), (3, 32), (3, 32)]


def test_energy_matches_forward_and_select_cond(small_ebm):
    y, t = torch.randn(4, 1, 16, 16), torch.tensor([3.0, 250.0, 500.0, 990.0])
    f = small_ebm(y, t)
    assert f.shape == (4,)
    cond = small_ebm.condition(t)
    torch.testing.assert_close(small_ebm.energy(y, cond), f)
    index = torch.tensor([2, 0])
    sub = ImageEBM.select_cond(cond, index)
    torch.testing.assert_close(small_ebm.energy(y[index], sub), f[index])
    # Rows can be stacked, e.g. to run two levels' chains in one batch.
    both = tuple(torch.cat([a, b]) for a, b in zip(sub, sub, strict=True))
    torch.testing.assert_close(
        small_ebm.energy(torch.cat([y[index]] * 2), both), torch.cat([f[index]] * 2)
    )


def test_ebm_noise_level_changes_energy(small_ebm):
    y = torch.randn(1, 1, 16, 16).expand(2, -1, -1, -1)
    f = small_ebm(y, torch.tensor([10.0, 800.0]))
    assert not torch.allclose(f[0], f[1])


def test_ebm_input_gradient_and_backward(small_ebm):
    small_ebm.train()
    y = torch.randn(3, 1, 16, 16, requires_grad=True)
    f = small_ebm(y, torch.tensor([1.0, 2.0, 3.0]))
    (grad,) = torch.autograd.grad(f.sum(), y, create_graph=True)
    assert grad.shape == y.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    grad.pow(2).sum().backward()  # second order, as a score-matching style loss would need
    for name, p in small_ebm.named_parameters():
        assert p.grad is not None, name


def test_spectral_norm_on_every_layer_but_the_head(small_ebm):
    sn_layers = [m for m in small_ebm.modules() if isinstance(m, (SNConv2d, SNLinear))]
    # conv_in, temb_map1/2, and per block conv1, temb_proj, conv2 (+ skip in block 2).
    assert len(sn_layers) == 3 + 3 + 4
    assert all(m.sn_enabled and m.sn_mode == "full" for m in sn_layers)
    assert not isinstance(small_ebm.head, (SNConv2d, SNLinear))
    for _ in range(500):
        power_iteration_(small_ebm)
    small_ebm.eval()
    for m in sn_layers:
        w = m.normalized_weight().reshape(m.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_spectral_norm_off():
    ebm = ImageEBM(**SMALL_EBM, spectral_norm=False)
    assert all(not m.sn_enabled for m in ebm.modules() if isinstance(m, (SNConv2d, SNLinear)))
    assert not any("sn_u" in name for name, _ in ebm.named_buffers())


def test_class_conditioning_changes_energy():
    torch.manual_seed(0)
    ebm = ImageEBM(**SMALL_EBM, num_classes=11).eval()
    y = torch.randn(1, 1, 16, 16).expand(2, -1, -1, -1)
    t = torch.tensor([100.0, 100.0])
    f = ebm(y, t, torch.tensor([0, 7]))
    assert not torch.allclose(f[0], f[1])
    with pytest.raises(ValueError, match="num_classes=11"):
        ebm(y, t)
    with pytest.raises(ValueError, match="unconditional"):
        ImageEBM(**SMALL_EBM)(y, t, torch.tensor([0, 7]))


def test_drl_switches():
    torch.manual_seed(0)
    drl = ImageEBM(
        **SMALL_EBM, zero_init_conv2=True, conv2_sn_mode="down", head_bias=True, temb_proj_act=False
    ).eval()
    assert drl.head.bias is not None
    for block in drl._blocks():
        assert block.conv2.sn_mode == "down" and block.conv1.sn_mode == "full"
        assert block.conv2.weight.abs().sum() == 0 and block.conv2.bias.abs().sum() == 0
    assert torch.isfinite(drl(torch.randn(2, 1, 16, 16), torch.tensor([0.0, 5.0]))).all()
    # A zero weight under the full norm would be 0 / 0.
    with pytest.raises(ValueError, match="conv2_sn_mode='full'"):
        ImageEBM(**SMALL_EBM, zero_init_conv2=True)


# ---------------------------------------------------------------------------------------------
# U-Net initializer.


@pytest.fixture
def small_unet() -> UNetInitializer:
    torch.manual_seed(0)
    return UNetInitializer(**SMALL_UNET)


def test_fresh_unet_is_identity(small_unet):
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(small_unet(x, torch.tensor([3.0, 700.0])), x)


def test_unet_layout(small_unet):
    # Down: 1 block @16, downsampler, 1 block+attn @8; up: 2 blocks+attn @8, upsampler, 2 @16.
    assert [type(s.attn).__name__ for s in small_unet.down] == ["Identity"] * 2 + ["_Attention"]
    assert [s.block.resample for s in small_unet.up] == [None, None, "up", None, None]
    assert [type(s.attn).__name__ for s in small_unet.up[:2]] == ["_Attention"] * 2
    assert small_unet.up[0].block.conv1.in_channels == 64  # 32 + 32 skip


def test_unet_forward_backward_after_training_noise(small_unet):
    randomize_(small_unet)
    x = torch.randn(3, 1, 16, 16, requires_grad=True)
    out = small_unet(x, torch.tensor([3.0, 300.0, 900.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    out.pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in small_unet.named_parameters():
        assert p.grad is not None, name


def test_unet_dropout_only_in_train_mode(small_unet):
    randomize_(small_unet)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1.0, 2.0])
    small_unet.eval()
    torch.testing.assert_close(small_unet(x, t), small_unet(x, t))
    small_unet.train()
    assert not torch.allclose(small_unet(x, t), small_unet(x, t))


def test_unet_class_conditioning():
    torch.manual_seed(0)
    unet = UNetInitializer(**SMALL_UNET, num_classes=11).eval()
    randomize_(unet)
    x = torch.randn(1, 1, 16, 16).expand(2, -1, -1, -1)
    out = unet(x, torch.tensor([50.0, 50.0]), torch.tensor([0, 3]))
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="labels are required"):
        unet(x, torch.tensor([50.0, 50.0]))


def test_unet_bad_groups_and_size():
    with pytest.raises(ValueError, match="channels=12"):
        UNetInitializer(**{**SMALL_UNET, "dim": 12})  # 8 groups do not divide 12
    with pytest.raises(ValueError, match="attn_heads=3"):
        UNetInitializer(**{**SMALL_UNET, "attn_heads": 3})
    unet = UNetInitializer(**SMALL_UNET)
    with pytest.raises(ValueError, match="16x16"):
        unet(torch.randn(1, 1, 32, 32), torch.tensor([1.0]))


def test_unet_groups_capped_by_channels():
    # min(groups, channels): 32 groups on 8 channels become 8 groups (16 on the 16-channel concat).
    unet = UNetInitializer(**{**SMALL_UNET, "dim": 8, "dim_mults": (1, 1), "groups": 32})
    assert unet.norm_out.num_groups == 8
    assert unet.up[0].block.norm1.num_groups == 16
