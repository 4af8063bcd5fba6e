"""A binary-attribute classifier for CelebA 64, trained in the workflow on the dataset's own
attribute labels: the number behind claim C9 (composed conditions hold jointly more often than
each condition alone; spec 6.2 calls the paper's evaluation "qualitative only").

    cdrl attribute-classifier --dataset celeba64 --root resources/datasets \\
        --attributes Male,Smiling,Young --out results/classifiers/celeba64-attributes.pth

``AttributeCNN`` sees uint8 ``[B, 3, 64, 64]`` images as ``x / 127.5 - 1`` (the range the EBMs
train on) through four stages of 3x3 conv + batch norm + ReLU + 2x2 max-pool (64 -> 32 -> 16 ->
8 -> 4; widths w, 2w, 4w, 8w with w = 32), a global average pool and one logit per attribute
(0.39 M parameters). It is trained with binary cross-entropy on the ``train`` split, all
attributes at once, and scored on the held-out ``val`` split: per attribute its accuracy beside
the share of positives (a classifier that always says the majority value reaches
``max(rate, 1 - rate)``), and the same for "all attributes at once", the quantity C9 counts.

CHOICES (the spec has no classifier; none of this is the paper's):
- the attributes are those the preset composes (``downstream.compose.conditions``, ``~`` or
  ``not-`` dropped), not all 40: a small network with one head per attribute it is used for;
- 5 epochs of Adam (lr 1e-3, cosine-decayed to 0, batch 256) with random horizontal flips (a
  mirror changes none of the composed attributes); seeded; on a GPU when there is one, else on
  one CPU thread (``--threads``);
- a sample "carries" attribute a when ``sigmoid(logit_a) >= 0.5`` (``~a``: below 0.5);
- no accuracy gate: the held-out accuracies go into the JSON sidecar and into every composition
  result, so that a weak classifier is seen beside the fractions it produced (a gate would also
  stop the rehearsal, whose fake CelebA images are noise). ``--min-accuracy`` sets one by hand.

The weights file holds the state dict with the attribute names and the network's width (read
back with ``torch.load(weights_only=True)``); ``<file>.json`` holds the provenance: sha256,
data, settings, held-out accuracies, training time.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cdrl.eval.attribute_files import condition_attributes, split_condition
from cdrl.io import atomic_torch_save, atomic_write_text, sha256_file

__all__ = ["AttributeCNN", "SIZE", "THRESHOLD", "HELDOUT_SPLIT", "split_condition",
           "condition_attributes", "to_input", "train_attribute_classifier",
           "save_attribute_classifier", "load_attribute_classifier", "predict_attributes",
           "attribute_fractions", "classifier_summary", "add_cli"]

SIZE = 64
THRESHOLD = 0.5                 # sigmoid probability at or above which an attribute is present
HELDOUT_SPLIT = "val"           # CelebA's validation split; the test split stays untouched
FORMAT = 1                      # of the weights file's dict


def to_input(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, 64, 64]`` -> float in [-1, 1]; another shape is an error naming it."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4 or tuple(x_uint8.shape[1:]) != (
            3, SIZE, SIZE):
        raise ValueError(f"the attribute classifier takes uint8 [N, 3, {SIZE}, {SIZE}] images, "
                         f"got {x_uint8.dtype} {list(x_uint8.shape)}")
    return x_uint8.float() / 127.5 - 1


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(), nn.MaxPool2d(2))


class AttributeCNN(nn.Module):
    """Four conv stages (64 -> 4), global average pool, one logit per attribute."""

    def __init__(self, num_attributes: int, width: int = 32):
        super().__init__()
        self.convs = nn.Sequential(_stage(3, width), _stage(width, 2 * width),
                                   _stage(2 * width, 4 * width), _stage(4 * width, 8 * width))
        self.head = nn.Linear(8 * width, num_attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).mean(dim=(2, 3)))


def _columns(data, attributes: list[str]) -> torch.Tensor:
    """0/1 float ``[N, A]`` of ``attributes`` from an ``ImageSet`` with attribute labels."""
    names = list(getattr(data, "attribute_names", ()) or ())
    if data.attributes is None or not names:
        raise ValueError(f"dataset {data.name!r} has no attribute labels; the attribute "
                         "classifier needs one with them (celeba64)")
    unknown = [a for a in attributes if a not in names]
    if unknown:
        raise ValueError(f"unknown attributes {unknown} for {data.name}; choose from {names}")
    return data.attributes[:, [names.index(a) for a in attributes]].float()


@torch.no_grad()
def _probabilities(net: AttributeCNN, x_uint8: torch.Tensor, device, batch: int = 500
                   ) -> torch.Tensor:
    if not len(x_uint8):
        return torch.zeros(0, net.head.out_features)
    return torch.cat([torch.sigmoid(net(to_input(xb.to(device)))).cpu()
                      for xb in x_uint8.split(batch)])


def _rates(pred: torch.Tensor, target: torch.Tensor) -> dict:
    rate = float(target.float().mean())
    return {"accuracy": float((pred == target).float().mean()), "positive_rate": rate,
            "majority_rate": max(rate, 1 - rate), "predicted_rate": float(pred.float().mean())}


def heldout_scores(net: AttributeCNN, heldout, attributes: list[str], device) -> dict:
    """Per attribute and for all at once: accuracy, share of positives, majority rate."""
    target = _columns(heldout, attributes).bool()
    pred = _probabilities(net, heldout.images, device) >= THRESHOLD
    per = {a: _rates(pred[:, j], target[:, j]) for j, a in enumerate(attributes)}
    return {"split": heldout.split, "n": len(heldout), "per_attribute": per,
            "all": _rates(pred.all(1), target.all(1))}


def _log(msg: str) -> None:
    print(f"cdrl attribute-classifier: {msg}", file=sys.stderr, flush=True)


def train_attribute_classifier(train, heldout, attributes: list[str], epochs: int = 5,
                               batch: int = 256, lr: float = 1e-3, width: int = 32,
                               seed: int = 0, device: str | torch.device | None = None,
                               threads: int = 1) -> tuple[AttributeCNN, dict]:
    """Train ``AttributeCNN`` on ``train`` (an ``ImageSet`` with attributes) and score it on
    ``heldout``. Seeded: the same data, seed and device give the same weights. On the CPU the
    intra-op threads are pinned to ``threads`` (as for the digits and MNIST CNNs: CPU kernels
    split reductions by thread count, and a small network gains nothing from more)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        net, info = _train(train, heldout, attributes, epochs, batch, lr, width, seed, device)
    finally:
        torch.set_num_threads(before)
    return net, {**info, "threads": threads if device.type == "cpu" else None}


def _train(train, heldout, attributes, epochs, batch, lr, width, seed, device
           ) -> tuple[AttributeCNN, dict]:
    t0 = time.perf_counter()
    y = _columns(train, attributes)
    torch.manual_seed(seed)
    net = AttributeCNN(len(attributes), width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    gen = torch.Generator().manual_seed(seed + 1)
    net.train()
    with torch.enable_grad():  # callers may sit under no_grad
        for epoch in range(epochs):
            total, seen = 0.0, 0
            for idx in torch.randperm(len(y), generator=gen).split(batch):
                x = to_input(train.images[idx].to(device))
                mirror = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
                loss = F.binary_cross_entropy_with_logits(net(x), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total, seen = total + loss.item() * len(idx), seen + len(idx)
            _log(f"epoch {epoch + 1}/{epochs}: loss {total / max(seen, 1):.4f}, "
                 f"{time.perf_counter() - t0:.0f} s")
    net.eval()
    scores = heldout_scores(net, heldout, attributes, device)
    info = {"attributes": list(attributes), "width": width, "epochs": epochs, "batch": batch,
            "lr": lr, "lr_decay": "cosine to 0", "augment": "random horizontal flip",
            "seed": seed, "device": str(device), "threshold": THRESHOLD,
            "n_train": len(y), "train_split": train.split, "heldout": scores,
            "train_seconds": round(time.perf_counter() - t0, 2)}
    return net.cpu(), info


def save_attribute_classifier(net: AttributeCNN, info: dict, path: Path, extra: dict
                              ) -> dict:
    """The weights file (state dict, attribute names, width) and its ``.json`` sidecar."""
    from cdrl.eval.inception_weights import sidecar_path

    path = Path(path)
    atomic_torch_save({"format": FORMAT, "attributes": list(info["attributes"]),
                       "width": int(info["width"]), "size": SIZE,
                       "state_dict": net.state_dict()}, path)
    info = {"file": path.name, "sha256": sha256_file(path), "network": "AttributeCNN",
            "torch": torch.__version__, **extra, **info}
    atomic_write_text(sidecar_path(path), json.dumps(info, indent=1) + "\n")
    return info


def load_attribute_classifier(path: str | Path) -> tuple[AttributeCNN, list[str]]:
    """The network in eval mode and its attribute names (read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute classifier not found at {path}; train it with "
                                "cdrl attribute-classifier (rule attribute_classifier)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state_dict" not in blob:
        raise ValueError(f"{path} is not an attribute classifier written by cdrl "
                         "attribute-classifier; train it again")
    net = AttributeCNN(len(blob["attributes"]), int(blob["width"]))
    net.load_state_dict(blob["state_dict"])
    return net.eval().requires_grad_(False), list(blob["attributes"])


def predict_attributes(net: AttributeCNN, x_uint8: np.ndarray | torch.Tensor,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """bool ``[N, A]``: which attributes the classifier sees in each uint8 NCHW image."""
    net = net.to(device)
    return (_probabilities(net, torch.as_tensor(x_uint8), device) >= THRESHOLD).numpy()


def attribute_fractions(present: np.ndarray, attributes: list[str], conditions: list[str]
                        ) -> dict:
    """``frac_<condition>`` (the share of images that carry it) for each condition and
    ``frac_intersection`` (the share that carry all of them), the keys of the quadrants toy's
    ``cdrl.tasks.compose.quadrant_fractions``. ``present``: bool ``[N, A]`` over ``attributes``."""
    present = np.asarray(present, dtype=bool)
    hits, out = [], {}
    for cond in conditions:
        name, value = split_condition(cond)
        if name not in attributes:
            raise ValueError(f"condition {cond!r}: the classifier knows only {attributes}; "
                             "train it with --attributes naming every composed condition")
        hit = present[:, attributes.index(name)] == bool(value)
        hits.append(hit)
        out[f"frac_{cond}"] = float(hit.mean()) if len(hit) else None
    joint = np.logical_and.reduce(hits) if hits else np.zeros(0, bool)
    out["frac_intersection"] = float(joint.mean()) if len(joint) else None
    return out


def classifier_summary(path: str | Path) -> dict:
    """What a composition result says about the classifier that scored it (from the sidecar)."""
    from cdrl.eval.inception_weights import sidecar_path

    path = Path(path)
    info = {"file": str(path), "sha256": sha256_file(path), "threshold": THRESHOLD}
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        side = json.loads(sidecar.read_text())
        if side.get("sha256") != info["sha256"]:
            raise ValueError(f"{path}: sha256 differs from {sidecar}; train the classifier again")
        info.update(attributes=side.get("attributes"), heldout=side.get("heldout"),
                    data=side.get("data"))
    return info


# ---------------------------------------------------------------------------------------------
# Command line: registered by cdrl.eval.class_accuracy.add_cli.

def _cmd_train(args) -> int:
    from cdrl.data.images import content_sha256, load_image_dataset

    attributes = condition_attributes(args.attributes.split(","))
    if not attributes:
        raise SystemExit("--attributes: name at least one attribute, e.g. Male,Smiling,Young")
    _log(f"reading {args.dataset} (train, {args.heldout_split}) from {args.root}")
    train = load_image_dataset(args.dataset, args.root, "train")
    heldout = load_image_dataset(args.dataset, args.root, args.heldout_split)
    _log(f"{len(train)} train and {len(heldout)} held-out images; attributes {attributes}")
    net, info = train_attribute_classifier(train, heldout, attributes, epochs=args.epochs,
                                           batch=args.batch_size, lr=args.lr, width=args.width,
                                           seed=args.seed, device=args.device,
                                           threads=args.threads)
    low = {a: s["accuracy"] for a, s in info["heldout"]["per_attribute"].items()
           if s["accuracy"] < args.min_accuracy}
    if low:
        raise SystemExit(f"held-out accuracy below --min-accuracy {args.min_accuracy}: {low}; "
                         f"not saved to {args.out}")
    extra = {"data": {"dataset": args.dataset, "source": train.source,
                      "train_content_hash": content_sha256(train.images, train.labels,
                                                           train.attributes),
                      "heldout_content_hash": content_sha256(heldout.images, heldout.labels,
                                                             heldout.attributes)}}
    info = save_attribute_classifier(net, info, Path(args.out), extra)
    summary = {a: round(s["accuracy"], 4) for a, s in info["heldout"]["per_attribute"].items()}
    summary["all"] = round(info["heldout"]["all"]["accuracy"], 4)
    print(json.dumps({"heldout_accuracy": summary, "n_heldout": info["heldout"]["n"],
                      "out": args.out}))
    return 0


def add_cli(subparsers) -> None:
    """Register ``cdrl attribute-classifier`` (once: a second call adds nothing)."""
    if "attribute-classifier" in subparsers.choices:
        return
    p = subparsers.add_parser("attribute-classifier",
                              help="train the binary-attribute CNN that scores composition (C9)")
    p.add_argument("--dataset", default="celeba64", help="an image dataset with attributes")
    p.add_argument("--root", default="resources/datasets", help="datasets root")
    p.add_argument("--attributes", required=True,
                   help="comma list, e.g. Male,Smiling,Young (~ or not- prefixes are dropped, "
                        "so the composed conditions can be passed as they are)")
    p.add_argument("--out", required=True,
                   help="weights .pth (and <out>.json: provenance, held-out accuracy)")
    p.add_argument("--heldout-split", default=HELDOUT_SPLIT, help="split scored after training")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=32, help="channels of the first stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-accuracy", type=float, default=0.0,
                   help="refuse to save if an attribute's held-out accuracy is below this")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads on the CPU")
    p.set_defaults(func=_cmd_train)
