"""Class accuracy of class-conditional digit samples: the digits CNN of
``cdrl.eval.digits_features`` classifies each sample and is compared with the label it was
drawn for (the paper's guidance trade-off, spec 6; FID against accuracy per guidance weight w).

    cdrl class-accuracy --samples results/samples/cond/seed0/guided-w1.npz --out acc.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["class_accuracy", "add_cli"]


@torch.no_grad()
def class_accuracy(x_uint8: np.ndarray, labels: np.ndarray,
                   weights: str | Path = "resources/weights/digits-cnn.pth") -> dict:
    """Fraction of uint8 ``[N, H, W, C]`` digit images the digits CNN assigns to ``labels``
    (class indices 0..9; rows with label -1, the null label, are skipped)."""
    from cdrl.eval.digits_features import DigitsCNN, ensure_digits_weights, to_grey16

    info = ensure_digits_weights(Path(weights))
    net = DigitsCNN()
    net.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    net.eval()
    keep = labels >= 0
    x = torch.from_numpy(x_uint8[keep]).permute(0, 3, 1, 2)
    pred = net(to_grey16(x))[1].argmax(1).numpy() if len(x) else np.zeros(0, np.int64)
    target = labels[keep]
    per_class = {int(c): float((pred[target == c] == c).mean()) for c in np.unique(target)}
    return {"class_accuracy": float((pred == target).mean()) if len(x) else None,
            "num": int(keep.sum()), "per_class": per_class,
            "classifier": "digits-cnn", "classifier_sha256": info["sha256"],
            "classifier_test_accuracy": info["test_accuracy"]}


def _cmd_class_accuracy(args) -> int:
    from cdrl.io import atomic_write_text

    with np.load(args.samples) as npz:
        if "labels" not in npz:
            raise SystemExit(f"{args.samples}: no 'labels' array; sample with --labels")
        result = class_accuracy(npz["x_uint8"], npz["labels"], args.weights)
        result["meta"] = json.loads(str(npz["meta"])) if "meta" in npz else None
    result["samples"] = args.samples
    atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("class_accuracy", "num")}))
    return 0


def add_cli(subparsers) -> None:
    """Register ``cdrl class-accuracy``."""
    a = subparsers.add_parser("class-accuracy",
                              help="digits classifier accuracy of class-conditional samples")
    a.add_argument("--samples", required=True, help=".npz from cdrl sample --labels (x_uint8)")
    a.add_argument("--out", required=True, help="JSON: class_accuracy, num, per_class, meta")
    a.add_argument("--weights", default="resources/weights/digits-cnn.pth")
    a.set_defaults(func=_cmd_class_accuracy)
