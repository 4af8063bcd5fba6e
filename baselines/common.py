"""Shared pieces of the single-EBM baselines (short-run MCMC, CoopNets, replay buffer).

Each baseline learns one unconditional EBM ``F(x)`` (a negative energy: higher = more likely):
the ``ebm`` network of the config evaluated at the constant time input ``t = 0``. Its sampler
runs in data space (``baseline:`` section of the config)::

    x <- clamp(x + step_size * grad_x F(x) + noise_std * eps),   eps ~ N(0, I)

(clamp to ``[-clamp, clamp]``; ``clamp = 0`` disables it). With ``noise_std = sqrt(2 step_size)``
this is unadjusted Langevin on ``p(x) ~ exp(F(x))``; in general it targets
``exp(F / temperature)`` with ``temperature = noise_std^2 / (2 step_size)`` (step size and noise
are decoupled, as in Nijkamp et al. 2019 and Du & Mordatch 2019).

The EBM update is contrastive maximum likelihood with Du & Mordatch's optional regulariser::

    loss = mean(F(x_neg) - F(x_pos) + energy_reg * (F(x_pos)^2 + F(x_neg)^2))

run like ``CDRL.ebm_update``: spectral-norm vectors refreshed once per iteration before the
chain, the chain under frozen normalised weights, the loss pass in eval mode, clip, Adam step,
warm-up step, EMA. ``SingleEBM`` holds all of this; the three baselines subclass it and only
choose where chains start and what they keep between iterations.

Randomness: training draws from torch's global RNG, sampling from the ``generator`` argument
(a ``torch.Generator`` or ``PerImageNoise``) through ``cdrl.core.sampler.randn``, so checkpoints
resume bit-exactly and ``cdrl sample`` gives per-image reproducible samples. Uniform chain starts
are made from normals (``U = s * erf(z / sqrt 2)`` is exactly uniform on ``(-s, s)``), because
``PerImageNoise`` streams are normal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cdrl.core.config import Config
from cdrl.core.nets import build_ebm
from cdrl.core.nets.layers import frozen_spectral_norm, gather_rows, power_iteration_
from cdrl.core.optim import EMA, build_optimizer, optimizer_step
from cdrl.core.sampler import Noise, ebm_grad_fn, langevin, randn

__all__ = ["SingleEBM", "chain_start"]


def chain_start(shape, kind: str, scale: float, device: torch.device,
                generator: Noise = None) -> torch.Tensor:
    """Noise chain starts: ``U(-scale, scale)`` (from normals, see module docstring) or
    ``N(0, scale^2)``."""
    z = randn(shape, None, generator, device)
    if kind == "uniform":
        return scale * torch.erf(z / math.sqrt(2.0))
    return scale * z


class SingleEBM:
    """One unconditional EBM with its Adam, warm-up and EMA; the method interface
    (``cdrl.core.protocol.Method``).

    Subclasses implement ``_train_step(x)`` and may override ``_chain_start`` (sampling starts)
    and ``_extra_state`` / ``_load_extra_state`` (what they keep between iterations).
    ``T = 1``: the trainer logs everything as level 0, and ``sample(..., return_levels=True)``
    returns ``[x_start, x_final]``.
    """

    T = 1

    def __init__(self, cfg: Config, data_shape: tuple[int, ...], device: torch.device,
                 num_classes: int = 0) -> None:
        if num_classes:
            raise ValueError("the single-EBM baselines are unconditional (num_classes = 0)")
        self.cfg = cfg
        self.device = device
        self.data_shape = tuple(data_shape)
        self.initializer = None
        self.num_classes = 0
        self.ebm = build_ebm(cfg.ebm, self.data_shape).to(device)
        oc = cfg.train.ebm_optim
        self.ebm_ema = EMA(self.ebm, oc.ema_decay, cfg.train.ema_ramp)
        self.opt_ebm, self.sched_ebm = build_optimizer(self.ebm.parameters(), oc)
        self._level_view()

    def _level_view(self) -> None:
        """The level coefficients of the method interface for one level: time input 0, no
        noise, no input scaling, and the sampler's temperature in place of s^2."""
        bc = self.cfg.baseline
        f32 = dict(dtype=torch.float32, device=self.device)
        self.t_level = torch.zeros(1, **f32)
        self.sqrt_ab = torch.ones(1, **f32)
        self.sigma_bar = torch.zeros(1, **f32)
        temperature = bc.noise_std**2 / (2 * bc.step_size) if bc.step_size > 0 else 1.0
        self.coef = {"sqrt_m": torch.ones(1, **f32),
                     "step_size_sq": torch.tensor([temperature], **f32)}

    def per_sample(self, name: str, k: torch.Tensor) -> torch.Tensor:
        """``coef[name]`` for step indices ``k`` (all 0), shaped to broadcast against data."""
        return self.coef[name][k].view(-1, *([1] * len(self.data_shape)))

    def modules(self) -> dict[str, nn.Module]:
        return {"ebm": self.ebm}

    # ----------------------------------------------------------------------------- pieces
    def _condition(self, ebm: nn.Module, n: int):
        """The EBM's conditioning at ``t = 0``, one row per sample, with gradients: the EBM
        update trains the level embedding through it. ``level_condition`` is its no-grad view."""
        zeros = torch.zeros(n, dtype=torch.long, device=self.device)
        return gather_rows(ebm.condition(self.t_level), zeros)

    @torch.no_grad()
    def level_condition(self, ebm: nn.Module, k: torch.Tensor,
                        labels: torch.Tensor | None = None):
        """The EBM's conditioning per sample (``k`` is all 0: one level, ``t = 0``)."""
        _unconditional(labels, "labels")
        if bool((k != 0).any()):
            raise ValueError(f"{type(self).__name__} has one level: k must be 0, got "
                             f"{sorted(set(k.tolist()))}")
        return self._condition(ebm, k.shape[0])

    def grad_fn(self, ebm: nn.Module, k: torch.Tensor, guide=None):
        """``x -> grad_x F(x)`` for a Langevin chain."""
        _unconditional(guide, "guide")
        return ebm_grad_fn(ebm, self.level_condition(ebm, k))

    def energy(self, x: torch.Tensor, k: torch.Tensor, ebm: nn.Module | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample energy ``F(x)`` (default: the EMA EBM)."""
        ebm = self.ebm_ema.model if ebm is None else ebm
        return ebm.energy(x, self.level_condition(ebm, k, labels))

    def init_noise(self, n: int, generator: Noise = None) -> torch.Tensor:
        bc = self.cfg.baseline
        return chain_start((n, *self.data_shape), bc.init, bc.init_scale, self.device, generator)

    def langevin(self, ebm: nn.Module, x: torch.Tensor, n_steps: int, generator: Noise = None,
                 noise_scale: float = 1.0, callback=None) -> torch.Tensor:
        """``n_steps`` data-space Langevin steps on ``ebm`` with frozen normalised weights:
        ``x <- clamp(x + step_size grad F(x) + noise_std eps)`` (module docstring)."""
        bc = self.cfg.baseline
        if n_steps == 0:
            return x.detach()
        with frozen_spectral_norm(ebm):
            cond = self.level_condition(ebm, torch.zeros(x.shape[0], dtype=torch.long,
                                                         device=self.device))
            return langevin(ebm_grad_fn(ebm, cond), x, n_steps, grad_scale=bc.step_size,
                            noise_std=noise_scale * bc.noise_std, clamp=bc.clamp,
                            generator=generator, callback=callback)

    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None = None
                   ) -> dict[str, torch.Tensor]:
        """One training iteration (the subclass's ``_train_step``); unconditional only."""
        _unconditional(labels, "labels")
        return self._train_step(x)

    def _train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def ebm_update(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Contrastive loss with the energy regulariser; one optimizer step (see docstring)."""
        self.ebm.eval()  # SN vectors were refreshed before the chain; no second power iteration
        f = self.ebm.energy(torch.cat([x_pos, x_neg]), self._condition(self.ebm, 2 * x_pos.shape[0]))
        f_pos, f_neg = f.chunk(2)
        terms = f_neg - f_pos + self.cfg.baseline.energy_reg * (f_pos.pow(2) + f_neg.pow(2))
        loss = terms.mean()
        gnorm = self.optimizer_step(loss, f, self.ebm, self.opt_ebm, self.sched_ebm,
                                    self.ebm_ema, self.cfg.train.ebm_optim.grad_clip)
        return {"loss_ebm": loss.detach(), "f_pos": f_pos.detach(), "f_neg": f_neg.detach(),
                "loss_terms": terms.detach(), "grad_norm_ebm": gnorm,
                "k": torch.zeros(x_pos.shape[0], dtype=torch.long, device=self.device)}

    def optimizer_step(self, loss, values, model, opt, sched, ema, clip: float) -> torch.Tensor:
        return optimizer_step(loss, values, model, opt, sched, ema, clip,
                              self.cfg.train.max_abs_energy)

    def _prepare_chain(self) -> None:
        """Training mode and one spectral-norm power iteration, before this iteration's chain."""
        self.ebm.train()
        power_iteration_(self.ebm)

    # ----------------------------------------------------------------------------- sampling
    def _chain_start(self, n: int, generator: Noise, use_ema: bool,
                     noise: torch.Tensor | None) -> torch.Tensor:
        """Where sampling chains start: noise (``noise``, if given, is the start itself)."""
        return noise.to(self.device) if noise is not None else self.init_noise(n, generator)

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, generator: Noise = None,
               use_ema: bool | None = None, return_levels: bool = False,
               noise: torch.Tensor | None = None, guide=None, callback=None):
        """``steps`` (default ``sample.langevin_steps``) Langevin steps from the chain start;
        ``callback(0, x) -> x`` after the start and after every step (the one level is step 0).

        Returns the final samples, and with ``return_levels`` also ``[x_start, x_final]``.
        """
        _unconditional(guide, "guide")
        sc = self.cfg.sample
        steps = sc.langevin_steps if steps is None else steps
        use_ema = sc.use_ema if use_ema is None else use_ema
        ebm = (self.ebm_ema.model if use_ema else self.ebm).eval()
        x0 = self._chain_start(n, generator, use_ema, noise)
        hook = None
        if callback is not None:
            x0, hook = callback(0, x0), lambda x: callback(0, x)
        x = self.langevin(ebm, x0, steps, generator, sc.noise_scale, hook)
        return (x, [x0, x]) if return_levels else x

    # ----------------------------------------------------------------------------- state
    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {"ebm": self.ebm.state_dict(), "ebm_ema": self.ebm_ema.state_dict(),
                "opt_ebm": self.opt_ebm.state_dict(), "sched_ebm": self.sched_ebm.state_dict(),
                **self._extra_state()}

    def load_state_dict(self, state: dict) -> None:
        self.ebm.load_state_dict(state["ebm"])
        self.ebm_ema.load_state_dict(state["ebm_ema"])
        self.opt_ebm.load_state_dict(state["opt_ebm"])
        self.sched_ebm.load_state_dict(state["sched_ebm"])
        self._load_extra_state(state)


def _unconditional(value, name: str) -> None:
    if value is not None:
        raise ValueError(f"{name}: the single-EBM baselines are unconditional; got a {name}")
