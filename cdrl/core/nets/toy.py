"""MLP networks of the official 2-D toy example (spec 11).

``ToyEBM`` is the image EBM of spec 7.1 with linear layers instead of convolutions: input
``Linear(2 -> width)``, residual blocks whose widths follow ``ch_mult`` (one block per level by
default), a 128-d sinusoidal embedding through ``Linear(128 -> 512) -> LReLU -> Linear(512 -> 512)``,
spectral norm everywhere but the head, and a final ``ReLU -> Linear(C -> 1, no bias)``.

``ToyInitializer`` is a one-block MLP version of the U-Net of spec 7.2: ``Linear(2 -> 64)``, FiLM
residual blocks (GroupNorm, SiLU, zero-initialised second layer), a zero-initialised output layer
plus the input, and a time MLP ``128 -> 128 -> 128``. A fresh initializer returns its input.
``variant`` picks between two versions of it:

- ``official``: the official ``toy_example.py`` initializer layer for layer. GroupNorm eps 1e-6;
  each block's second Linear has zero weight and PyTorch's default (random) bias; the output is
  ``SiLU -> Linear(64 -> 2, bias=False)`` with zero weight, applied to the last block's output
  directly (no normalisation).
- ``norm_bias`` (the default, kept so earlier runs and checkpoints stay valid): GroupNorm eps
  1e-5; each block's second Linear has zero weight and zero bias; the output is
  ``GroupNorm -> SiLU -> Linear(64 -> 2)`` with zero weight and bias, as at the end of the image
  U-Net (spec 7.2).

Both networks take ``t``, a per-sample float that the method computes from the noise level
(``tau * 1000`` of the logSNR for CDRL, the integer level index for DRL). With ``num_classes > 0``
they also take ``labels`` (0 = the null label of classifier-free guidance), added to the time
embedding through ``Linear(one_hot(labels))`` as in the image networks (spec 7.1, 7.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cdrl.core.nets.layers import SNLinear, fast_linear, sinusoidal_embedding

__all__ = ["TOY_INITIALIZER_VARIANTS", "ToyEBM", "ToyInitializer"]


def _class_embedding(temb: torch.Tensor, labels: torch.Tensor | None, class_map) -> torch.Tensor:
    if class_map is None:
        if labels is not None:
            raise ValueError("labels were given to an unconditional network (num_classes=0)")
        return temb
    if labels is None:
        raise ValueError("labels are required by a conditional network; 0 is the null label")
    return temb + class_map(F.one_hot(labels.long(), class_map.in_features).to(temb.dtype))


class _ToyEBMBlock(nn.Module):
    """LReLU -> Linear -> + embedding bias -> LReLU -> Linear -> * g, plus the skip."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, sn: bool, sn_mode: str,
                 leak: float) -> None:
        super().__init__()
        self.leak = leak
        self.fc1 = SNLinear(c_in, c_out, sn=sn, sn_mode=sn_mode)
        self.fc2 = SNLinear(c_out, c_out, sn=sn, sn_mode=sn_mode)
        self.temb_proj = SNLinear(temb_dim, c_out, sn=sn, sn_mode=sn_mode)
        self.g = nn.Parameter(torch.ones(c_out))
        self.skip = SNLinear(c_in, c_out, sn=sn, sn_mode=sn_mode) if c_in != c_out else None

    def embed(self, temb_act: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.temb_proj(temb_act), self.leak)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        out = self.fc1(F.leaky_relu(h, self.leak)) + bias
        out = self.fc2(F.leaky_relu(out, self.leak)) * self.g
        return out + (h if self.skip is None else self.skip(h))


class ToyEBM(nn.Module):
    """Scalar energy network ``F(y, t)`` for 2-D data (spec 11)."""

    def __init__(self, data_dim: int = 2, width: int = 128, ch_mult: tuple = (1, 2, 2, 2),
                 blocks_per_level: int = 1, emb_in_dim: int = 128, temb_dim: int = 512,
                 spectral_norm: bool = True, sn_mode: str = "full", leak: float = 0.2,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.emb_in_dim = emb_in_dim
        self.leak = leak
        self.num_classes = num_classes
        sn = dict(sn=spectral_norm, sn_mode=sn_mode)
        self.temb1 = SNLinear(emb_in_dim, temb_dim, **sn)
        self.temb2 = SNLinear(temb_dim, temb_dim, **sn)
        self.class_map = SNLinear(num_classes, temb_dim, **sn) if num_classes > 0 else None
        self.fc_in = SNLinear(data_dim, width, **sn)
        blocks, c_in = [], width
        for mult in ch_mult:
            for _ in range(blocks_per_level):
                blocks.append(_ToyEBMBlock(c_in, width * mult, temb_dim, spectral_norm,
                                           sn_mode, leak))
                c_in = width * mult
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c_in, 1, bias=False)

    def condition(self, t: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Everything that depends on the noise level (and label) only: one bias per block."""
        temb = sinusoidal_embedding(t, self.emb_in_dim)
        temb = self.temb2(F.leaky_relu(self.temb1(temb), self.leak))
        temb = _class_embedding(temb, labels, self.class_map)
        temb_act = F.leaky_relu(temb, self.leak)
        return [blk.embed(temb_act) for blk in self.blocks]

    def energy(self, y: torch.Tensor, cond: list[torch.Tensor]) -> torch.Tensor:
        h = self.fc_in(y)
        for blk, bias in zip(self.blocks, cond, strict=True):
            h = blk(h, bias)
        return self.head(F.relu(h)).squeeze(-1)

    def forward(self, y: torch.Tensor, t: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.energy(y, self.condition(t, labels))

    @torch.no_grad()
    def langevin_grad(self, cond: list[torch.Tensor]):
        """``y -> grad_y sum F(y, cond)`` written out by hand, for the Langevin chain.

        Same function as autograd's input gradient, computed without building a graph: the
        per-chain constants (normalised weights, their transposes, ``g`` folded into ``fc2``,
        ``fc1``'s bias merged with the level bias) are prepared once here, and each call is one
        forward and one backward sweep of fused linear layers. Eval-mode weights (no power
        iteration). Used by ``CDRL.refine`` when a network provides it.
        """
        leak = self.leak

        def lin(layer):
            w = layer.normalized_weight().detach()
            return w, w.t().contiguous(), None if layer.bias is None else layer.bias.detach()

        w_in, w_in_t, b_in = lin(self.fc_in)
        blocks = []
        for blk, bias in zip(self.blocks, cond, strict=True):
            w1, w1_t, b1 = lin(blk.fc1)
            w2, _, b2 = lin(blk.fc2)
            g = blk.g.detach()
            w2g = (w2 * g[:, None]).contiguous()
            skip = lin(blk.skip) if blk.skip is not None else None
            blocks.append((w1, w1_t, (bias + b1).contiguous(), w2g, w2g.t().contiguous(),
                           b2 * g, skip))
        head = self.head.weight.detach()[0]

        def grad(y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                h = fast_linear(y, w_in, b_in)
                saved = []
                for w1, _, bias1, w2g, _, b2g, skip in blocks:
                    z1 = _linear_add(F.leaky_relu(h, leak), w1, bias1)
                    out = fast_linear(F.leaky_relu(z1, leak), w2g, b2g)
                    saved.append((h, z1))
                    h = out + (h if skip is None else fast_linear(h, skip[0], skip[2]))
                gh = (h > 0).to(h.dtype) * head
                for (_, w1_t, _, _, w2g_t, _, skip), (h_in, z1) in zip(
                        reversed(blocks), reversed(saved), strict=True):
                    gz1 = torch.ops.aten.leaky_relu_backward(fast_linear(gh, w2g_t), z1, leak,
                                                             False)
                    ga = torch.ops.aten.leaky_relu_backward(fast_linear(gz1, w1_t), h_in, leak,
                                                            False)
                    gh = ga + (gh if skip is None else fast_linear(gh, skip[1]))
                return fast_linear(gh, w_in_t)

        return grad


def _linear_add(x: torch.Tensor, w: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x @ w.T + other`` (other: a full [B, C] bias), one fused oneDNN call where possible."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and hasattr(
            torch.ops.mkldnn._linear_pointwise, "binary"):
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, w, None, "add")
    return torch.addmm(other, x, w.t())


TOY_INITIALIZER_VARIANTS = ("official", "norm_bias")


class _FiLMBlock(nn.Module):
    """GroupNorm -> SiLU -> Linear -> GroupNorm -> FiLM -> SiLU -> dropout -> zero Linear."""

    def __init__(self, dim: int, temb_dim: int, groups: int, dropout: float,
                 official: bool = False) -> None:
        super().__init__()
        eps = 1e-6 if official else 1e-5
        self.norm1 = nn.GroupNorm(groups, dim, eps=eps)
        self.fc1 = nn.Linear(dim, dim)
        self.norm2 = nn.GroupNorm(groups, dim, eps=eps)
        self.film = nn.Linear(temb_dim, 2 * dim)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc2.weight)
        if not official:  # the official code zeroes the weight only
            nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        out = self.fc1(F.silu(self.norm1(h)))
        scale, shift = self.film(F.silu(temb)).chunk(2, dim=-1)
        out = self.norm2(out) * (1 + scale) + shift
        return h + self.fc2(self.drop(F.silu(out)))


class ToyInitializer(nn.Module):
    """Residual MLP initializer ``G(x_i, t) = x_i + MLP(x_i)`` (spec 11, 3.1)."""

    def __init__(self, data_dim: int = 2, width: int = 64, num_blocks: int = 1,
                 emb_in_dim: int = 128, temb_dim: int = 128, groups: int = 32,
                 dropout: float = 0.0, num_classes: int = 0, variant: str = "norm_bias") -> None:
        super().__init__()
        if width % groups:
            raise ValueError(f"initializer width {width} is not divisible by groups {groups}")
        if variant not in TOY_INITIALIZER_VARIANTS:
            raise ValueError(f"unknown toy initializer variant {variant!r}; choose one of "
                             f"{list(TOY_INITIALIZER_VARIANTS)}")
        official = variant == "official"
        self.variant = variant
        self.emb_in_dim = emb_in_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_in_dim, temb_dim), nn.SiLU(),
                                      nn.Linear(temb_dim, temb_dim))
        self.class_map = nn.Linear(num_classes, temb_dim) if num_classes > 0 else None
        self.fc_in = nn.Linear(data_dim, width)
        self.blocks = nn.ModuleList(_FiLMBlock(width, temb_dim, groups, dropout, official)
                                    for _ in range(num_blocks))
        # The official head has neither a norm nor a bias; norm_bias has both (module docstring).
        self.norm_out = nn.Identity() if official else nn.GroupNorm(groups, width)
        self.fc_out = nn.Linear(width, data_dim, bias=not official)
        nn.init.zeros_(self.fc_out.weight)
        if self.fc_out.bias is not None:
            nn.init.zeros_(self.fc_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        temb = _class_embedding(self.time_mlp(sinusoidal_embedding(t, self.emb_in_dim)), labels,
                                self.class_map)
        h = self.fc_in(x)
        for blk in self.blocks:
            h = blk(h, temb)
        return x + self.fc_out(F.silu(self.norm_out(h)))
