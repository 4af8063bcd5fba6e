"""A domain feature extractor and classifier for MNIST: a small CNN trained on MNIST train.

    from cdrl.eval.mnist_features import ensure_mnist_weights, register_mnist_extractor

FID with Inception features says little about 32x32 grey digits and costs minutes per 10k images
on the project's CPUs; the usual companion for MNIST is a classifier trained on MNIST itself.
``MnistCNN`` (three 3x3 conv + batch norm + ReLU + 2x2 max-pool stages, 16/32/64 channels,
32 -> 16 -> 8 -> 4, then a 128-d ReLU layer and 10 logits; 0.16 M parameters) is trained once on
the 60,000 MNIST train images (``load_image_dataset('mnist')``, staged by
``scripts/stage_mnist.py``): seeded, one CPU thread, Adam with a cosine-decayed learning rate,
3 epochs. It must reach 99 % on the 10,000 test images before it is cached to a given path with
a JSON sidecar (sha256, test accuracy, seed, data hashes, training time). It is registered with
torch-fidelity as ``mnist-cnn``, providing ``mnist-128`` (the penultimate layer, for FID, KID and
precision/recall) and ``mnist-logits`` (for Inception Score and class accuracy).

Inputs are what torch-fidelity supplies: uint8 ``[B, 3, H, W]``. They become grey (channel mean)
in [0, 1]; 28x28 images are zero-padded to 32x32 exactly as the ``mnist`` dataset pads them, other
sizes are resized bilinearly. Training images go through the very same function.

A second configuration, ``mnist16-cnn`` (``MNIST16``), is the same network trained on ``mnist16``
(MNIST area-resized to 16x16, the resolution the MNIST preset trains at): 16 -> 8 -> 4 -> 2, so
the feature layer sees 64 x 2 x 2. A model judged at 16x16 is so judged by a classifier that has
seen 16x16 digits, not by the 32x32 one fed bilinear upsamplings (which classifies only 87 % of
real 16x16 images with p >= 0.9). Its inputs of another size are area-resized as the dataset is.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cdrl.data.images import content_hash, load_image_dataset
from cdrl.eval.inception_weights import sha256_file, sidecar_path
from cdrl.eval.small_cnn import SmallCNNExtractor, register_once
from cdrl.io import atomic_torch_save, atomic_write_text

__all__ = ["EXTRACTOR_NAME", "DEFAULT_WEIGHTS", "MNIST32", "MNIST16", "CNN_CONFIGS", "MnistCNN",
           "MnistCNNConfig", "MnistFeatureExtractor", "Mnist16FeatureExtractor",
           "ensure_mnist_weights", "load_mnist_cnn", "predict_labels", "predict_proba",
           "register_mnist_extractor", "to_grey32", "to_grey", "train_mnist"]

EXTRACTOR_NAME = "mnist-cnn"
DEFAULT_WEIGHTS = Path("resources/weights/mnist-cnn.pth")
DATA_ROOT_ENV = "CDRL_DATA_ROOT"        # the datasets root, as for `cdrl evaluate --reference`
SIZE = 32
FEATURES = ("mnist-128", "mnist-logits")


@dataclass(frozen=True)
class MnistCNNConfig:
    """One configuration of the MNIST CNN: its input size, training set, names and weights."""

    name: str                      # torch-fidelity extractor name
    size: int                      # input side (a multiple of 8: three 2x2 pools)
    dataset: str                   # training and test set (cdrl.data.images)
    features: tuple[str, str]      # (feature layer, logits) names for torch-fidelity
    weights: Path                  # default cache file
    min_accuracy: float            # test accuracy below which the weights are not cached


MNIST32 = MnistCNNConfig(EXTRACTOR_NAME, SIZE, "mnist", FEATURES, DEFAULT_WEIGHTS, 0.99)
# 16x16 keeps less of each digit; 98.5 % leaves room for that while still failing a broken run.
MNIST16 = MnistCNNConfig("mnist16-cnn", 16, "mnist16", ("mnist16-128", "mnist16-logits"),
                         Path("resources/weights/mnist16-cnn.pth"), 0.985)
CNN_CONFIGS = {c.dataset: c for c in (MNIST32, MNIST16)}


def to_grey(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float ``[B, 1, size, size]`` in [0, 1]. For 32: 28x28 is
    zero-padded (as the ``mnist`` dataset is), other sizes resized bilinearly; for 16: other
    sizes are area-resized (as the ``mnist16`` dataset is)."""
    x = x.float().mean(dim=1, keepdim=True) / 255.0
    if x.shape[-2:] == (size, size):
        return x
    if size == 32 and x.shape[-2:] == (28, 28):
        return F.pad(x, (2, 2, 2, 2))
    if size < 32:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > size or x.shape[-2] > size)


def to_grey32(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float ``[B, 1, 32, 32]`` in [0, 1] (28x28 zero-padded)."""
    return to_grey(x, SIZE)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(), nn.MaxPool2d(2))


class MnistCNN(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4, or 16 -> ... -> 2), a 128-d feature layer and 10
    logits."""

    def __init__(self, width: int = 16, features: int = 128, size: int = SIZE):
        super().__init__()
        self.convs = nn.Sequential(_stage(1, width), _stage(width, 2 * width),
                                   _stage(2 * width, 4 * width))
        self.fc1 = nn.Linear(4 * width * (size // 8) ** 2, features)
        self.fc2 = nn.Linear(features, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = F.relu(self.fc1(self.convs(x).flatten(1)))
        return feat, self.fc2(feat)


@torch.no_grad()
def _predict(model: MnistCNN, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Argmax classes in batches (a 10k batch would hold ~0.7 GB of activations)."""
    if not len(x):
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([model(xb)[1].argmax(1) for xb in x.split(batch)])


def train_mnist(train, test, seed: int = 0, epochs: int = 3, batch: int = 64, lr: float = 2e-3,
                threads: int = 1, size: int = SIZE) -> tuple[MnistCNN, dict]:
    """Train ``MnistCNN`` on ``train`` (an ``ImageSet``), deterministically; test accuracy too.

    The intra-op thread count is pinned (CPU kernels split reductions by thread count, so the
    same seed gives the same bytes only at the same count); 1 by default, as for the digits CNN."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.enable_grad():  # callers may sit under no_grad (first use inside scoring)
            return _train(train, test, seed, epochs, batch, lr, threads, size)
    finally:
        torch.set_num_threads(before)


def _train(train, test, seed, epochs, batch, lr, threads, size) -> tuple[MnistCNN, dict]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x, y = to_grey(train.images, size), train.labels
    model = MnistCNN(size=size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(y) / batch)
    # Cosine decay to 0: the last steps at a small rate are what lift accuracy past 99 %.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i
                                                                                   / steps)))
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = F.cross_entropy(model(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    pred = _predict(model, to_grey(test.images, size))
    target = test.labels
    per_class = [float((pred[target == c] == c).float().mean()) if (target == c).any() else None
                 for c in range(10)]
    info = {"size": size, "seed": seed, "epochs": epochs, "batch": batch, "lr": lr, "lr_decay": "cosine to 0",
            "threads": threads, "test_accuracy": float((pred == target).float().mean()),
            "test_accuracy_per_class": per_class, "n_train": len(y), "n_test": len(target),
            "train_seconds": round(time.perf_counter() - t0, 2)}
    return model, info


def _data_root(data_root) -> Path:
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "resources/datasets")


def ensure_mnist_weights(path: Path | None = None, data_root: str | Path | None = None,
                         min_accuracy: float | None = None, config: MnistCNNConfig = MNIST32,
                         **train_kwargs) -> dict:
    """Train ``config`` once into ``path`` (default ``config.weights``, plus ``path.json``);
    afterwards only check its sha256.

    Training reads MNIST from ``data_root`` (default ``$CDRL_DATA_ROOT`` or resources/datasets;
    a ``DatasetError`` says how to stage it). A network below ``min_accuracy`` (default the
    config's) on the test set is not cached: the run fails instead of reporting metrics from a
    weak classifier."""
    path = Path(path or config.weights)
    min_accuracy = config.min_accuracy if min_accuracy is None else min_accuracy
    sidecar = sidecar_path(path)
    if path.is_file() and sidecar.is_file():
        info = json.loads(sidecar.read_text())
        if info["sha256"] != sha256_file(path):
            raise ValueError(f"{path}: sha256 differs from {sidecar}; delete both to retrain")
        return info
    root = _data_root(data_root)
    train = load_image_dataset(config.dataset, root, "train")
    test = load_image_dataset(config.dataset, root, "test")
    model, info = train_mnist(train, test, size=config.size, **train_kwargs)
    if info["test_accuracy"] < min_accuracy:
        raise RuntimeError(f"{config.name} reached {info['test_accuracy']:.4f} test accuracy, below "
                           f"{min_accuracy}; not cached to {path}")
    atomic_torch_save(model.state_dict(), path)
    described = {"mnist": "mnist (32x32, zero-padded)", "mnist16": "mnist16 (16x16, area)"}
    info = {"file": path.name, "sha256": sha256_file(path), "extractor": config.name,
            "data": {"dataset": described[config.dataset], "source": train.source,
                     "train_content_hash": content_hash(train),
                     "test_content_hash": content_hash(test)},
            "torch": torch.__version__, **info}
    atomic_write_text(sidecar, json.dumps(info, indent=1) + "\n")
    return info


def load_mnist_cnn(path: Path, size: int = SIZE) -> MnistCNN:
    """The cached network in eval mode (state dict read with ``weights_only=True``)."""
    net = MnistCNN(size=size)
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return net.eval().requires_grad_(False)


class MnistFeatureExtractor(SmallCNNExtractor):
    """torch-fidelity wrapper: uint8 ``[B, 3, H, W]`` -> (``mnist-128``, ``mnist-logits``)."""

    FEATURES = FEATURES
    SIZE = SIZE
    WEIGHTS_HINT = "create them with cdrl.eval.mnist_features.ensure_mnist_weights(path)"

    @classmethod
    def load_net(cls, path):
        return load_mnist_cnn(path)

    @staticmethod
    def preprocess(x):
        return to_grey32(x)


class Mnist16FeatureExtractor(SmallCNNExtractor):
    """torch-fidelity wrapper of ``MNIST16``: uint8 ``[B, 3, H, W]`` -> (``mnist16-128``,
    ``mnist16-logits``)."""

    FEATURES = MNIST16.features
    SIZE = MNIST16.size
    WEIGHTS_HINT = ("create them with cdrl.eval.mnist_features.ensure_mnist_weights(path, "
                    "config=MNIST16)")

    @classmethod
    def load_net(cls, path):
        return load_mnist_cnn(path, MNIST16.size)

    @staticmethod
    def preprocess(x):
        return to_grey(x, MNIST16.size)


_EXTRACTORS = {MNIST32.name: MnistFeatureExtractor, MNIST16.name: Mnist16FeatureExtractor}


def register_mnist_extractor(config: MnistCNNConfig = MNIST32) -> str:
    """Register ``config``'s extractor (``mnist-cnn`` or ``mnist16-cnn``) with torch-fidelity
    once per process."""
    return register_once(config.name, _EXTRACTORS[config.name])


@torch.no_grad()
def predict_proba(path: Path, x_uint8: np.ndarray | torch.Tensor,
                  config: MnistCNNConfig = MNIST32, batch: int = 1000) -> np.ndarray:
    """Softmax class probabilities ``[N, 10]`` of the cached network for uint8 images."""
    net = load_mnist_cnn(path, config.size)
    x = to_grey(torch.as_tensor(x_uint8), config.size)
    if not len(x):
        return np.zeros((0, 10), dtype=np.float32)
    return torch.cat([net(xb)[1].softmax(1) for xb in x.split(batch)]).numpy()


def predict_labels(path: Path, x_uint8: np.ndarray | torch.Tensor,
                   config: MnistCNNConfig = MNIST32) -> np.ndarray:
    """Class predictions of the cached network for uint8 ``[N, C, H, W]`` images."""
    net = load_mnist_cnn(path, config.size)
    return _predict(net, to_grey(torch.as_tensor(x_uint8), config.size)).numpy()
