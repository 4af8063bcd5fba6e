"""CDRL: a chain of recovery-likelihood EBMs, each with an initializer (spec 2-5).

One training iteration (spec 3.4), written as named steps:

1. draw a step ``i ~ U{1..T}`` per sample and the positive pair ``(x_{i-1}, x_i)``, shared noise
   with variance reduction (spec 4) or DRL's independent noise without it;
2. refresh the EBM's spectral-norm vectors once (what the official train-mode positive pass does);
3. initializer proposal ``y0 = G(x_i, lambda_i) + sqrt(beta_tilde_i m_i) eps`` (dropout active);
4. K recovery Langevin steps from ``y0`` with the EBM's normalised weights frozen (spec 2.4);
5. EBM loss ``mean(w_i (F(y^K) - F(sqrt(m_i) x_{i-1})))``: the positive and negative terms are
   evaluated in one batched forward, which equals the official two passes because the weights
   and spectral-norm vectors are the same for both; clip, Adam step, warm-up, EMA;
6. initializer loss ``mean_batch sum_pixels (y^K - y0)^2`` (spec 3.2); clip, AdamW step, EMA.
   Its target was made by the EBM before this iteration's EBM update, as in the official code.

Sampling (spec 5.1): ``x_T ~ N(0, I)``; for ``i = T..1`` propose, refine with K steps, map back
``x_{i-1} = y^K / sqrt(m_i)``; optionally one Tweedie denoising step at level 0.

Class conditioning (spec 6.1): ``train_step(x, labels)`` takes network labels ``1..C`` and
replaces each by the null label 0 with probability ``train.cond_drop_prob``; the EBM and the
initializer see the same label. ``propose``, ``refine``, ``tweedie`` and ``sample`` take a
``Guide`` (``cdrl.core.guidance``): a weighted sum of conditional energies and initializer means (CFG,
composition). Without labels the unconditional code path is unchanged.

Speed (same maths as the official code): the noise-level embedding of the EBM is computed for the
T distinct levels once per call and gathered per sample; normalised weights are computed once per
Langevin chain, not once per step.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from cdrl.core.config import Config
from cdrl.core.guidance import Guide, guided_grad_fn, network_classes
from cdrl.core.nets import build_ebm, build_initializer
from cdrl.core.nets.layers import (
    frozen_spectral_norm,
    gather_rows,
    logsnr_to_time,
    power_iteration_,
)
from cdrl.core.optim import EMA, DivergenceError, build_optimizer, optimizer_step
from cdrl.core.sampler import Noise, ebm_grad_fn, energy_grad_fn, langevin, randn
from cdrl.core.schedule import make_schedule

__all__ = ["CDRL", "DivergenceError"]


class _Autograd:
    """An EBM seen without its hand-written Langevin gradient (the Tweedie step uses autograd,
    as the unconditional path does)."""

    def __init__(self, ebm: nn.Module) -> None:
        self.energy = ebm.energy


class CDRL:
    """The method: networks, optimizers, EMAs, and the train and sample entry points."""

    def __init__(self, cfg: Config, data_shape: tuple[int, ...], device: torch.device,
                 num_classes: int = 0) -> None:
        self.cfg = cfg
        self.device = device
        self.data_shape = tuple(data_shape)
        sc = cfg.schedule
        self.schedule = make_schedule(sc.kind, sc.levels, logsnr_max=sc.logsnr_max,
                                      logsnr_min=sc.logsnr_min, b2=sc.b2, c_mode=sc.c_mode)
        self.T = sc.levels
        if num_classes == 0 and cfg.data.conditional:
            num_classes = network_classes(cfg.data)
        self.num_classes = num_classes
        self.ebm = build_ebm(cfg.ebm, self.data_shape, num_classes).to(device)
        self.initializer = build_initializer(cfg.initializer, self.data_shape, num_classes)
        tc = cfg.train
        self.ebm_ema = EMA(self.ebm, tc.ebm_optim.ema_decay, tc.ema_ramp)
        self.opt_ebm, self.sched_ebm = build_optimizer(self.ebm.parameters(), tc.ebm_optim)
        if self.initializer is not None:
            self.initializer.to(device)
            self.init_ema = EMA(self.initializer, tc.init_optim.ema_decay, tc.ema_ramp)
            self.opt_init, self.sched_init = build_optimizer(self.initializer.parameters(),
                                                             tc.init_optim)
        self._make_coefficients()

    # ----------------------------------------------------------------------------- set-up
    def _make_coefficients(self) -> None:
        s = self.schedule
        f32 = dict(dtype=torch.float32, device=self.device)
        level_t = (logsnr_to_time(s.logsnr) if self.cfg.ebm.time_input == "logsnr"
                   else torch.arange(self.T + 1, dtype=torch.float64))
        self.t_level = level_t.to(**f32)                   # network time input per level 0..T
        self.init_t_level = logsnr_to_time(s.logsnr).to(**f32)
        self.sqrt_ab = torch.sqrt(s.alpha_bar).to(**f32)    # per level
        self.sigma_bar = s.sigma_bar.to(**f32)
        top = torch.zeros(self.T, dtype=torch.float64)
        top[-1] = 1.0
        per_step = {
            "sqrt_alpha": torch.sqrt(s.alpha), "sigma": s.sigma, "sqrt_m": torch.sqrt(s.m),
            "proposal_std": torch.sqrt(s.beta_tilde * s.m), "step_size_sq": s.step_size_sq,
            "pull": s.step_size_sq / (2 * s.beta) * (1 - top), "weight": s.weight,
        }
        self.coef = {k: v.to(**f32) for k, v in per_step.items()}

    def _gather(self, values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``values[idx]`` shaped to broadcast against a batch of data."""
        return values[idx].view(-1, *([1] * len(self.data_shape)))

    def per_sample(self, name: str, k: torch.Tensor) -> torch.Tensor:
        """Per-step coefficient ``coef[name]`` gathered for step indices ``k`` and shaped to
        broadcast against a batch of data."""
        return self._gather(self.coef[name], k)

    def modules(self) -> dict[str, nn.Module]:
        mods = {"ebm": self.ebm}
        if self.initializer is not None:
            mods["initializer"] = self.initializer
        return mods

    # ----------------------------------------------------------------------------- pieces
    def positive_pair(self, x: torch.Tensor, k: torch.Tensor):
        """Spec 4: ``(x_{i-1}, x_i)`` for step ``i = k + 1``."""
        eps = torch.randn_like(x)
        x_prev = self._gather(self.sqrt_ab, k) * x + self._gather(self.sigma_bar, k) * eps
        if self.cfg.train.variance_reduction:
            x_i = self._gather(self.sqrt_ab, k + 1) * x + self._gather(self.sigma_bar, k + 1) * eps
        else:
            x_i = (self.per_sample("sqrt_alpha", k) * x_prev
                   + self.per_sample("sigma", k) * torch.randn_like(x))
        return x_prev, x_i

    def propose(self, init: nn.Module | None, x_i: torch.Tensor, k: torch.Tensor,
                generator: Noise = None, guide: Guide | None = None) -> torch.Tensor:
        """Initializer proposal in y-space (spec 3.1); without an initializer, ``x_i`` (DRL).
        With a guide the mean is ``sum_j w_j G(x_i, c_j)`` (spec 6.1), noise added once."""
        if init is None:
            return x_i
        if guide is None:
            mean = init(x_i, self.init_t_level[k + 1])
        else:
            rows = guide.labels.shape[0]
            mean = init(x_i.repeat(rows, *([1] * (x_i.dim() - 1))),
                        self.init_t_level[k + 1].repeat(rows), guide.labels.flatten())
            mean = guide.combine(mean.view(rows, *x_i.shape))
        if not self.cfg.initializer.proposal_noise:
            return mean
        return mean + self.per_sample("proposal_std", k) * randn(x_i.shape, x_i, generator)

    def refine(self, ebm: nn.Module, y0: torch.Tensor, x_i: torch.Tensor, k: torch.Tensor,
               n_steps: int, noise_scale: float = 1.0, generator: Noise = None,
               guide: Guide | None = None, callback=None) -> torch.Tensor:
        """K recovery Langevin steps (spec 2.4) with frozen normalised EBM weights, on the
        guided energy ``sum_j w_j F(y, c_j)`` when a guide is given (spec 6.1); ``callback(y)``
        after every step (``cdrl.core.sampler.langevin``)."""
        if n_steps == 0:
            return y0.detach()
        with frozen_spectral_norm(ebm):
            return langevin(self.grad_fn(ebm, k, guide), y0, n_steps, grad_scale=0.5,
                            noise_std=noise_scale * torch.sqrt(self.per_sample("step_size_sq", k)),
                            pull=self.per_sample("pull", k), anchor=x_i, generator=generator,
                            callback=callback)

    @torch.no_grad()
    def level_condition(self, ebm: nn.Module, k: torch.Tensor,
                        labels: torch.Tensor | None = None):
        """The EBM condition of target level ``k`` per sample (and label, if conditional)."""
        if labels is None:
            return gather_rows(ebm.condition(self.t_level[: self.T]), k)
        return ebm.condition(self.t_level[k], labels)

    def grad_fn(self, ebm: nn.Module, k: torch.Tensor, guide: Guide | None = None):
        """``y -> grad_y F(y)`` of the (guided) energy of step ``k``, for a Langevin chain."""
        if guide is None:
            return ebm_grad_fn(ebm, self.level_condition(ebm, k))
        return guided_grad_fn(ebm, [self.level_condition(ebm, k, lab) for lab in guide.labels],
                              guide)

    def energy(self, x: torch.Tensor, k: torch.Tensor, ebm: nn.Module | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample energy ``F(sqrt(m) x, step k)`` of data-space ``x`` (y-space scaling of
        spec 2.1) on ``ebm`` (default: the EMA EBM); ``labels`` for a conditional run."""
        ebm = self.ebm_ema.model if ebm is None else ebm
        return ebm.energy(self.per_sample("sqrt_m", k) * x, self.level_condition(ebm, k, labels))

    # ----------------------------------------------------------------------------- training
    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None = None
                   ) -> dict[str, torch.Tensor]:
        """One iteration of spec 3.4; returns detached per-sample and scalar statistics.
        ``labels``: network labels ``1..C`` of a conditional run (spec 6.1)."""
        tc = self.cfg.train
        k = torch.randint(0, self.T, (x.shape[0],), device=self.device)
        guide = None
        if labels is not None:
            drop = torch.rand(x.shape[0], device=self.device) < tc.cond_drop_prob
            labels = torch.where(drop, torch.zeros_like(labels), labels)
            guide = Guide.single(labels)
        x_prev, x_i = self.positive_pair(x, k)
        y_pos = self.per_sample("sqrt_m", k) * x_prev
        self.ebm.train()
        power_iteration_(self.ebm)
        if self.initializer is not None:
            self.initializer.train()
        y0 = self.propose(self.initializer, x_i, k, guide=guide)
        y_neg = self.refine(self.ebm, y0, x_i, k, tc.langevin_steps, guide=guide)
        stats = self.ebm_update(k, y_pos, y_neg, labels)
        if labels is not None:
            stats["null_frac"] = drop.float().mean()
        if self.initializer is not None:
            stats.update(self.initializer_update(y0, y_neg))
        stats["k"] = k
        return stats

    def ebm_update(self, k, y_pos, y_neg, labels=None) -> dict[str, torch.Tensor]:
        """Step 5 of the iteration: the weighted recovery-likelihood loss and one EBM step."""
        oc = self.cfg.train.ebm_optim
        self.ebm.eval()  # SN vectors were refreshed above; no second power iteration
        if labels is None:
            cond = gather_rows(self.ebm.condition(self.t_level[: self.T]), k.repeat(2))
        else:
            cond = self.ebm.condition(self.t_level[k.repeat(2)], labels.repeat(2))
        f = self.ebm.energy(torch.cat([y_pos, y_neg]), cond)
        f_pos, f_neg = f.chunk(2)
        terms = self.coef["weight"][k] * (f_neg - f_pos)
        loss = terms.mean()
        gnorm = self._step(loss, f, self.ebm, self.opt_ebm, self.sched_ebm, self.ebm_ema,
                           oc.grad_clip)
        return {"loss_ebm": loss.detach(), "f_pos": f_pos.detach(), "f_neg": f_neg.detach(),
                "loss_terms": terms.detach(), "grad_norm_ebm": gnorm}

    def initializer_update(self, y0, y_neg) -> dict[str, torch.Tensor]:
        """Step 6: regress the proposal onto its refinement (spec 3.2), one initializer step."""
        oc = self.cfg.train.init_optim
        err = (y_neg - y0).pow(2).flatten(1).sum(1)
        loss = err.mean()
        gnorm = self._step(loss, loss, self.initializer, self.opt_init, self.sched_init,
                           self.init_ema, oc.grad_clip)
        return {"loss_init": loss.detach(), "init_err": err.detach(), "grad_norm_init": gnorm}

    def _step(self, loss, values, model, opt, sched, ema, clip: float) -> torch.Tensor:
        return optimizer_step(loss, values, model, opt, sched, ema, clip,
                              self.cfg.train.max_abs_energy)

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, generator: Noise = None,
               use_ema: bool | None = None, return_levels: bool = False, noise: torch.Tensor
               | None = None, guide: Guide | None = None, callback=None):
        """Cooperative sampling (spec 5.1). ``steps`` is K per level (0: initializer only);
        ``guide`` (labels ``[J, n]``) guides every proposal, Langevin and Tweedie step (6.1);
        ``noise`` is the start ``x_T``; ``callback(step, y) -> y`` runs in y-space after each
        level's proposal and after each of its Langevin steps (``step`` = i - 1).

        Returns ``x_0`` (after the optional Tweedie step), and with ``return_levels`` also the
        list ``[x_T, x_{T-1}, ..., x_0]`` before the Tweedie step.
        """
        sc = self.cfg.sample
        steps = sc.langevin_steps if steps is None else steps
        use_ema = sc.use_ema if use_ema is None else use_ema
        ebm = self.ebm_ema.model if use_ema else self.ebm
        init = None
        if self.initializer is not None:
            init = self.init_ema.model if use_ema else self.initializer
            init.eval()
        ebm.eval()
        x = noise if noise is not None else randn((n, *self.data_shape), None, generator,
                                                  self.device)
        levels = [x]
        for step in reversed(range(self.T)):
            k = torch.full((n,), step, dtype=torch.long, device=self.device)
            y0 = self.propose(init, x, k, generator, guide)
            hook = None
            if callback is not None:
                y0, hook = callback(step, y0), functools.partial(callback, step)
            y = self.refine(ebm, y0, x, k, steps, sc.noise_scale, generator, guide, hook)
            x = y / self.per_sample("sqrt_m", k)
            levels.append(x)
        if sc.tweedie:
            x = self.tweedie(ebm, x, guide)
        return (x, levels) if return_levels else x

    def tweedie(self, ebm: nn.Module, x0: torch.Tensor, guide: Guide | None = None
                ) -> torch.Tensor:
        """Spec 5.1: ``(x0 + sigma_bar_0^2 grad_x0 F(sqrt(m_1) x0) / (b2' c_1 beta_1)) / sqrt(ab_0)``
        with ``b2' = sample.tweedie_b2`` (official code 2e-4; 4e-4 matches the Langevin); F is
        the guided energy when a guide is given (spec 6.1)."""
        s = self.schedule
        k = torch.zeros(x0.shape[0], dtype=torch.long, device=self.device)
        sqrt_m = self.per_sample("sqrt_m", k)
        with frozen_spectral_norm(ebm):
            if guide is None:
                with torch.no_grad():
                    cond = gather_rows(ebm.condition(self.t_level[:1]), k)
                grad_y = energy_grad_fn(lambda y: ebm.energy(y, cond))(sqrt_m * x0)
            else:
                conds = [self.level_condition(ebm, k, lab) for lab in guide.labels]
                grad_y = guided_grad_fn(_Autograd(ebm), conds, guide)(sqrt_m * x0)
        scale = float(s.sigma_bar[0] ** 2 / (self.cfg.sample.tweedie_b2 * s.c[0] * s.beta[0]))
        return (x0 + scale * sqrt_m * grad_y) / float(s.alpha_bar[0].sqrt())

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {"ebm": self.ebm.state_dict(), "ebm_ema": self.ebm_ema.state_dict(),
                 "opt_ebm": self.opt_ebm.state_dict(), "sched_ebm": self.sched_ebm.state_dict()}
        if self.initializer is not None:
            state.update(initializer=self.initializer.state_dict(),
                         init_ema=self.init_ema.state_dict(),
                         opt_init=self.opt_init.state_dict(),
                         sched_init=self.sched_init.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.ebm.load_state_dict(state["ebm"])
        self.ebm_ema.load_state_dict(state["ebm_ema"])
        self.opt_ebm.load_state_dict(state["opt_ebm"])
        self.sched_ebm.load_state_dict(state["sched_ebm"])
        if self.initializer is not None:
            self.initializer.load_state_dict(state["initializer"])
            self.init_ema.load_state_dict(state["init_ema"])
            self.opt_init.load_state_dict(state["opt_init"])
            self.sched_init.load_state_dict(state["sched_init"])
