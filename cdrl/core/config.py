"""Strict, typed run configuration (one YAML file per run).

Every key lives in a dataclass below with its type and default. ``load_config`` rejects unknown
keys and wrong types with an error naming the full key path, e.g.
``train.batch_size: expected int, got str '64'``. The resolved config (defaults filled in) is
written to the run directory and embedded in every checkpoint.

The defaults are the official CDRL CIFAR-10 recipe where one exists (spec 3.5, 7); the toy and
CPU presets in ``workflow/config/experiments/`` override them.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

__all__ = ["Config", "ConfigError", "load_config", "config_from_dict", "config_to_dict",
           "apply_overrides"]


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the key and the fix."""


@dataclass
class DataConfig:
    name: str = "checkerboard"         # toys: checkerboard | 8gaussians | rings; images: see
                                        # cdrl.data.images (cifar10, imagenet32, celeba64, digits16,
                                        # lfw25, ...)
    num_points: int = 50_000            # toy datasets: points drawn once (spec 11)
    scale: float = 4.0                  # toy datasets: board/ring scale (checkerboard in [-8, 8]^2)
    seed: int = 1234                    # seed of the fixed toy point cloud / held-out split
    root: str = "resources/datasets"    # image datasets: folder holding each dataset's files
    split: str = "train"                # image datasets: train | test (val for ImageNet)
    flip: bool = True                   # image datasets: random horizontal flips in training
    order: Literal["iid", "epoch"] = "iid"  # image datasets: batch rows i.i.d. uniform, or
                                        # epoch by epoch in a fresh order each epoch (the
                                        # official code's DistributedSampler; paper-size configs)
    conditional: bool = False           # feed class labels to the networks (spec 6.1)
    condition_attributes: list[str] = field(default_factory=list)  # conditional on binary
                                        # attributes instead of classes (celeba64, quadrants):
                                        # condition 1 + 2j + v means "attribute j has value v"


@dataclass
class ScheduleConfig:
    kind: Literal["cdrl", "drl"] = "cdrl"   # cosine-logSNR (spec 1.2) or DRL grouped linear (1.3)
    levels: int = 6                     # T
    logsnr_max: float = 9.8             # CDRL only: cleanest level
    logsnr_min: float = -5.1            # CDRL only: noisiest level
    b2: float | None = None             # s^2 = b2 * c * sigma^2; None: 4e-4 CDRL, 2e-4 DRL
    c_mode: Literal["std_ratio", "constant"] = "std_ratio"  # 'constant': the official toy's c


@dataclass
class EBMConfig:
    arch: Literal["toy_mlp", "image"] = "image"
    width: int = 128                    # first-level channels (image) or units (toy)
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    blocks_per_level: int = 8
    emb_in_dim: int = 128               # sinusoidal embedding size
    temb_dim: int = 512                 # embedding MLP width
    spectral_norm: bool = True
    sn_mode: Literal["full", "down"] = "full"   # 'down': DRL's W / max(sigma, 1)
    time_input: Literal["logsnr", "index"] = "logsnr"  # CDRL: tau(logsnr)*1000; DRL: level index
    leak: float = 0.2                   # LeakyReLU slope
    zero_init_conv2: bool = False       # image only: DRL zero-initialises each block's conv2
    head_bias: bool = False             # image only: DRL's output dense has a bias
    conv2_sn_mode: Literal["full", "down"] | None = None  # image only: DRL 'down' (None: sn_mode)
    temb_proj_act: bool = True          # image only: LReLU on the block's level bias (DRL: off)


@dataclass
class InitializerConfig:
    arch: Literal["toy_mlp", "unet", "none"] = "unet"   # 'none': chains start at x_i (DRL)
    width: int = 64                     # U-Net dim / MLP units
    num_blocks: int = 3                 # U-Net res-blocks per level / MLP FiLM blocks
    dim_mults: list[int] = field(default_factory=lambda: [1, 1, 1])
    attn_resolutions: list[int] = field(default_factory=lambda: [16, 8])
    emb_in_dim: int = 64
    temb_dim: int = 256
    groups: int = 32                    # GroupNorm groups
    dropout: float = 0.1
    proposal_noise: bool = True         # add sqrt(beta_tilde * m) noise to the proposal (3.1)
    toy_variant: Literal["norm_bias", "official"] = "norm_bias"  # toy_mlp only: 'official' is
                                        # toy_example.py's MLP (output SiLU -> Linear(no bias),
                                        # GroupNorm eps 1e-6); 'norm_bias' adds a GroupNorm and a
                                        # bias before the output (cdrl.core.nets.toy)


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_iters: int = 10_000          # lr factor min(1, (it + offset) / warmup_iters)
    warmup_offset: int = 0              # the official initializer starts at 500 (5%)
    decay: Literal["none", "linear", "cosine"] = "none"  # after warm-up; the official: none
    decay_iters: int = 0                # iterations over which the decay reaches final_lr_ratio
    final_lr_ratio: float = 0.0
    grad_clip: float = 1.0              # global L2 norm; 0 disables
    ema_decay: float = 0.9999


@dataclass
class TrainConfig:
    iterations: int = 500_001
    batch_size: int = 256
    langevin_steps: int = 15            # K
    variance_reduction: bool = True     # shared-noise positive pair (spec 4)
    ebm_optim: OptimConfig = field(default_factory=OptimConfig)
    init_optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adamw", lr=1e-5, warmup_offset=500))
    ema_ramp: bool = True               # torch-ema's default: decay min(d, (1+n)/(10+n))
    log_every: int = 100                # iterations per stats.jsonl line
    ckpt_every: int = 5000              # iterations per checkpoint
    keep_checkpoints: int = 2           # older checkpoints are deleted
    snapshot_every: int = 0             # > 0: keep snapshots/iter-<i>.pt (learning curves)
    max_abs_energy: float = 1e8         # divergence guard threshold on |F|
    cond_drop_prob: float = 0.1         # conditional runs: P(label -> null label 0) (spec 6.1)


@dataclass
class SampleConfig:
    langevin_steps: int = 15            # K at test time (0: initializer only)
    noise_scale: float = 1.0            # Langevin noise multiplier (DRL evaluates at 0.99)
    tweedie: bool = True                # final denoising step (spec 5.1)
    tweedie_b2: float = 2e-4            # official code's constant; 4e-4 matches the Langevin
    batch_size: int = 1000
    use_ema: bool = True
    guidance: float = 0.0               # conditional runs: classifier-free guidance weight w (6.1)


@dataclass
class BaselineConfig:
    """Single-EBM baselines (``baselines/``): short-run MCMC, CoopNets, replay buffer. Their EBM is
    the ``ebm`` network at a fixed time input of 0; their sampler runs in data space:
    ``x <- x + step_size * grad F(x) + noise_std * eps`` (F = negative energy), optionally clamped."""

    step_size: float = 10.0             # gradient multiplier (Du & Mordatch use 10 on images)
    noise_std: float = 0.005
    clamp: float = 1.0                  # clamp samples to [-clamp, clamp]; 0 disables (toys)
    init: Literal["uniform", "normal"] = "uniform"  # chain starts: U[-s, s] or N(0, s^2)
    init_scale: float = 1.0
    buffer_size: int = 10_000           # replay buffer (Du & Mordatch 2019)
    reinit_prob: float = 0.05           # share of chains restarted from noise each iteration
    energy_reg: float = 0.0             # alpha * (F_pos^2 + F_neg^2) (Du & Mordatch: 1.0)
    latent_dim: int = 16                # CoopNets generator input
    generator_width: int = 64
    generator_lr: float = 1e-4


@dataclass
class Config:
    method: str = "cdrl"
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int = 0                    # torch CPU threads; 0 keeps torch's default
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ebm: EBMConfig = field(default_factory=EBMConfig)
    initializer: InitializerConfig = field(default_factory=InitializerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got "
                          f"{type(value).__name__} {value!r}")
    return value


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got "
                          f"{type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s}; "
                          f"known keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    cfg = _build(Config, data or {}, "")
    _check_values(cfg)
    return cfg


def _check_values(cfg: Config) -> None:
    positive = {"schedule.levels": cfg.schedule.levels, "train.batch_size": cfg.train.batch_size,
                "train.log_every": cfg.train.log_every, "train.ckpt_every": cfg.train.ckpt_every,
                "train.keep_checkpoints": cfg.train.keep_checkpoints,
                "sample.batch_size": cfg.sample.batch_size}
    for key, val in positive.items():
        if val < 1:
            raise ConfigError(f"{key}: must be >= 1, got {val}")
    for key, val in {"train.langevin_steps": cfg.train.langevin_steps,
                     "sample.langevin_steps": cfg.sample.langevin_steps,
                     "train.iterations": cfg.train.iterations,
                     "train.snapshot_every": cfg.train.snapshot_every}.items():
        if val < 0:
            raise ConfigError(f"{key}: must be >= 0, got {val}")
    if not 0.0 <= cfg.train.cond_drop_prob <= 1.0:
        raise ConfigError(f"train.cond_drop_prob: must be in [0, 1], got {cfg.train.cond_drop_prob}")
    init = cfg.initializer
    if init.toy_variant == "official" and init.arch != "toy_mlp":
        raise ConfigError(f"initializer.toy_variant: 'official' needs initializer.arch toy_mlp, "
                          f"got {init.arch!r}")
    if init.toy_variant == "official" and init.dropout != 0.0:
        raise ConfigError(f"initializer.dropout: the official toy initializer has no dropout; "
                          f"set 0.0 with toy_variant 'official', got {init.dropout}")
    if cfg.data.condition_attributes and not cfg.data.conditional:
        raise ConfigError("data.condition_attributes: needs data.conditional: true")
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {cfg.device!r}")


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}, column {where.column + 1}:" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{line} not valid YAML ({problem}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got "
                          f"{type(data).__name__}; see workflow/config/experiments/ for examples")
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def apply_overrides(cfg: dict, overrides: dict | list[str] | None, where: str = "set") -> dict:
    """A copy of ``cfg`` with dotted-key overrides applied in order, intermediate maps made.

    ``overrides`` is either a mapping ``{"a.b.c": value}`` (a preset's ``set:``) or a list of
    ``"a.b.c=VALUE"`` strings whose values are read as YAML (``cdrl bench --set``). A key that
    runs through a value which is not a section is an error naming ``where`` and the key; an
    unknown key is left to ``config_from_dict`` to reject."""
    if isinstance(overrides, (list, tuple)):
        pairs = []
        for item in overrides:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ConfigError(f"{where} {item!r}: expected KEY=VALUE, e.g. ebm.width=128")
            pairs.append((key, yaml.safe_load(value)))
    else:
        pairs = list((overrides or {}).items())
    out = copy.deepcopy(cfg)
    for dotted, value in pairs:
        keys = str(dotted).split(".")
        node = out
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {dotted!r}: {'.'.join(keys[: i + 1])} is a "
                                  f"{type(child).__name__}, not a section")
            node = child
        node[keys[-1]] = copy.deepcopy(value)
    return out
