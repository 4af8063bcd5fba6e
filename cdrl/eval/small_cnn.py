"""Small CNNs for grey digit images: feature extractors for FID/KID/precision-recall and digit
classifiers, one module with three configurations.

    from cdrl.eval.small_cnn import CNN_CONFIGS, ensure_weights, register_extractor

Inception costs about 4 images/s on the project's CPUs and says little about small grey digits;
a small CNN trained on the domain itself is the usual companion. Each configuration
(``SmallCNNConfig``, in ``CNN_CONFIGS`` under its ``cdrl evaluate --extractor`` name) names its
network, input size, preprocessing, training set and recipe, torch-fidelity name and features,
default weights file and the test accuracy it must reach before its weights are cached:

- ``digits`` (``DIGITS``, torch-fidelity ``digits-cnn``): ``DigitsCNN`` (two conv layers,
  16 -> 8 -> 4, a 64-d feature layer ``digits-64`` and ``digits-logits``) trained on
  ``sklearn.datasets.load_digits()`` (1797 images of 8x8, 0..16, as uint8 0..255; a seeded
  80/20 split), 15 epochs of Adam at 3e-3, a few seconds on 2 cores. Inputs of any size are
  resized bilinearly to 16x16 (antialiased when shrinking). No accuracy floor (98 % measured).
- ``mnist`` (``MNIST32``, ``mnist-cnn``): ``MnistCNN`` (three 3x3 conv + batch norm + ReLU + 2x2
  max-pool stages, 16/32/64 channels, 32 -> 16 -> 8 -> 4, a 128-d ReLU layer ``mnist-128`` and
  ``mnist-logits``; 0.16 M parameters) trained on the 60,000 MNIST train images
  (``load_image_dataset('mnist')``, staged by ``scripts/stage_mnist.py``), 3 epochs of Adam at
  2e-3 with a cosine decay to 0; it must reach 99 % on the 10,000 test images. 28x28 inputs are
  zero-padded to 32x32 exactly as the ``mnist`` dataset pads them, other sizes resized bilinearly.
- ``mnist16`` (``MNIST16``, ``mnist16-cnn``): the same network trained on ``mnist16`` (MNIST
  area-resized to 16x16, the resolution the MNIST preset trains at): 16 -> 8 -> 4 -> 2, so the
  feature layer sees 64 x 2 x 2; it must reach 98.5 %. A model judged at 16x16 is so judged by a
  classifier that has seen 16x16 digits, not by the 32x32 one fed bilinear upsamplings (which
  classifies only 87 % of real 16x16 images with p >= 0.9). Inputs of another size are
  area-resized as the dataset is.

Inputs are what torch-fidelity supplies: uint8 ``[B, 3, H, W]``; they become grey (channel mean)
in [0, 1], then the configuration's resize (``SmallCNNConfig.preprocess``). Training images go
through the very same function, so train and evaluation preprocessing cannot drift apart.

Training (``train_cnn``) is one loop for all three: seeded (``torch.manual_seed(seed)`` before
the network is built, batch order from a generator seeded ``seed + 1``), one intra-op CPU thread
by default (CPU kernels split reductions by thread count, so 1 and 2 threads gave different
weights; pinned, the same seed gives the same bytes anywhere the kernels match).
``ensure_weights`` trains once into a path and writes a JSON sidecar (sha256, test accuracy per
class, seed, recipe, data and its content hash where it comes from a dataset, training time);
afterwards it only checks the sha256. The extractors (``SmallCNNExtractor``) never train: missing
weights are an error saying how to make them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from cdrl.data.images import content_sha256, load_image_dataset
from cdrl.eval.inception_weights import sha256_file, sidecar_path
from cdrl.io import atomic_torch_save, atomic_write_text

__all__ = ["SmallCNNConfig", "DIGITS", "MNIST32", "MNIST16", "CNN_CONFIGS", "DATA_ROOT_ENV",
           "DigitsCNN", "MnistCNN", "digits_uint8", "train_cnn", "ensure_weights", "load_cnn",
           "predict_proba", "predict_labels", "SmallCNNExtractor", "DigitsFeatureExtractor",
           "MnistFeatureExtractor", "Mnist16FeatureExtractor", "register_extractor",
           "register_once", "ensure_digits_weights", "ensure_mnist_weights"]

DATA_ROOT_ENV = "CDRL_DATA_ROOT"        # the datasets root, as for `cdrl evaluate --reference`
SKLEARN_DIGITS = "sklearn-digits"       # DIGITS' training data: not a cdrl.data.images dataset


@dataclass(frozen=True)
class SmallCNNConfig:
    """One small CNN: its network, input, training data and recipe, names and weights."""

    extractor: str                 # `cdrl evaluate --extractor` name (key of CNN_CONFIGS)
    name: str                      # torch-fidelity extractor name (and `cdrl class-accuracy`'s)
    arch: Literal["digits", "mnist"]  # DigitsCNN or MnistCNN
    size: int                      # input side (MnistCNN: a multiple of 8, three 2x2 pools)
    resize: Literal["bilinear", "area"]  # how inputs of another size reach ``size``
    pad_from: int | None           # inputs of this side are zero-padded to ``size`` instead
    dataset: str                   # training and test set (cdrl.data.images, or SKLEARN_DIGITS)
    described: str                 # the training data in the weights' sidecar
    features: tuple[str, str]      # (feature layer, logits) names for torch-fidelity
    weights: Path                  # default cache file
    min_accuracy: float            # test accuracy below which the weights are not cached
    epochs: int
    batch: int
    lr: float                      # Adam
    lr_decay: Literal["none", "cosine"]  # cosine: to 0 over the whole run
    confidence: bool               # offers `cdrl evaluate`'s ``conf`` metric (MNIST classifiers)

    def build(self) -> nn.Module:
        return DigitsCNN() if self.arch == "digits" else MnistCNN(size=self.size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` -> float ``[B, 1, size, size]`` in [0, 1]."""
        x = x.float().mean(dim=1, keepdim=True) / 255.0
        size = self.size
        if x.shape[-2:] == (size, size):
            return x
        if self.pad_from is not None and x.shape[-2:] == (self.pad_from, self.pad_from):
            pad = (size - self.pad_from) // 2
            return F.pad(x, (pad, pad, pad, pad))
        if self.resize == "area":
            return F.interpolate(x, size=(size, size), mode="area")
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=x.shape[-1] > size or x.shape[-2] > size)


DIGITS = SmallCNNConfig(
    extractor="digits", name="digits-cnn", arch="digits", size=16, resize="bilinear",
    pad_from=None, dataset=SKLEARN_DIGITS,
    described="sklearn.datasets.load_digits (8x8 -> 16x16 grey)",
    features=("digits-64", "digits-logits"), weights=Path("resources/weights/digits-cnn.pth"),
    min_accuracy=0.0, epochs=15, batch=64, lr=3e-3, lr_decay="none", confidence=False)
MNIST32 = SmallCNNConfig(
    extractor="mnist", name="mnist-cnn", arch="mnist", size=32, resize="bilinear", pad_from=28,
    dataset="mnist", described="mnist (32x32, zero-padded)",
    features=("mnist-128", "mnist-logits"), weights=Path("resources/weights/mnist-cnn.pth"),
    min_accuracy=0.99, epochs=3, batch=64, lr=2e-3, lr_decay="cosine", confidence=True)
# 16x16 keeps less of each digit; 98.5 % leaves room for that while still failing a broken run.
MNIST16 = SmallCNNConfig(
    extractor="mnist16", name="mnist16-cnn", arch="mnist", size=16, resize="area", pad_from=None,
    dataset="mnist16", described="mnist16 (16x16, area)",
    features=("mnist16-128", "mnist16-logits"),
    weights=Path("resources/weights/mnist16-cnn.pth"), min_accuracy=0.985, epochs=3, batch=64,
    lr=2e-3, lr_decay="cosine", confidence=True)
CNN_CONFIGS = {c.extractor: c for c in (DIGITS, MNIST32, MNIST16)}


# ---------------------------------------------------------------------------------------------
# The networks.

class DigitsCNN(nn.Module):
    """Two conv layers (16x16 -> 8x8 -> 4x4), a 64-d feature layer and 10 logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        feat = F.relu(self.fc1(h.flatten(1)))
        return feat, self.fc2(feat)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(), nn.MaxPool2d(2))


class MnistCNN(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4, or 16 -> ... -> 2), a 128-d feature layer and 10
    logits."""

    def __init__(self, width: int = 16, features: int = 128, size: int = 32):
        super().__init__()
        self.convs = nn.Sequential(_stage(1, width), _stage(width, 2 * width),
                                   _stage(2 * width, 4 * width))
        self.fc1 = nn.Linear(4 * width * (size // 8) ** 2, features)
        self.fc2 = nn.Linear(features, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = F.relu(self.fc1(self.convs(x).flatten(1)))
        return feat, self.fc2(feat)


# ---------------------------------------------------------------------------------------------
# Training data, training, cached weights.

def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as uint8 ``[1797, 1, 8, 8]`` in 0..255, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return x, d.target.astype(np.int64)


def _data_root(data_root) -> Path:
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "resources/datasets")


def _training_data(config: SmallCNNConfig, data_root, seed: int):
    """``((train images, labels), (test images, labels), sidecar description)``: uint8
    ``[N, C, H, W]`` and long tensors. The digits are split 80/20 by ``seed``; the MNIST sets
    are read from ``data_root`` (a ``DatasetError`` says how to stage them)."""
    if config.dataset == SKLEARN_DIGITS:
        x_np, y_np = digits_uint8()
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_test = int(round(len(y) * 0.2))
        train_idx, test_idx = perm[n_test:], perm[:n_test]
        return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]), config.described
    root = _data_root(data_root)
    train = load_image_dataset(config.dataset, root, "train")
    test = load_image_dataset(config.dataset, root, "test")
    data = {"dataset": config.described, "source": train.source,
            "train_content_hash": content_sha256(train.images, train.labels, train.attributes),
            "test_content_hash": content_sha256(test.images, test.labels, test.attributes)}
    return (train.images, train.labels), (test.images, test.labels), data


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Argmax classes in batches (a 10k batch would hold ~0.7 GB of activations)."""
    if not len(x):
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([model(xb)[1].argmax(1) for xb in x.split(batch)])


def train_cnn(config: SmallCNNConfig, train, test, seed: int = 0, epochs: int | None = None,
              batch: int | None = None, lr: float | None = None, threads: int = 1
              ) -> tuple[nn.Module, dict]:
    """Train ``config``'s network on ``train`` = (uint8 images, labels), deterministically, and
    score it on ``test``; the recipe is the config's unless given. The intra-op thread count is
    pinned to ``threads`` while training."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.enable_grad():  # callers may sit under no_grad (first use inside scoring)
            return _train(config, train, test, seed, config.epochs if epochs is None else epochs,
                          batch or config.batch, config.lr if lr is None else lr, threads)
    finally:
        torch.set_num_threads(before)


def _train(config, train, test, seed, epochs, batch, lr, threads) -> tuple[nn.Module, dict]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x, y = config.preprocess(torch.as_tensor(train[0])), torch.as_tensor(train[1])
    model = config.build()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = None
    if config.lr_decay == "cosine":
        # Cosine decay to 0: the last steps at a small rate are what lift MNIST past 99 %.
        steps = epochs * math.ceil(len(y) / batch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = F.cross_entropy(model(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()
    pred = _predict(model, config.preprocess(torch.as_tensor(test[0])))
    target = torch.as_tensor(test[1])
    per_class = [float((pred[target == c] == c).float().mean()) if (target == c).any() else None
                 for c in range(10)]
    info = {"size": config.size, "seed": seed, "epochs": epochs, "batch": batch, "lr": lr,
            "lr_decay": "cosine to 0" if sched is not None else "none", "threads": threads,
            "test_accuracy": float((pred == target).float().mean()),
            "test_accuracy_per_class": per_class, "n_train": len(y), "n_test": len(target),
            "train_seconds": round(time.perf_counter() - t0, 2)}
    return model, info


def ensure_weights(path: Path | None = None, data_root: str | Path | None = None,
                   min_accuracy: float | None = None, config: SmallCNNConfig = MNIST32,
                   seed: int = 0, **train_kwargs) -> dict:
    """Train ``config`` once into ``path`` (default ``config.weights``, plus ``path.json``);
    afterwards only check its sha256.

    MNIST training reads the dataset from ``data_root`` (default ``$CDRL_DATA_ROOT`` or
    resources/datasets; a ``DatasetError`` says how to stage it). A network below
    ``min_accuracy`` (default the config's) on the test set is not cached: the run fails instead
    of reporting metrics from a weak classifier."""
    path = Path(path or config.weights)
    min_accuracy = config.min_accuracy if min_accuracy is None else min_accuracy
    sidecar = sidecar_path(path)
    if path.is_file() and sidecar.is_file():
        info = json.loads(sidecar.read_text())
        if info["sha256"] != sha256_file(path):
            raise ValueError(f"{path}: sha256 differs from {sidecar}; delete both to retrain")
        return info
    train, test, data = _training_data(config, data_root, seed)
    model, info = train_cnn(config, train, test, seed=seed, **train_kwargs)
    if info["test_accuracy"] < min_accuracy:
        raise RuntimeError(f"{config.name} reached {info['test_accuracy']:.4f} test accuracy, "
                           f"below {min_accuracy}; not cached to {path}")
    atomic_torch_save(model.state_dict(), path)
    info = {"file": path.name, "sha256": sha256_file(path), "extractor": config.name,
            "data": data, "torch": torch.__version__, **info}
    atomic_write_text(sidecar, json.dumps(info, indent=1) + "\n")
    return info


def ensure_digits_weights(path: Path | None = None, seed: int = 0) -> dict:
    """``ensure_weights`` for ``DIGITS`` (trained in seconds, no data to stage)."""
    return ensure_weights(path, config=DIGITS, seed=seed)


ensure_mnist_weights = ensure_weights  # the MNIST configurations' name for it (MNIST32 default)


def load_cnn(path: Path, config: SmallCNNConfig = MNIST32) -> nn.Module:
    """The cached network in eval mode (state dict read with ``weights_only=True``)."""
    net = config.build()
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def predict_proba(path: Path, x_uint8: np.ndarray | torch.Tensor,
                  config: SmallCNNConfig = MNIST32, batch: int = 1000) -> np.ndarray:
    """Softmax class probabilities ``[N, 10]`` of the cached network for uint8 images."""
    net = load_cnn(path, config)
    x = config.preprocess(torch.as_tensor(x_uint8))
    if not len(x):
        return np.zeros((0, 10), dtype=np.float32)
    return torch.cat([net(xb)[1].softmax(1) for xb in x.split(batch)]).numpy()


def predict_labels(path: Path, x_uint8: np.ndarray | torch.Tensor,
                   config: SmallCNNConfig = MNIST32) -> np.ndarray:
    """Class predictions of the cached network for uint8 ``[N, C, H, W]`` images."""
    net = load_cnn(path, config)
    return _predict(net, config.preprocess(torch.as_tensor(x_uint8))).numpy()


# ---------------------------------------------------------------------------------------------
# torch-fidelity: cached weights in, ``(features, logits)`` out, for FID/KID/precision-recall
# (features) and Inception Score (logits).

class SmallCNNExtractor(FeatureExtractorBase):
    """The torch-fidelity wrapper of a configuration: uint8 ``[B, 3, H, W]`` -> its two
    feature layers. One subclass per configuration (torch-fidelity registers classes)."""

    CONFIG: SmallCNNConfig  # set by each subclass

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None or not Path(
                feature_extractor_weights_path).is_file():
            # Never train inside torch-fidelity: weights must be made explicitly, then reused.
            raise FileNotFoundError(
                f"{name} weights not found at {feature_extractor_weights_path}; create them "
                f"with cdrl.eval.small_cnn.ensure_weights(path, "
                f"config=CNN_CONFIGS[{self.CONFIG.extractor!r}])")
        self.net = load_cnn(feature_extractor_weights_path, self.CONFIG)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
            raise ValueError(f"expected uint8 [B, C, H, W] images, got {getattr(x, 'shape', x)}")
        feat, logits = self.net(self.CONFIG.preprocess(x))
        out = dict(zip(self.CONFIG.features, (feat, logits), strict=True))
        return tuple(out[name] for name in self.features_list)

    @classmethod
    def get_provided_features_list(cls):
        return cls.CONFIG.features

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        feat, logits = cls.CONFIG.features
        return {"fid": feat, "kid": feat, "prc": feat, "isc": logits}[metric]

    @staticmethod
    def can_be_compiled():
        return False  # compiling costs far more than these networks' whole run

    @classmethod
    def get_dummy_input_for_compile(cls):
        return torch.zeros(1, 3, cls.CONFIG.size, cls.CONFIG.size, dtype=torch.uint8)


class DigitsFeatureExtractor(SmallCNNExtractor):
    """``digits-cnn``: uint8 ``[B, 3, H, W]`` -> (``digits-64``, ``digits-logits``)."""

    CONFIG = DIGITS


class MnistFeatureExtractor(SmallCNNExtractor):
    """``mnist-cnn``: uint8 ``[B, 3, H, W]`` -> (``mnist-128``, ``mnist-logits``)."""

    CONFIG = MNIST32


class Mnist16FeatureExtractor(SmallCNNExtractor):
    """``mnist16-cnn``: uint8 ``[B, 3, H, W]`` -> (``mnist16-128``, ``mnist16-logits``)."""

    CONFIG = MNIST16


_EXTRACTORS = {cls.CONFIG.name: cls for cls in (DigitsFeatureExtractor, MnistFeatureExtractor,
                                                Mnist16FeatureExtractor)}


def register_once(name: str, cls: type) -> str:
    """Register ``cls`` with torch-fidelity under ``name`` once per process."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, cls)
    return name


def register_extractor(config: SmallCNNConfig) -> str:
    """Register ``config``'s extractor (``digits-cnn``, ``mnist-cnn`` or ``mnist16-cnn``) with
    torch-fidelity once per process; returns its name."""
    return register_once(config.name, _EXTRACTORS[config.name])
