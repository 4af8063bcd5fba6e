"""FLOPs of a run's training iteration and of one sampled image, counted on the run's own networks.

    from cdrl.measure.run_flops import run_work
    w = run_work(resolve_run(preset, "cifar10_cdrl", 0))
    w.train_iteration(256, 15)    # FLOPs of one iteration at batch 256 and K = 15
    w.sample_image(15, rows=2)    # FLOPs of one image at K = 15 under a 2-row guide (CFG, w != 0)

The networks are built from the resolved config by the builders the methods use
(``cdrl.core.nets.build_ebm`` / ``build_initializer``, CoopNets' ``build_generator``) on the meta
device: tensors there have shapes but no memory and no arithmetic, so a paper-size network counts
in about a second on a CPU. ``torch.utils.flop_counter.FlopCounterMode`` counts matrix products,
convolutions and attention, forwards and backwards, two FLOPs per multiply-add; elementwise work,
normalisations, optimizer steps and matrix-vector products (the spectral norm's power iteration)
count none. Each network is counted once at batch 1 and scaled by the batch: every counted
operation is per image but the noise-level embedding, which the methods compute once per call
for the T levels, and which this counts per image (0.5 % too much for the CPU-sized digits
networks, far less at paper size).

FlopCounterMode cannot count through ``torch.autograd.grad``, which the Langevin chain uses, so a
Langevin step is counted as the energy's forward plus ``backward()`` to the input with the weights
frozen (the same products). What the methods do with the pieces (``cdrl.core.method``,
``baselines/``), per training image and per sampled image:

* training, every method: K Langevin steps; the loss pass, energy forward and backward to the
  weights for the positive and the negative image (2 images); with a proposal network (CDRL's
  initializer, CoopNets' generator) its forward and backward to its weights.
* sampling (spec 5.1): T proposals and ``T K`` Langevin steps, plus one gradient for the Tweedie
  step where the run uses it; a guide of J label rows (classifier-free guidance with w != 0:
  J = 2; a composition of C conditions: C + 1) evaluates J energies and J proposals. The
  single-EBM baselines have T = 1, no Tweedie step and no proposal but CoopNets' generator.

``tests/test_preset_budget.py`` checks this bookkeeping against the methods' own ``train_step``.
Counts are cached per distinct network (configuration and image shape), in the process and
in a file (``cache_file``) that later processes read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from baselines.common import SingleEBM
from baselines.coopnets import CoopNets, build_generator
from cdrl.core.config import Config, config_from_dict, config_to_dict
from cdrl.core.guidance import network_classes
from cdrl.core.nets import build_ebm, build_initializer
from cdrl.core.nets.layers import frozen_spectral_norm
from cdrl.data.images import IMAGE_DATASETS
from cdrl.io import atomic_write_text
from cdrl.train.registry import METHODS

__all__ = ["Pass", "RunWork", "count_flops", "run_work", "is_image_run"]

META = torch.device("meta")


@dataclass(frozen=True)
class Pass:
    """FLOPs of one image through a network: its forward and its backward."""

    forward: float
    backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


NONE = Pass(0.0, 0.0)


@dataclass(frozen=True)
class RunWork:
    """The counted pieces of one run (FLOPs per image) and what its method does with them."""

    langevin_step: Pass   # energy forward + backward to the input, weights frozen
    loss_pass: Pass       # energy forward + backward to the weights (one of the 2 loss images)
    proposal: Pass        # proposal network forward + backward to its weights; NONE without
    levels: int           # T (1 for the single-EBM baselines)
    tweedie: bool         # sampling ends with one Tweedie gradient step

    def train_image(self, steps: int) -> float:
        """FLOPs of one training image at ``steps`` Langevin steps."""
        return steps * self.langevin_step.total + 2 * self.loss_pass.total + self.proposal.total

    def train_iteration(self, batch: int, steps: int) -> float:
        return batch * self.train_image(steps)

    def sample_image(self, steps: int, rows: int = 1) -> float:
        """FLOPs of one sampled image at ``steps`` per level under a guide of ``rows`` labels."""
        grads = self.levels * steps + int(self.tweedie)
        return rows * (self.levels * self.proposal.forward + grads * self.langevin_step.total)

    def energy_image(self) -> float:
        """FLOPs of one energy without a gradient (an OOD score)."""
        return self.langevin_step.forward


def count_flops(step) -> int:
    """FLOPs of one ``step()`` as executed (forwards and ``backward()`` calls)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _pass(forward, backward=None) -> Pass:
    """Count ``forward()`` (which returns the output) and then ``backward(output)``."""
    kept = {}
    fwd = count_flops(lambda: kept.setdefault("out", forward()))
    bwd = count_flops(lambda: backward(kept["out"])) if backward else 0
    return Pass(float(fwd), float(bwd))


def is_image_run(cfg: dict) -> bool:
    return cfg["data"]["name"] in IMAGE_DATASETS


def _sum_backward(out: torch.Tensor) -> None:
    out.sum().backward()


def _labels(num_classes: int) -> torch.Tensor | None:
    """One network label 1..C of a conditional network (any valid label costs the same)."""
    return torch.ones(1, dtype=torch.long, device=META) if num_classes else None


def _ebm_passes(ebm, shape, num_classes: int) -> tuple[Pass, Pass]:
    """(Langevin step, loss pass) of one image through ``ebm``."""
    t, labels = torch.zeros(1, device=META), _labels(num_classes)
    ebm.eval()  # the loss pass runs in eval mode; the chain under frozen normalised weights
    weights = [p for p in ebm.parameters() if p.requires_grad]
    with torch.no_grad():
        cond = ebm.condition(t, labels)
    for p in weights:
        p.requires_grad_(False)
    try:
        with frozen_spectral_norm(ebm):
            y = torch.zeros((1, *shape), device=META, requires_grad=True)
            step = _pass(lambda: ebm.energy(y, cond), _sum_backward)
    finally:
        for p in weights:
            p.requires_grad_(True)
    x = torch.zeros((1, *shape), device=META)
    with _normalised_weights_as_leaves(ebm):
        loss = _pass(lambda: ebm(x, t, labels), _sum_backward)
    return step, loss


@contextlib.contextmanager
def _normalised_weights_as_leaves(ebm):
    """The loss pass with each spectral-norm layer's normalised weight ``W / sigma`` computed once
    and taking the gradient itself: the same convolutions and matrix products forwards and
    backwards, without tracing the normalisation's matrix-vector products (which count as no
    FLOPs, and which are slow to trace on the meta device)."""
    with frozen_spectral_norm(ebm):
        for m in ebm.modules():
            if getattr(m, "_frozen_weight", None) is not None:
                m._frozen_weight.requires_grad_(True)
        yield


def _proposal_pass(kind: str, section, shape, num_classes: int) -> Pass:
    """Forward and backward to the weights of a proposal network: CoopNets' generator (from the
    ``baseline`` section) or CDRL's initializer (from the ``initializer`` section)."""
    if kind == "generator":
        gen = build_generator(section.latent_dim, shape, section.generator_width).train()
        z = torch.zeros((1, section.latent_dim), device=META)
        return _pass(lambda: gen(z), _sum_backward)
    init = build_initializer(section, shape, num_classes).train()
    x, t, labels = (torch.zeros((1, *shape), device=META), torch.zeros(1, device=META),
                    _labels(num_classes))
    return _pass(lambda: init(x, t, labels), _sum_backward)


_COUNTED: dict[str, Pass | tuple[Pass, Pass]] = {}


@functools.lru_cache(maxsize=1)
def _counting_code() -> str:
    """A digest of what a count depends on besides its key: torch's version and the source of
    the networks and of this module, read once per process. A change to any of them starts a new
    cache."""
    import baselines.coopnets
    import cdrl.core.nets

    files = sorted(Path(cdrl.core.nets.__file__).parent.rglob("*.py"))
    files += [Path(baselines.coopnets.__file__), Path(__file__)]
    h = hashlib.sha256(torch.__version__.encode())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_file() -> Path | None:
    """Where counts persist between processes: ``$CDRL_FLOPS_CACHE`` (empty: nowhere), else
    ``$XDG_CACHE_HOME/cdrl-bench/flops-<digest>.json`` (``~/.cache`` by default). Counting the
    paper preset's networks on the meta device takes about 15 s on a CPU; every plan of a GPU
    preset needs them, so a dry run pays that once per machine, not each time."""
    env = os.environ.get("CDRL_FLOPS_CACHE")
    if env is not None:
        return Path(env) if env else None
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "cdrl-bench" / f"flops-{_counting_code()}.json"


def _load_cache(path: Path | None) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (TypeError, OSError, ValueError):  # none configured, none yet, or unreadable
        return {}


def _save_cache(path: Path | None, entries: dict) -> None:
    """Merge ``entries`` into the cache file, atomically; a cache that cannot be written is
    skipped (the counts stay in this process)."""
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps({**_load_cache(path), **entries}, sort_keys=True))
    except OSError:
        pass


def _encode(value: Pass | tuple[Pass, Pass]) -> list:
    passes = value if isinstance(value, tuple) else (value,)
    return [[p.forward, p.backward] for p in passes]


def _decode(value: list) -> Pass | tuple[Pass, Pass]:
    passes = tuple(Pass(float(f), float(b)) for f, b in value)
    return passes if len(passes) > 1 else passes[0]


def _cached(key: tuple, count) -> Pass | tuple[Pass, Pass]:
    """``count()`` once per distinct ``key`` (a network's config and its input shape), in this
    process and, through ``cache_file()``, across processes."""
    text = json.dumps(key, sort_keys=True)
    if text not in _COUNTED:
        path = cache_file()
        stored = _load_cache(path).get(text)
        if stored is not None:
            _COUNTED[text] = _decode(stored)
        else:
            with torch.device(META):
                torch.manual_seed(0)
                _COUNTED[text] = count()
            _save_cache(path, {text: _encode(_COUNTED[text])})
    return _COUNTED[text]


_WORK: dict[str, RunWork] = {}  # by resolved config, to skip its validation on a repeat


def run_work(cfg: dict | Config) -> RunWork:
    """The counted pieces of the run whose resolved config is ``cfg`` (image datasets only)."""
    if isinstance(cfg, Config):
        return _run_work(cfg)
    text = json.dumps(cfg, sort_keys=True, default=str)
    if text not in _WORK:
        _WORK[text] = _run_work(config_from_dict(json.loads(text)))
    return _WORK[text]


def _run_work(cfg: Config) -> RunWork:
    if cfg.data.name not in IMAGE_DATASETS:
        raise ValueError(f"run_work: {cfg.data.name!r} is not an image dataset; the 2-D toy "
                         "runs are not counted")
    spec = IMAGE_DATASETS[cfg.data.name]
    shape = (spec.channels, spec.size, spec.size)
    cls = METHODS[cfg.method]
    single = issubclass(cls, SingleEBM)
    classes = 0 if single else network_classes(cfg.data)
    sections = config_to_dict(cfg)
    step, loss = _cached(("ebm", sections["ebm"], shape, classes),
                         lambda: _ebm_passes(build_ebm(cfg.ebm, shape, classes), shape, classes))
    if issubclass(cls, CoopNets):
        key = ("generator", [cfg.baseline.latent_dim, cfg.baseline.generator_width], shape)
        proposal = _cached(key, lambda: _proposal_pass("generator", cfg.baseline, shape, 0))
    elif not single and cfg.initializer.arch != "none":
        key = ("initializer", sections["initializer"], shape, classes)
        proposal = _cached(key, lambda: _proposal_pass("initializer", cfg.initializer, shape,
                                                       classes))
    else:
        proposal = NONE
    return RunWork(langevin_step=step, loss_pass=loss, proposal=proposal,
                   levels=1 if single else cfg.schedule.levels,
                   tweedie=bool(cfg.sample.tweedie) and not single)
