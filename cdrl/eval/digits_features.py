"""A fast feature extractor for small grey images: a CNN trained on scikit-learn's digits.

    from cdrl.eval.digits_features import ensure_digits_weights, register_digits_extractor

Inception costs about 4 images/s on the project's CPUs, far too slow for tests and for quick
checks of small grey datasets. ``DigitsCNN`` is trained once (seeded, a few seconds on 2 cores)
on ``sklearn.datasets.load_digits()`` (1797 images of 8x8, 0..16) and cached to a given path with
a JSON sidecar (sha256, test accuracy, seed, training time). It is registered with torch-fidelity
as ``digits-cnn``, providing ``digits-64`` (the 64-d penultimate ReLU layer, for FID, KID and
precision/recall) and ``digits-logits`` (10 classes, for Inception Score).

Inputs are what torch-fidelity supplies: uint8 ``[B, 3, H, W]``. They become grey (channel mean),
scaled to [0, 1] and resized to 16x16 (bilinear, antialiased when shrinking); training images go
through the very same function, so train and evaluation preprocessing cannot drift apart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cdrl.eval.inception_weights import sha256_file, sidecar_path
from cdrl.eval.small_cnn import SmallCNNExtractor, register_once
from cdrl.io import atomic_torch_save, atomic_write_text

__all__ = ["DigitsCNN", "DigitsFeatureExtractor", "EXTRACTOR_NAME", "digits_uint8",
           "ensure_digits_weights", "register_digits_extractor", "to_grey16", "train_digits"]

EXTRACTOR_NAME = "digits-cnn"
SIZE = 16
FEATURES = ("digits-64", "digits-logits")


def to_grey16(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float ``[B, 1, 16, 16]`` in [0, 1]."""
    x = x.float().mean(dim=1, keepdim=True) / 255.0
    if x.shape[-2:] != (SIZE, SIZE):
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > SIZE or x.shape[-2] > SIZE)
    return x


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


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as uint8 ``[1797, 1, 8, 8]`` in 0..255, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return x, d.target.astype(np.int64)


def _split(n: int, seed: int, test_frac: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_frac))
    return perm[n_test:], perm[:n_test]


def train_digits(seed: int = 0, epochs: int = 15, batch: int = 64,
                 lr: float = 3e-3) -> tuple[DigitsCNN, dict]:
    """Train ``DigitsCNN`` deterministically; returns the model and its held-out accuracy.

    One intra-op thread: CPU kernels split reductions by thread count, so 1 and 2 threads gave
    different weights (98.1% vs 98.6%); pinned, the same seed gives the same bytes anywhere the
    kernels match."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():  # callers may sit under no_grad (first use inside scoring)
            return _train(seed, epochs, batch, lr)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, epochs: int, batch: int, lr: float) -> tuple[DigitsCNN, dict]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x_u8, y_np = digits_uint8()
    x, y = to_grey16(torch.from_numpy(x_u8)), torch.from_numpy(y_np)
    train_idx, test_idx = _split(len(y), seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        for idx in train_idx[torch.randperm(len(train_idx), generator=gen)].split(batch):
            loss = F.cross_entropy(model(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test_idx])[1].argmax(1) == y[test_idx]).float().mean().item()
    info = {"seed": seed, "epochs": epochs, "batch": batch, "lr": lr, "test_accuracy": acc,
            "n_train": len(train_idx), "n_test": len(test_idx),
            "train_seconds": round(time.perf_counter() - t0, 2)}
    return model, info


def ensure_digits_weights(path: Path, seed: int = 0) -> dict:
    """Train once into ``path`` (plus ``path.json``); afterwards only check its sha256."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if path.is_file() and sidecar.is_file():
        info = json.loads(sidecar.read_text())
        if info["sha256"] != sha256_file(path):
            raise ValueError(f"{path}: sha256 differs from {sidecar}; delete both to retrain")
        return info
    model, info = train_digits(seed)
    atomic_torch_save(model.state_dict(), path)
    info = {"file": path.name, "sha256": sha256_file(path), "extractor": EXTRACTOR_NAME,
            "data": "sklearn.datasets.load_digits (8x8 -> 16x16 grey)", **info}
    atomic_write_text(sidecar, json.dumps(info, indent=1) + "\n")
    return info


class DigitsFeatureExtractor(SmallCNNExtractor):
    """torch-fidelity wrapper: uint8 ``[B, 3, H, W]`` -> (``digits-64``, ``digits-logits``)."""

    FEATURES = FEATURES
    SIZE = SIZE
    WEIGHTS_HINT = "create them with cdrl.eval.digits_features.ensure_digits_weights(path)"

    @classmethod
    def load_net(cls, path):
        net = DigitsCNN()
        net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        return net

    @staticmethod
    def preprocess(x):
        return to_grey16(x)

def register_digits_extractor() -> str:
    """Register ``digits-cnn`` with torch-fidelity once per process."""
    return register_once(EXTRACTOR_NAME, DigitsFeatureExtractor)
