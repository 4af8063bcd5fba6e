"""DRL: Diffusion Recovery Likelihood (Gao, Song, Poole, Wu, Kingma, ICLR 2021), on cdrl's code.

DRL is CDRL without the initializer: every recovery Langevin chain starts at the noisier sample
itself (``y0 = x_i``), with DRL's own recipe, all of it from the config
(``workflow/config/experiments/drl_*.yaml``):

* the grouped linear schedule of spec 1.3 (``schedule.kind: drl``) with ``b2 = 2e-4``;
* K = 30 Langevin steps (``train.langevin_steps``, ``sample.langevin_steps``);
* independent noise for the positive pair (``train.variance_reduction: false``, spec 4);
* the integer level index as the network's time input (``ebm.time_input: index``) and DRL's
  residual block (``zero_init_conv2``, ``conv2_sn_mode: down``, ``temb_proj_act: false``,
  ``head_bias``; spec 7.3);
* EMA 0.999 applied every step without a ramp, Adam 1e-4 with a 1,000-iteration warm-up, no
  gradient clipping (spec 3.5);
* no final denoising step, and Langevin noise scaled by 0.99 at evaluation
  (``sample.noise_scale``, the DRL README's ``--noise_scale=0.99``).

Differences from the official TensorFlow code: PyTorch's spectral norm (one power iteration per
training iteration) and default initialisation instead of TF's variance-scaling init; batches
drawn with replacement; everything else as listed above.
"""

from __future__ import annotations

from cdrl.core.config import Config, ConfigError
from cdrl.core.method import CDRL

__all__ = ["DRL"]


class DRL(CDRL):
    """CDRL's machinery with no initializer; the DRL recipe comes from the config."""

    def __init__(self, cfg: Config, data_shape, device, num_classes: int = 0) -> None:
        if cfg.initializer.arch != "none":
            raise ConfigError("initializer.arch: DRL has no initializer; set it to 'none' "
                              f"(got {cfg.initializer.arch!r})")
        super().__init__(cfg, data_shape, device, num_classes)
