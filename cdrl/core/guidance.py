"""Condition labels and classifier-free guidance (spec 6.1), shared with composition (6.2).

    cdrl train --config workflow/config/experiments/cond_digits.yaml --run-dir results/runs/cond
    cdrl sample --run-dir results/runs/cond --num 500 --guidance 1.0 --labels uniform --out w1.npz
    cdrl class-accuracy --samples w1.npz --out w1-acc.json

Labels are the networks' class input ``c`` in ``0..C``; 0 is the null label (spec 6.1).

- Class-conditional data (digits16, imagenet32, cifar10): ``c = class + 1``.
- Attribute-conditional data (``data.condition_attributes``: celeba64, the 2-D quadrants):
  ``c = 1 + 2 j + v`` means "the j-th listed attribute has value v". The networks take one
  one-hot label (spec 7.1/7.2), so each training example is shown the condition of one listed
  attribute, drawn uniformly per iteration; ``F(y, c)`` then models ``p(y | attribute_j = v)``,
  the experts that composition multiplies. A choice: the paper's attribute model was not found.

Training replaces each label by the null label with probability ``train.cond_drop_prob`` (0.1),
the same dropped label for the EBM and the initializer (``CDRL.train_step``).

A ``Guide`` is a linear combination of conditional energies ``F_g(y) = sum_j w_j F(y, c_j)``,
``sum_j w_j = 1``, used in every Langevin step and the Tweedie step; the initializer mean is
combined with the same weights and the proposal noise is added once:

- one label: ``F(y, c)``;
- CFG (spec 6.1): ``(1 + w) F(y, c) - w F(y, null)``;
- composition (spec 6.2, Eq. 11 NOT FOUND; the spec's reconstruction):
  ``F(y, null) + (1 + w) sum_k [F(y, c_k) - F(y, null)]``.

Scoring guided samples (``cdrl class-accuracy``) lives in ``cdrl.eval.class_accuracy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cdrl.core.config import ConfigError, DataConfig

__all__ = ["Guide", "guided_grad_fn", "network_classes", "num_conditions", "parse_condition",
           "training_labels", "sample_labels", "sampling_guide"]

_LABEL_SALT = 0x1ABE1  # separates the per-image label stream from the noise stream


@dataclass
class Guide:
    """Per-sample labels ``[J, B]`` (long, 0 = null) and one weight per row, summing to 1."""

    labels: torch.Tensor
    weights: tuple[float, ...]

    @staticmethod
    def single(labels: torch.Tensor) -> Guide:
        return Guide(labels[None], (1.0,))

    @staticmethod
    def cfg(labels: torch.Tensor, w: float) -> Guide:
        """Spec 6.1: ``(1 + w) F(c) - w F(null)``; w = 0 is the plain conditional model."""
        if w == 0:
            return Guide.single(labels)
        return Guide(torch.stack([labels, torch.zeros_like(labels)]), (1.0 + w, -w))

    @staticmethod
    def compose(conditions: list[torch.Tensor], w: float) -> Guide:
        """Spec 6.2 reconstruction: ``F(null) + (1 + w) sum_k [F(c_k) - F(null)]``."""
        null = torch.zeros_like(conditions[0])
        weights = (1.0 - (1.0 + w) * len(conditions),) + (1.0 + w,) * len(conditions)
        return Guide(torch.stack([null, *conditions]), weights)

    def to(self, device) -> Guide:
        return Guide(self.labels.to(device), self.weights)

    def __getitem__(self, sl: slice) -> Guide:
        return Guide(self.labels[:, sl], self.weights)

    def combine(self, values: torch.Tensor) -> torch.Tensor:
        """``sum_j w_j values[j]`` for values stacked ``[J, B, ...]``."""
        out = self.weights[0] * values[0]
        for w, v in zip(self.weights[1:], values[1:], strict=True):
            out = out + w * v
        return out


def guided_grad_fn(ebm, conds: list, guide: Guide):
    """``y -> grad_y sum_b sum_j w_j F(y_b, c_jb)``. ``conds[j]`` is the network condition of
    row j (``ebm.condition`` output). Hand-written gradients are combined per row; otherwise one
    batched forward over the J copies of the batch and one autograd call."""
    from cdrl.core.sampler import ebm_grad_fn, energy_grad_fn

    if len(conds) == 1:
        return ebm_grad_fn(ebm, conds[0])
    if hasattr(ebm, "langevin_grad"):
        grads = [ebm.langevin_grad(c) for c in conds]
        return lambda y: guide.combine([g(y) for g in grads])
    rows = len(conds)
    cond = [torch.cat(parts) for parts in zip(*conds, strict=True)]

    def energy(y: torch.Tensor) -> torch.Tensor:
        f = ebm.energy(y.repeat(rows, *([1] * (y.dim() - 1))), cond)
        return guide.combine(f.view(rows, y.shape[0]))

    return energy_grad_fn(energy)


# ----------------------------------------------------------------------------------- labels
def num_conditions(data: DataConfig) -> int:
    """Number of non-null conditions ``C`` of a conditional data config."""
    if data.condition_attributes:
        return 2 * len(data.condition_attributes)
    from cdrl.data.images import IMAGE_DATASETS

    spec = IMAGE_DATASETS.get(data.name)
    if spec is None or spec.num_classes == 0:
        raise ValueError(f"data.conditional: {data.name} has no classes; list binary attributes "
                         "in data.condition_attributes")
    return spec.num_classes


def network_classes(data: DataConfig) -> int:
    """The networks' ``num_classes``: ``C + 1`` (null label 0) when conditional, else 0."""
    return num_conditions(data) + 1 if data.conditional else 0


def _attribute_columns(data: DataConfig, dataset) -> torch.Tensor:
    names = list(dataset.attribute_names)
    missing = [a for a in data.condition_attributes if a not in names]
    if dataset.attributes is None or missing:
        raise ValueError(f"data.condition_attributes: {missing or data.condition_attributes} "
                         f"not among the attributes of {data.name}: {names}")
    return torch.tensor([names.index(a) for a in data.condition_attributes])


def training_labels(data: DataConfig, dataset, labels: torch.Tensor | None,
                    idx: torch.Tensor, device) -> torch.Tensor:
    """Network labels ``1..C`` for the rows ``idx`` of ``dataset`` (before null dropping)."""
    if not data.condition_attributes:
        return labels.to(device) + 1
    cols = _attribute_columns(data, dataset)
    j = torch.randint(len(cols), (len(idx),))  # global RNG: replayed on resume
    value = dataset.attributes[idx, cols[j]].long()
    return (1 + 2 * j + value).to(device)


def parse_condition(name: str, data: DataConfig) -> int:
    """A network label from a name: ``null``; a class index (``3``: class 3 -> label 4); an
    attribute (``Male`` -> value 1) or its negation (``~Male`` / ``not-Male`` -> value 0)."""
    name = name.strip()
    if name == "null":
        return 0
    if data.condition_attributes:
        value = 1
        for prefix in ("~", "not-"):
            if name.startswith(prefix):
                name, value = name[len(prefix):], 0
        if name not in data.condition_attributes:
            raise ConfigError(f"unknown condition {name!r}; attributes: "
                             f"{data.condition_attributes} (prefix ~ for value 0), or null")
        return 1 + 2 * data.condition_attributes.index(name) + value
    c = int(name)
    if not 0 <= c < num_conditions(data):
        raise ConfigError(f"class {c} out of range 0..{num_conditions(data) - 1}")
    return c + 1


def sample_labels(spec: str, seed: int, indices, data: DataConfig) -> torch.Tensor:
    """Network labels for images ``indices``: ``uniform`` draws image i's label from its own
    stream seeded by ``(seed, i)`` (uniform over the C conditions, never null), so it does not
    depend on batching or sharding; anything else is one condition for all (``parse_condition``)."""
    if spec != "uniform":
        return torch.full((len(indices),), parse_condition(spec, data), dtype=torch.long)
    n = num_conditions(data)
    out = [int(np.random.default_rng([int(seed), int(i), _LABEL_SALT]).integers(n)) + 1
           for i in indices]
    return torch.tensor(out, dtype=torch.long)


def sampling_guide(cfg, seed: int, indices, labels: str | None, guidance: float | None):
    """The guide for images ``indices`` of ``cdrl sample`` and their recorded labels (condition
    index ``c - 1``: the data class for class-conditional runs, -1 for null); ``(None, None)``
    for unconditional runs. ``guidance`` defaults to ``sample.guidance``, labels to uniform."""
    if not cfg.data.conditional:
        if labels is not None or guidance:
            raise ConfigError("--labels/--guidance need a conditional run (data.conditional)")
        return None, None
    w = cfg.sample.guidance if guidance is None else guidance
    net = sample_labels(labels or "uniform", seed, indices, cfg.data)
    return Guide.cfg(net, w), net - 1
