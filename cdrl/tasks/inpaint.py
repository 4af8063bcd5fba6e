"""Image inpainting with a trained CDRL chain (spec 6.3: the method is NOT FOUND; this is ours).

    cdrl inpaint --run-dir results/runs/cdrl_digits --dataset digits16:test \
        --masks center,left,random --num 200 --out-json inpaint.json --figure inpaint.png

Replacement inside the cooperative sampler (a choice, "not from the sources"): with the known
pixels ``M`` of an observed image ``x_obs`` and one noise ``eps`` per image,

- the known pixels of level ``l`` are ``sqrt(alpha_bar_l) x_obs + sigma_bar_l eps`` (the
  shared-noise coupling of spec 4, so consecutive levels agree as in the positive pairs);
- ``x_T`` is ``N(0, I)`` off the mask and the level-T known pixels on it;
- for ``i = T..1``: the initializer proposal, then after it and after every one of the K Langevin
  steps (spec 2.4, in y-space) the known pixels are reset to ``sqrt(m_i)`` times their level
  ``i-1`` values, so the chain only moves the unknown pixels;
- the Tweedie step (if the run uses one), then the known pixels are set to ``x_obs`` exactly.

Conditional runs inpaint with the null label. Masks (1 = known): ``center`` (the centre square of
half the side missing), ``left`` (left half missing), ``random`` (each pixel missing with
probability 1/2, seeded per image by ``(seed, i)``). Metrics on the missing pixels: MSE and PSNR
(data range [-1, 1], ``10 log10(4 / MSE)``) of the inpainting and of two trivial fills, the mean of
the image's known pixels and the training set's per-pixel mean.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from cdrl.core.guidance import Guide
from cdrl.core.sampler import Noise, PerImageNoise, randn
from cdrl.io import atomic_savefig, atomic_savez, atomic_write_text

__all__ = ["MASKS", "make_mask", "inpaint", "inpaint_metrics", "add_cli"]

MASKS = ("center", "left", "random")


def make_mask(kind: str, shape: tuple[int, ...], seed: int = 0, indices=(0,)) -> torch.Tensor:
    """Known-pixel masks ``[N, 1, H, W]`` (1 = known) for images ``indices``."""
    _, h, w = shape
    n = len(indices)
    mask = torch.ones(n, 1, h, w)
    if kind == "center":
        top, left = h // 4, w // 4
        mask[..., top: top + h // 2, left: left + w // 2] = 0
    elif kind == "left":
        mask[..., : w // 2] = 0
    elif kind == "random":
        for r, i in enumerate(indices):
            rng = np.random.default_rng([int(seed), int(i), 0x3A5C])
            mask[r, 0] = torch.from_numpy((rng.random((h, w)) >= 0.5).astype(np.float32))
    else:
        raise ValueError(f"unknown mask {kind!r}; choose from {MASKS}")
    return mask


@torch.no_grad()
def inpaint(method, x_obs: torch.Tensor, mask: torch.Tensor, steps: int | None = None,
            generator: Noise = None, use_ema: bool | None = None) -> torch.Tensor:
    """Fill the pixels where ``mask == 0`` of ``x_obs`` [B, C, H, W] (module docstring): the
    method's own sampler, started from the masked level-T image, with a callback that resets
    the known pixels after every proposal and Langevin step."""
    x_obs, mask = x_obs.to(method.device), mask.to(method.device).expand_as(x_obs).bool()
    n = x_obs.shape[0]
    guide = None
    if method.num_classes:
        guide = Guide.single(torch.zeros(n, dtype=torch.long, device=method.device))
    eps = randn(x_obs.shape, x_obs, generator)

    def known(level: int) -> torch.Tensor:
        return method.sqrt_ab[level] * x_obs + method.sigma_bar[level] * eps

    def project(step: int, y: torch.Tensor) -> torch.Tensor:
        k = torch.full((n,), step, dtype=torch.long, device=method.device)
        return torch.where(mask, method.per_sample("sqrt_m", k) * known(step), y)

    x_T = torch.where(mask, known(method.T), randn(x_obs.shape, x_obs, generator))
    x = method.sample(n, steps, generator, use_ema, noise=x_T, guide=guide, callback=project)
    return torch.where(mask, x_obs, x)


def _mse_psnr(pred: torch.Tensor, truth: torch.Tensor, missing: torch.Tensor) -> dict:
    err = ((pred - truth) ** 2 * missing).flatten(1).sum(1) / missing.flatten(1).sum(1)
    mse = float(err.mean())
    psnr = (10 * torch.log10(4.0 / err.clamp_min(1e-12))).mean()
    return {"mse": mse, "psnr": float(psnr), "psnr_of_mean_mse": 10 * math.log10(4.0 / mse)}


def inpaint_metrics(filled: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
                    pixel_mean: torch.Tensor) -> dict:
    """Missing-pixel MSE and PSNR (per image, averaged) of the inpainting and two fills."""
    mask = mask.expand_as(truth)
    missing = 1 - mask
    known_mean = (truth * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    fills = {"known_mean": known_mean.view(-1, 1, 1, 1).expand_as(truth),
             "dataset_mean": pixel_mean.expand_as(truth)}
    out = {"inpaint": _mse_psnr(filled, truth, missing), "num": len(truth),
           "missing_fraction": float(missing.mean())}
    for name, fill in fills.items():
        out[f"baseline_{name}"] = _mse_psnr(fill, truth, missing)
    out["known_pixels_exact"] = bool(((filled - truth) * mask).abs().max() == 0)
    return out


def _figure(path: Path, rows: dict, num: int = 8) -> None:
    import matplotlib
    from torchvision.utils import make_grid

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ("observed", "mask", "inpainted", "truth")
    num = min(num, len(next(iter(rows.values()))["truth"]))
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                             figsize=(len(cols) * 0.4 * num + 0.6, 0.4 + 0.55 * len(rows)))
    for r, (kind, imgs) in enumerate(rows.items()):
        for c, col in enumerate(cols):
            # One row of images in [-1, 1], shown as [0, 1] RGB (grey repeated).
            grid = make_grid(imgs[col][:num], nrow=num, padding=0, normalize=True,
                             value_range=(-1, 1))
            ax = axes[r, c]
            ax.imshow(grid.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col)
            if c == 0:
                ax.set_ylabel(kind)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def run_inpainting(run_dir: Path, dataset: str, masks: list[str], num: int, seed: int = 0,
                   steps: int | None = None, device: str | None = None, root=None):
    """Inpaint the first ``num`` images of ``dataset`` under each mask; returns
    ``(metrics, images)`` with images per mask (observed, mask, inpainted, truth)."""
    from cdrl.tasks.ood import load_named_set
    from cdrl.train.trainer import build_data, load_run

    cfg, method, state = load_run(run_dir, device)
    truth = load_named_set(dataset, method.data_shape, root)[:num]
    train_set = build_data(cfg)
    pixel_mean = train_set.to_float().mean(0, keepdim=True)
    batch = cfg.sample.batch_size
    metrics, images = {}, {}
    for kind in masks:
        filled = []
        mask = make_mask(kind, method.data_shape, seed, range(len(truth)))
        for lo in range(0, len(truth), batch):
            idx = range(lo, min(lo + batch, len(truth)))
            gen = PerImageNoise(seed, idx, method.device)
            filled.append(inpaint(method, truth[lo: idx.stop], mask[lo: idx.stop], steps,
                                  gen).cpu())
        filled = torch.cat(filled)
        metrics[kind] = inpaint_metrics(filled, truth, mask, pixel_mean)
        observed = torch.where(mask.expand_as(truth).bool(), truth, torch.zeros_like(truth))
        images[kind] = {"observed": observed, "mask": mask.expand_as(truth) * 2 - 1,
                        "inpainted": filled, "truth": truth}
    meta = {"run_dir": str(run_dir), "iteration": int(state["iteration"]), "dataset": dataset,
            "num": len(truth), "seed": seed, "masks": masks,
            "steps": cfg.sample.langevin_steps if steps is None else steps,
            "tweedie": cfg.sample.tweedie, "use_ema": cfg.sample.use_ema,
            "method": "replacement of known pixels by the forward-noised observation at every "
                      "level and Langevin step (shared noise, spec 4); not from the sources"}
    return {"masks": metrics, "meta": meta}, images


def _cmd_inpaint(args) -> int:
    masks = [m.strip() for m in args.masks.split(",") if m.strip()]
    metrics, images = run_inpainting(Path(args.run_dir), args.dataset, masks, args.num,
                                     args.seed, args.steps, args.device, args.data_root)
    atomic_write_text(Path(args.out_json), json.dumps(metrics, indent=1))
    if args.figure:
        _figure(Path(args.figure), images)
    if args.out_npz:
        atomic_savez(Path(args.out_npz), **{f"{k}_{col}": v.numpy() for k, d in images.items()
                                            for col, v in d.items()})
    print(json.dumps({k: {"psnr": v["inpaint"]["psnr"],
                          "psnr_known_mean": v["baseline_known_mean"]["psnr"],
                          "psnr_dataset_mean": v["baseline_dataset_mean"]["psnr"]}
                      for k, v in metrics["masks"].items()}))
    return 0


def add_cli(subparsers) -> None:
    """Register ``cdrl inpaint``."""
    p = subparsers.add_parser("inpaint", help="inpaint masked test images; PSNR vs trivial fills")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--dataset", default="digits16:test", help="NAME[:SPLIT] or .npz (cdrl ood)")
    p.add_argument("--masks", default="center,left,random", help=f"comma list of {MASKS}")
    p.add_argument("--num", type=int, default=100, help="first N images of the dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="Langevin steps K (default: config)")
    p.add_argument("--out-json", required=True, help="metrics per mask (JSON)")
    p.add_argument("--figure", default=None, help="PNG grid: observed / mask / inpainted / truth")
    p.add_argument("--out-npz", default=None, help="all images per mask (float, [-1, 1])")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_inpaint)
