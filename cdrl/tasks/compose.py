"""Compositional generation with attribute-conditional CDRL (spec 6.2).

    cdrl train --config workflow/config/experiments/compose_toy.yaml --run-dir runs/compose_toy
    cdrl compose --run-dir runs/compose_toy --conditions right,upper --guidance 3 --num 2000 \
        --out compose.npz --figure compose.png
    cdrl compose-score --samples compose.npz --out compose.json \
        [--attribute-classifier results/classifiers/celeba64-attributes.pth]

The paper's Eq. 11 was NOT FOUND; we use the spec's reconstruction, a product of experts with
classifier-free guidance, in every Langevin step, the Tweedie step and the initializer mean
(``cdrl.core.guidance.Guide.compose``)::

    F_comp(y) = F(y, null) + (1 + w) sum_k [F(y, c_k) - F(y, null)]

Conditions are named attributes of ``data.condition_attributes`` (``~name`` for value 0). Besides
the composition, the command samples each single condition (CFG with the same w) and the
unconditional model (null label) from the same per-image noise, for comparison.

Metrics (``cdrl compose-score``, a step of its own in the workflow; ``cdrl compose --metrics``
does both at once), per setting: the fraction of samples that carry each condition and that carry
all of them (``frac_intersection``, the number composition should raise; claim C9). On the 2-D
quadrants toy a condition is a half-plane. On CelebA 64 (Male, Smiling, Young at w = 3, as in the
paper, whose evaluation is qualitative) a sample carries an attribute when the attribute CNN of
``cdrl.eval.attributes``, trained on CelebA's own labels, says so (probability >= 0.5); the JSON
names that classifier and its held-out accuracy per attribute. Without a classifier an image
result has no fractions: the samples and the figure (one row per setting) only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cdrl.core.guidance import Guide, parse_condition
from cdrl.core.sampler import PerImageNoise
from cdrl.eval.attribute_files import split_condition
from cdrl.io import atomic_savefig, atomic_savez, atomic_write_text

__all__ = ["compose_samples", "quadrant_fractions", "score_settings", "add_cli"]


def compose_samples(method, guide_fn, num: int, seed: int, batch: int) -> torch.Tensor:
    """``num`` samples, image i from its own noise stream ``(seed, i)``; ``guide_fn(n)`` gives
    the guide of a batch of n."""
    out = []
    for lo in range(0, num, batch):
        idx = range(lo, min(lo + batch, num))
        gen = PerImageNoise(seed, idx, method.device)
        out.append(method.sample(len(idx), generator=gen,
                                 guide=guide_fn(len(idx)).to(method.device)).cpu())
    return torch.cat(out)


def _label(n: int, c: int) -> torch.Tensor:
    return torch.full((n,), c, dtype=torch.long)


def settings(conditions: list[str], data_cfg, w: float) -> dict:
    """Setting name -> guide factory: the composition, each condition alone, unconditional."""
    labels = [parse_condition(c, data_cfg) for c in conditions]
    out = {"composed": lambda n: Guide.compose([_label(n, c) for c in labels], w)}
    for name, c in zip(conditions, labels, strict=True):
        out[name] = lambda n, c=c: Guide.cfg(_label(n, c), w)
    out["unconditional"] = lambda n: Guide.single(_label(n, 0))
    return out


def quadrant_fractions(x: torch.Tensor, conditions: list[str]) -> dict:
    """Quadrants toy: the fraction of points in each condition's half-plane and in all."""
    axis = {"right": 0, "upper": 1}
    inside = []
    out = {}
    for cond in conditions:
        name, value = split_condition(cond)
        hit = (torch.as_tensor(x)[:, axis[name]] > 0) == bool(value)
        inside.append(hit)
        out[f"frac_{cond}"] = float(hit.float().mean())
    out["frac_intersection"] = float(torch.stack(inside).all(0).float().mean())
    return out


def _figure(path: Path, samples: dict[str, torch.Tensor], num: int = 8) -> None:
    import matplotlib
    from torchvision.utils import make_grid

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two_d = next(iter(samples.values())).dim() == 2
    n = len(samples)
    fig, axes = plt.subplots(1 if two_d else n, n if two_d else 1,
                             figsize=(3 * n, 3) if two_d else (1.2 * num, 1.3 * n), squeeze=False)
    for ax, (name, x) in zip(axes.flat, samples.items(), strict=True):
        if two_d:
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
            ax.set_xlim(-5, 5)
            ax.set_ylim(-5, 5)
            ax.axhline(0, color="k", lw=0.5)
            ax.axvline(0, color="k", lw=0.5)
            ax.set_aspect("equal")
        else:
            # One row of images in [-1, 1], shown as [0, 1] RGB (grey repeated).
            grid = make_grid(x[:num], nrow=num, padding=0, normalize=True, value_range=(-1, 1))
            ax.imshow(grid.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def score_settings(samples: dict, conditions: list[str], classifier: str | Path | None = None,
                   device: str = "cpu") -> tuple[dict | None, dict | None]:
    """``(settings, classifier info)``: per setting the ``frac_<condition>`` and
    ``frac_intersection`` fractions. 2-D points are the quadrants toy (no classifier); images
    need ``classifier`` (the attribute CNN's weights), else ``(None, None)``: no metric."""
    first = np.asarray(next(iter(samples.values())))
    if first.ndim == 2:
        return {k: quadrant_fractions(v, conditions) for k, v in samples.items()}, None
    if classifier is None:
        return None, None
    from cdrl.eval.attributes import (
        attribute_fractions,
        classifier_summary,
        load_attribute_classifier,
        predict_attributes,
    )
    from cdrl.eval.evaluate import to_uint8_nchw

    info = classifier_summary(classifier)
    net, names = load_attribute_classifier(classifier)
    out = {}
    for name, x in samples.items():
        # The rounding `cdrl evaluate` applies: float [-1, 1] -> uint8, clamped.
        present = predict_attributes(net, to_uint8_nchw(np.asarray(x)), device)
        out[name] = attribute_fractions(present, names, conditions)
    return out, info


def _with_scores(result: dict, scores: dict | None, info: dict | None) -> dict:
    """``result`` with ``settings`` (the fractions) and ``classifier`` where there are some."""
    return {**result, **({"settings": scores} if scores is not None else {}),
            **({"classifier": info} if info is not None else {})}


def _write_result(path: Path, result: dict) -> None:
    atomic_write_text(Path(path), json.dumps(result, indent=1))


def _cmd_compose(args) -> int:
    from cdrl.train.trainer import load_run

    cfg, method, state = load_run(Path(args.run_dir), args.device)
    if not cfg.data.conditional:
        raise SystemExit(f"{args.run_dir}: not a conditional run (data.conditional)")
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    w = cfg.sample.guidance if args.guidance is None else args.guidance
    batch = args.batch_size or cfg.sample.batch_size
    samples = {name: compose_samples(method, fn, args.num, args.seed, batch)
               for name, fn in settings(conditions, cfg.data, w).items()}
    result = {"conditions": conditions, "guidance": w, "num": args.num, "seed": args.seed,
              "dataset": cfg.data.name, "iteration": int(state["iteration"]),
              "run_dir": args.run_dir,
              "formula": "F(y, null) + (1 + w) sum_k [F(y, c_k) - F(y, null)] (Eq. 11 not "
                         "found; spec 6.2 reconstruction), same weights on the initializer mean"}
    atomic_savez(Path(args.out), **{k: v.numpy() for k, v in samples.items()},
                 meta=np.array(json.dumps(result)))
    if args.metrics:
        scores, info = score_settings({k: v.numpy() for k, v in samples.items()}, conditions,
                                      args.attribute_classifier)
        result = _with_scores(result, scores, info)
        _write_result(Path(args.metrics), result)
    if args.figure:
        _figure(Path(args.figure), samples)
    print(json.dumps(result.get("settings", result)))
    return 0


def _cmd_compose_score(args) -> int:
    path = Path(args.samples)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sample file; draw it with cdrl compose --out")
    with np.load(path, allow_pickle=False) as npz:
        if "meta" not in npz:
            raise ValueError(f"{path}: no 'meta' array; not written by cdrl compose")
        result = json.loads(str(npz["meta"]))
        samples = {k: npz[k] for k in npz.files if k != "meta"}
    scores, info = score_settings(samples, result["conditions"], args.attribute_classifier)
    result = _with_scores({**result, "samples": str(path)}, scores, info)
    _write_result(Path(args.out), result)
    print(json.dumps(result.get("settings", {"settings": None})))
    return 0


def add_cli(subparsers) -> None:
    """Register ``cdrl compose`` and ``cdrl compose-score`` (once: a second call adds nothing)."""
    if "compose" not in subparsers.choices:
        _add_compose(subparsers)
    if "compose-score" not in subparsers.choices:
        s = subparsers.add_parser("compose-score", help="fractions of composed samples that "
                                                        "carry each condition and all of them")
        s.add_argument("--samples", required=True, help=".npz written by cdrl compose --out")
        s.add_argument("--out", required=True, help="JSON: the sample file's settings and "
                                                    "per setting the fractions")
        s.add_argument("--attribute-classifier", default=None,
                       help="images: the attribute CNN's weights (cdrl attribute-classifier); "
                            "not needed for the 2-D toy")
        s.set_defaults(func=_cmd_compose_score)


def _add_compose(subparsers) -> None:
    p = subparsers.add_parser("compose", help="compose attribute conditions (product of experts)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--conditions", required=True,
                   help="comma list of attributes of data.condition_attributes (~ for value 0)")
    p.add_argument("--guidance", type=float, default=None, help="w (default: sample.guidance)")
    p.add_argument("--num", type=int, default=1000, help="samples per setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", required=True, help=".npz: one array per setting (composed, each "
                                                 "condition, unconditional) and meta")
    p.add_argument("--metrics", default=None,
                   help="JSON: the settings and, scored at once as cdrl compose-score does, the "
                        "fractions per setting")
    p.add_argument("--attribute-classifier", default=None,
                   help="images with --metrics: the attribute CNN's weights")
    p.add_argument("--figure", default=None, help="PNG: one panel per setting")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_compose)
