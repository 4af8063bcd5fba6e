"""The torch-fidelity wrapper shared by the domain classifiers (digits CNN, MNIST CNN): cached
weights in, ``(features, logits)`` out, for FID/KID/precision-recall (features) and Inception
Score or class accuracy (logits).

A subclass names its two feature layers, its input size, how to load its network and how to turn
torch-fidelity's uint8 ``[B, 3, H, W]`` into the network's input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

__all__ = ["SmallCNNExtractor", "register_once"]


class SmallCNNExtractor(FeatureExtractorBase):
    FEATURES: tuple[str, str] = ("", "")  # (features for FID/KID/PRC, logits for IS)
    SIZE = 32
    WEIGHTS_HINT = ""                     # how to create missing weights

    @classmethod
    def load_net(cls, path: str | Path) -> torch.nn.Module:
        raise NotImplementedError

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None or not Path(
                feature_extractor_weights_path).is_file():
            # Never train inside torch-fidelity: weights must be made explicitly, then reused.
            raise FileNotFoundError(f"{name} weights not found at "
                                    f"{feature_extractor_weights_path}; {self.WEIGHTS_HINT}")
        self.net = self.load_net(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
            raise ValueError(f"expected uint8 [B, C, H, W] images, got {getattr(x, 'shape', x)}")
        feat, logits = self.net(self.preprocess(x))
        out = dict(zip(self.FEATURES, (feat, logits), strict=True))
        return tuple(out[name] for name in self.features_list)

    @classmethod
    def get_provided_features_list(cls):
        return cls.FEATURES

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        feat, logits = cls.FEATURES
        return {"fid": feat, "kid": feat, "prc": feat, "isc": logits}[metric]

    @staticmethod
    def can_be_compiled():
        return False  # compiling costs far more than these networks' whole run

    @classmethod
    def get_dummy_input_for_compile(cls):
        return torch.zeros(1, 3, cls.SIZE, cls.SIZE, dtype=torch.uint8)


def register_once(name: str, cls: type) -> str:
    """Register ``cls`` with torch-fidelity under ``name`` once per process."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, cls)
    return name
