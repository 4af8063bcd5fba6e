"""Image networks: the CDRL/DRL energy model and the U-Net initializer (spec 7.1, 7.2, 7.3, 6.1).

``ImageEBM`` (spec 7.1) gives one scalar ``F(y, t[, c])`` per image. Its defaults are the CIFAR-10
paper config (34.83 M parameters; 35.35 M with ``num_classes=1001``). The DRL EBM of spec 7.3 is
the same layout with four switches: ``zero_init_conv2``, ``conv2_sn_mode="down"`` (DRL's zero-init
conv2 sits in a spectral norm that only scales weights down), ``temb_proj_act=False`` (DRL adds
``Dense(LReLU(temb))`` with no outer LReLU) and ``head_bias=True``. DRL's variance-scaling init is
not reproduced here.

The EBM is split into ``condition`` (all the noise-level and class work) and ``energy`` (the
convolutions), so a Langevin chain calls ``condition`` once and ``energy`` K times. The caller maps
the noise level to the scalar ``t`` first: ``logsnr_to_time(logsnr)`` (tau * 1000, spec 7.1) for
CDRL, or the integer level index as a float for DRL (spec 7.3).

``UNetInitializer`` (spec 7.2) predicts the y-space mean ``G(x, t[, c])`` as ``x`` plus a
zero-initialised output, so a fresh network is the identity. 3.77 M parameters for CIFAR-10,
3.18 M for conditional ImageNet 32 (``num_res_blocks=2, num_classes=1001``). Zero-initialised
layers (output conv, each res-block's second conv, attention output) have zero weight *and* bias;
the official code zeroes weights only, so its fresh network is the identity only up to the output
conv's bias. GroupNorm eps is 1e-6 and attention has a biased 1x1 qkv conv, as in that code.

Class conditioning (spec 6.1): ``labels`` index a one-hot over ``num_classes`` (label 0 is the null
class of classifier-free guidance; the caller shifts and drops labels).

Usage::

    ebm = ImageEBM()
    cond = ebm.condition(logsnr_to_time(logsnr))
    f = ebm.energy(y, cond)  # [B]; same as ebm(y, logsnr_to_time(logsnr))
    mean = UNetInitializer()(x, logsnr_to_time(logsnr))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cdrl.core.nets.layers import SNConv2d, SNLinear, gather_rows, sinusoidal_embedding

__all__ = ["Cond", "ImageEBM", "UNetInitializer"]

# Per-block embedding biases ([B, C_i] each, in block order), then the head vector [B, C_last].
Cond = tuple[torch.Tensor, ...]


def _add_class_embedding(
    temb: torch.Tensor, labels: torch.Tensor | None, num_classes: int, class_map: nn.Module | None
) -> torch.Tensor:
    """Add ``Linear(one_hot(labels))`` to ``temb`` (spec 7.1 / 7.2 class conditioning)."""
    if class_map is None:
        if labels is not None:
            raise ValueError("labels were given to an unconditional network (num_classes=0)")
        return temb
    if labels is None:
        raise ValueError(
            f"labels are required: the network is conditional "
            f"(num_classes={num_classes}); pass the null label 0 for no class"
        )
    return temb + class_map(F.one_hot(labels.long(), num_classes).to(temb.dtype))


def _zero_(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias in place, so that it outputs exactly 0 at init."""
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


# ----------------------------------------------------------------------------------------------
# EBM (spec 7.1, 7.3)


class _EBMBlock(nn.Module):
    """Residual block: LReLU -> conv -> + bias(temb) -> LReLU -> conv -> * g, plus skip."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        temb_dim: int,
        leak: float,
        sn: bool,
        sn_mode: str,
        conv2_sn_mode: str,
        zero_init_conv2: bool,
        temb_proj_act: bool,
    ) -> None:
        super().__init__()
        self.leak = leak
        self.temb_proj_act = temb_proj_act
        self.conv1 = SNConv2d(in_ch, out_ch, 3, padding=1, sn=sn, sn_mode=sn_mode)
        self.temb_proj = SNLinear(temb_dim, out_ch, sn=sn, sn_mode=sn_mode)
        self.conv2 = SNConv2d(out_ch, out_ch, 3, padding=1, sn=sn, sn_mode=conv2_sn_mode)
        if zero_init_conv2:
            _zero_(self.conv2)
        self.g = nn.Parameter(torch.ones(out_ch))
        self.skip = (
            SNConv2d(in_ch, out_ch, 3, padding=1, sn=sn, sn_mode=sn_mode)
            if in_ch != out_ch
            else nn.Identity()
        )

    def embed(self, act_temb: torch.Tensor) -> torch.Tensor:
        """Per-channel bias from ``LReLU(temb)`` (CDRL adds an outer LReLU, DRL does not)."""
        bias = self.temb_proj(act_temb)
        return F.leaky_relu(bias, self.leak) if self.temb_proj_act else bias

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(x, self.leak)) + bias[:, :, None, None]
        h = self.conv2(F.leaky_relu(h, self.leak)) * self.g[None, :, None, None]
        return self.skip(x) + h


class ImageEBM(nn.Module):
    """CDRL energy network ``F(y, t[, c]) -> [B]`` (spec 7.1); DRL's via the switches (7.3).

    Levels of ``blocks_per_level`` residual blocks with ``ch * ch_mult[i]`` channels, 2x2 average
    pooling between levels; the channel count changes in the first block of a level. Spectral
    norm on every conv and linear except the output projection ``head``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ch: int = 128,
        ch_mult: tuple[int, ...] = (1, 2, 2, 2),
        blocks_per_level: int = 8,
        temb_dim: int = 512,
        emb_in_dim: int = 128,
        spectral_norm: bool = True,
        sn_mode: str = "full",
        num_classes: int = 0,
        leak: float = 0.2,
        zero_init_conv2: bool = False,
        head_bias: bool = False,
        conv2_sn_mode: str | None = None,
        temb_proj_act: bool = True,
    ) -> None:
        super().__init__()
        if not ch_mult or blocks_per_level < 1:
            raise ValueError(
                f"need at least one level and one block per level, got "
                f"ch_mult={ch_mult!r}, blocks_per_level={blocks_per_level}"
            )
        conv2_sn_mode = conv2_sn_mode or sn_mode
        if zero_init_conv2 and spectral_norm and conv2_sn_mode == "full":
            # W / sigma with W = 0 gives 0 / 0 = NaN; DRL uses the scale-down-only norm here.
            raise ValueError(
                "zero_init_conv2 needs conv2_sn_mode='down' (or spectral_norm=False)"
                f", got conv2_sn_mode={conv2_sn_mode!r}"
            )
        self.leak = leak
        self.emb_in_dim = emb_in_dim
        self.num_classes = num_classes
        sn = dict(sn=spectral_norm, sn_mode=sn_mode)
        self.temb_map1 = SNLinear(emb_in_dim, temb_dim, **sn)
        self.temb_map2 = SNLinear(temb_dim, temb_dim, **sn)
        self.class_map = SNLinear(num_classes, temb_dim, **sn) if num_classes > 0 else None
        self.conv_in = SNConv2d(in_channels, ch, 3, padding=1, **sn)
        self.levels = nn.ModuleList()
        block_kw = dict(
            temb_dim=temb_dim,
            leak=leak,
            sn=spectral_norm,
            sn_mode=sn_mode,
            conv2_sn_mode=conv2_sn_mode,
            zero_init_conv2=zero_init_conv2,
            temb_proj_act=temb_proj_act,
        )
        in_ch = ch
        for mult in ch_mult:
            blocks = []
            for _ in range(blocks_per_level):
                blocks.append(_EBMBlock(in_ch, ch * mult, **block_kw))
                in_ch = ch * mult
            self.levels.append(nn.ModuleList(blocks))
        # Spec 7.1: the output projection ("temb_final") is the one layer without spectral norm.
        self.head = nn.Linear(temb_dim, in_ch, bias=head_bias)

    def _blocks(self) -> list[_EBMBlock]:
        return [block for level in self.levels for block in level]

    def condition(self, t: torch.Tensor, labels: torch.Tensor | None = None) -> Cond:
        """All embedding work for noise level ``t`` [B] (already mapped) and optional labels."""
        temb = self.temb_map2(
            F.leaky_relu(self.temb_map1(sinusoidal_embedding(t, self.emb_in_dim)), self.leak)
        )
        temb = _add_class_embedding(temb, labels, self.num_classes, self.class_map)
        act_temb = F.leaky_relu(temb, self.leak)
        return tuple(block.embed(act_temb) for block in self._blocks()) + (self.head(act_temb),)

    def energy(self, y: torch.Tensor, cond: Cond) -> torch.Tensor:
        """Scalar ``F`` per image for images ``y`` [B, C, H, W] under a precomputed ``cond``."""
        biases = iter(cond[:-1])
        h = self.conv_in(y)
        for i, level in enumerate(self.levels):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for block in level:
                h = block(h, next(biases))
        h = F.relu(h).sum(dim=(2, 3))
        return (h * cond[-1]).sum(dim=1)

    def forward(
        self, y: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.energy(y, self.condition(t, labels))

    @staticmethod
    def select_cond(cond: Cond, index: torch.Tensor) -> Cond:
        """Rows ``index`` of every tensor in ``cond`` (all have the batch as dim 0)."""
        return tuple(gather_rows(cond, index))


# ----------------------------------------------------------------------------------------------
# Initializer U-Net (spec 7.2)


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``min(groups, channels)`` groups; eps 1e-6 as in the official U-Net."""
    n = min(groups, channels)
    if n < 1 or channels % n != 0:
        raise ValueError(
            f"GroupNorm: groups={groups} gives {n} groups, which must be >= 1 and "
            f"divide channels={channels}"
        )
    return nn.GroupNorm(n, channels, eps=1e-6)


class _UNetBlock(nn.Module):
    """Res-block: GN -> SiLU -> [resample] -> conv -> GN -> FiLM -> SiLU -> dropout -> zero conv.

    Down/up sampling (2x2 average pool / nearest x2) is applied to both the activations and the
    skip input right after the first SiLU, so both convs run at the new resolution.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        temb_dim: int,
        dropout: float,
        groups: int,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _group_norm(out_ch, groups)
        self.film = nn.Linear(temb_dim, 2 * out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self._resample(F.silu(self.norm1(x)))
        x = self._resample(x)
        h = self.conv1(h)
        scale, shift = self.film(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1.0 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Self-attention over pixels: GN -> 1x1 qkv -> softmax(q k / sqrt(d)) v -> zero 1x1, + x."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if heads < 1 or channels % heads != 0:
            raise ValueError(f"attn_heads={heads} must divide channels={channels}")
        self.heads = heads
        self.norm = _group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, height * width)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each [B, heads, HW, d]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, height, width))


class _Stage(nn.Module):
    """One entry of a U-Net path: a res-block, then self-attention where enabled."""

    def __init__(self, block: _UNetBlock, attn: _Attention | None) -> None:
        super().__init__()
        self.block = block
        self.attn = attn if attn is not None else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.block(x, temb))


class UNetInitializer(nn.Module):
    """Initializer ``G(x, t[, c]) = x + UNet(x, t, c)`` (spec 7.2), identity when fresh.

    Skips: the input conv's output and the output of every down-path stage (the downsampling
    ones included) are stored; each non-upsampling up-path res-block concatenates the latest.
    """

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 64,
        dim_mults: tuple[int, ...] = (1, 1, 1),
        num_res_blocks: int = 3,
        attn_resolutions: tuple[int, ...] = (16, 8),
        image_size: int = 32,
        dropout: float = 0.1,
        groups: int = 32,
        attn_heads: int = 1,
        emb_in_dim: int = 64,
        temb_dim: int = 256,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if not dim_mults or image_size % 2 ** (len(dim_mults) - 1) != 0:
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**(levels - 1) "
                f"for dim_mults={dim_mults!r}"
            )
        self.image_size = image_size
        self.emb_in_dim = emb_in_dim
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_in_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim)
        )
        self.class_map = nn.Linear(num_classes, temb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, dim, 3, padding=1)

        def stage(cin, cout, res, resample=None, attn=None):
            block = _UNetBlock(cin, cout, temb_dim, dropout, groups, resample)
            use_attn = res in attn_resolutions if attn is None else attn
            return _Stage(block, _Attention(cout, attn_heads, groups) if use_attn else None)

        chans = [dim * m for m in dim_mults]
        skip_chans, ch, res = [dim], dim, image_size
        self.down = nn.ModuleList()
        for level, out_ch in enumerate(chans):
            for _ in range(num_res_blocks):
                self.down.append(stage(ch, out_ch, res))
                ch = out_ch
                skip_chans.append(ch)
            if level < len(chans) - 1:
                self.down.append(stage(ch, ch, res, resample="down", attn=False))
                res //= 2
                skip_chans.append(ch)
        self.mid = nn.ModuleList([stage(ch, ch, res, attn=True), stage(ch, ch, res, attn=False)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(ch + skip_chans.pop(), chans[level], res))
                ch = chans[level]
            if level > 0:
                self.up.append(stage(ch, ch, res, resample="up", attn=False))
                res *= 2
        self.norm_out = _group_norm(ch, groups)
        self.conv_out = _zero_(nn.Conv2d(ch, in_channels, 3, padding=1))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean for images ``x`` [B, C, H, W] at noise level ``t`` [B] (already mapped)."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            # Attention placement is fixed by resolution at construction.
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}"
            )
        temb = self.time_mlp(sinusoidal_embedding(t, self.emb_in_dim))
        temb = _add_class_embedding(temb, labels, self.num_classes, self.class_map)
        h = self.conv_in(x)
        skips = [h]
        for st in self.down:
            h = st(h, temb)
            skips.append(h)
        for st in self.mid:
            h = st(h, temb)
        for st in self.up:
            if st.block.resample != "up":
                h = torch.cat([h, skips.pop()], dim=1)
            h = st(h, temb)
        return x + self.conv_out(F.silu(self.norm_out(h)))
