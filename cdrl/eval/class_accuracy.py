"""Class accuracy of class-conditional digit samples: a digit classifier labels each sample, which
is compared with the label it was drawn for (the paper's guidance trade-off, spec 6; FID against
accuracy per guidance weight w).

    cdrl class-accuracy --samples results/samples/cond/seed0/guided-w1.npz --out acc.json \\
        [--classifier digits-cnn|mnist-cnn|mnist16-cnn] [--weights PATH]

The classifiers are the small CNNs of ``cdrl.eval.small_cnn``: ``digits-cnn`` (the default),
trained on the scikit-learn digits on first use in seconds; ``mnist-cnn`` (>= 99 % on the MNIST
test set), trained on first use from the staged MNIST files, and ``mnist16-cnn`` its 16x16
configuration (``mnist16``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

__all__ = ["CLASSIFIERS", "class_accuracy", "add_cli"]

Predictor = Callable[[torch.Tensor], np.ndarray]  # uint8 [N, C, H, W] -> class indices [N]


def _small_cnn(weights: Path, extractor: str) -> tuple[Predictor, dict]:
    from cdrl.eval.small_cnn import CNN_CONFIGS, ensure_weights, predict_labels

    config = CNN_CONFIGS[extractor]
    info = ensure_weights(weights, config=config)
    return lambda x: predict_labels(weights, x, config), info


# Classifier name -> (builder, default weights file): cdrl.eval.small_cnn's configurations, by
# their torch-fidelity names (imported lazily: torch-fidelity is not needed to list them).
CLASSIFIERS: dict[str, tuple[Callable[[Path], tuple[Predictor, dict]], str]] = {
    f"{extractor}-cnn": (partial(_small_cnn, extractor=extractor),
                         f"resources/weights/{extractor}-cnn.pth")
    for extractor in ("digits", "mnist", "mnist16")
}


@torch.no_grad()
def class_accuracy(x_uint8: np.ndarray, labels: np.ndarray, weights: str | Path | None = None,
                   classifier: str = "digits-cnn") -> dict:
    """Fraction of uint8 ``[N, H, W, C]`` digit images ``classifier`` assigns to ``labels``
    (class indices 0..9; rows with label -1, the null label, are skipped)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose one of {sorted(CLASSIFIERS)}")
    build, default = CLASSIFIERS[classifier]
    predict, info = build(Path(weights or default))
    keep = labels >= 0
    x = torch.from_numpy(x_uint8[keep]).permute(0, 3, 1, 2)
    pred = predict(x) if len(x) else np.zeros(0, np.int64)
    target = labels[keep]
    per_class = {int(c): float((pred[target == c] == c).mean()) for c in np.unique(target)}
    return {"class_accuracy": float((pred == target).mean()) if len(x) else None,
            "num": int(keep.sum()), "per_class": per_class,
            "classifier": classifier, "classifier_sha256": info["sha256"],
            "classifier_test_accuracy": info["test_accuracy"]}


def _cmd_class_accuracy(args) -> int:
    from cdrl.io import atomic_write_text

    with np.load(args.samples) as npz:
        meta = json.loads(str(npz["meta"])) if "meta" in npz else None
        if meta and meta.get("diverged") and not len(npz["x"]):  # a diverged run, no weights
            result = {"class_accuracy": None, "num": 0, "per_class": {},
                      "classifier": args.classifier, "diverged": True,
                      "reason": meta.get("reason", "the run diverged: no images")}
        elif "labels" not in npz:
            raise SystemExit(f"{args.samples}: no 'labels' array; sample with --labels")
        else:
            result = class_accuracy(npz["x_uint8"], npz["labels"], args.weights, args.classifier)
        result["meta"] = meta
    result["samples"] = args.samples
    atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("class_accuracy", "num")}))
    return 0


def add_cli(subparsers) -> None:
    """Register ``cdrl class-accuracy``, and ``cdrl attribute-classifier`` (the CelebA attribute
    CNN of ``cdrl.eval.attributes``, the classifier behind the composition metric) beside it;
    a second call adds nothing."""
    from cdrl.eval import attributes

    attributes.add_cli(subparsers)
    if "class-accuracy" in subparsers.choices:
        return
    a = subparsers.add_parser("class-accuracy",
                              help="digits classifier accuracy of class-conditional samples")
    a.add_argument("--samples", required=True, help=".npz from cdrl sample --labels (x_uint8)")
    a.add_argument("--out", required=True, help="JSON: class_accuracy, num, per_class, meta")
    a.add_argument("--classifier", choices=sorted(CLASSIFIERS), default="digits-cnn",
                   help="digits-cnn (scikit-learn digits), mnist-cnn or mnist16-cnn (MNIST at "
                        "32 or 16 px, needs it staged)")
    a.add_argument("--weights", default=None,
                   help="classifier weights (default: resources/weights/<classifier>.pth)")
    a.set_defaults(func=_cmd_class_accuracy)
