"""Networks: the EBMs and initializers of spec sections 7 and 11, built from one config.

``build_ebm`` / ``build_initializer`` map a config section onto a network, so paper-size and
CPU-size models come from the same classes.
"""

from __future__ import annotations

from torch import nn

from cdrl.core.config import EBMConfig, InitializerConfig

__all__ = ["build_ebm", "build_initializer"]


def build_ebm(cfg: EBMConfig, data_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    if cfg.arch == "toy_mlp":
        from cdrl.core.nets.toy import ToyEBM

        if len(data_shape) != 1:
            raise ValueError(f"ebm.arch 'toy_mlp' needs vector data, got shape {data_shape}")
        return ToyEBM(data_dim=data_shape[0], width=cfg.width, ch_mult=tuple(cfg.ch_mult),
                      blocks_per_level=cfg.blocks_per_level, emb_in_dim=cfg.emb_in_dim,
                      temb_dim=cfg.temb_dim, spectral_norm=cfg.spectral_norm,
                      sn_mode=cfg.sn_mode, leak=cfg.leak, num_classes=num_classes)
    from cdrl.core.nets.image import ImageEBM

    if len(data_shape) != 3:
        raise ValueError(f"ebm.arch 'image' needs [C, H, W] data, got shape {data_shape}")
    return ImageEBM(in_channels=data_shape[0], ch=cfg.width, ch_mult=tuple(cfg.ch_mult),
                    blocks_per_level=cfg.blocks_per_level, temb_dim=cfg.temb_dim,
                    emb_in_dim=cfg.emb_in_dim, spectral_norm=cfg.spectral_norm,
                    sn_mode=cfg.sn_mode, num_classes=num_classes, leak=cfg.leak,
                    zero_init_conv2=cfg.zero_init_conv2, head_bias=cfg.head_bias,
                    conv2_sn_mode=cfg.conv2_sn_mode, temb_proj_act=cfg.temb_proj_act)


def build_initializer(cfg: InitializerConfig, data_shape: tuple[int, ...],
                      num_classes: int = 0) -> nn.Module | None:
    if cfg.arch == "none":
        return None
    if cfg.arch == "toy_mlp":
        from cdrl.core.nets.toy import ToyInitializer

        if len(data_shape) != 1:
            raise ValueError(f"initializer.arch 'toy_mlp' needs vector data, got {data_shape}")
        return ToyInitializer(data_dim=data_shape[0], width=cfg.width, num_blocks=cfg.num_blocks,
                              emb_in_dim=cfg.emb_in_dim, temb_dim=cfg.temb_dim,
                              groups=cfg.groups, dropout=cfg.dropout, num_classes=num_classes,
                              variant=cfg.toy_variant)
    from cdrl.core.nets.image import UNetInitializer

    if len(data_shape) != 3:
        raise ValueError(f"initializer.arch 'unet' needs [C, H, W] data, got {data_shape}")
    return UNetInitializer(in_channels=data_shape[0], dim=cfg.width,
                           dim_mults=tuple(cfg.dim_mults), num_res_blocks=cfg.num_blocks,
                           attn_resolutions=tuple(cfg.attn_resolutions),
                           image_size=data_shape[-1], dropout=cfg.dropout, groups=cfg.groups,
                           emb_in_dim=cfg.emb_in_dim, temb_dim=cfg.temb_dim,
                           num_classes=num_classes)
