"""Out-of-distribution scoring with the learned energy (spec 6.4).

The score of an input ``x`` is the EBM energy at a chosen level ``l`` (default 0, the lowest
noise level, as the paper's OOD table uses): ``F(sqrt(m_{l+1}) x, level l)``, with EMA weights.
A higher energy means more in-distribution. The input scaling and level are NOT FOUND in the
sources; this treats the clean input as a level-``l`` sample, and ``noise=True`` instead draws
``x_l`` from the forward process first (seeded).

    cdrl ood --run-dir DIR --in-dist IN.npz --ood OOD.npz --out auroc.json [--level 0]
    cdrl ood --run-dir DIR --in-dist digits16:test --ood lfw16,digits-interp,photos,noise \
        --out ood.json [--csv ood.csv]

Inputs are ``.npz`` files (``x`` in data coordinates, or uint8 ``x_uint8`` images) or named
sets (``load_named_set``), each resized to the in-distribution image shape (bilinear,
antialiased; grey <-> RGB by channel mean / repetition):

- ``NAME[:SPLIT]``: an image dataset of ``cdrl.data.images`` (default split: test), e.g.
  ``digits16:test``, ``cifar10:test``, ``cifar100:test``, ``celeba64:test`` (-> 32x32).
- ``NAME[:SPLIT]-interp``: pixelwise mean ``(a + b) / 2`` of two images of the set with different
  labels (seeded pairs), as the "CIFAR-10 interpolation" set of spec 6.4 (mixing weight 0.5: a
  choice, the paper's was not found). Aliases: ``digits-interp``, ``cifar10-interp``.
- ``lfw16``: all 200 scikit-image LFW crops (faces and non-faces, 16x16 grey).
- ``photos``: seeded random 64x64 crops of 13 scikit-image photographs (camera, coins, ...).
- ``noise``: uniform noise in [-1, 1].
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cdrl.core.nets.layers import frozen_spectral_norm

__all__ = ["energy_scores", "auroc", "load_named_set", "load_points", "ood_table", "add_cli"]

ALIASES = {"digits-interp": "digits16:test-interp", "cifar10-interp": "cifar10:test-interp",
           "lfw16": "lfw25:all"}
PHOTOS = ("astronaut", "camera", "coins", "moon", "page", "text", "chelsea", "coffee", "clock",
          "rocket", "brick", "grass", "gravel")


@torch.no_grad()
def energy_scores(method, x: torch.Tensor, level: int = 0, use_ema: bool = True,
                  noise: bool = False, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Energy ``F`` of each row of ``x`` (data coordinates) at ``level``."""
    if not 0 <= level < method.T:
        raise ValueError(f"level must be in 0..{method.T - 1}, got {level}")
    ebm = (method.ebm_ema.model if use_ema else method.ebm).eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    with frozen_spectral_norm(ebm):
        for lo in range(0, len(x), batch_size):
            xb = x[lo: lo + batch_size].to(method.device)
            if noise:
                eps = torch.randn(xb.shape, generator=gen).to(xb)
                xb = method.sqrt_ab[level] * xb + method.sigma_bar[level] * eps
            k = torch.full((len(xb),), level, dtype=torch.long, device=method.device)
            labels = torch.zeros_like(k) if method.num_classes else None  # the null label
            out.append(method.energy(xb, k, ebm, labels).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def auroc(in_scores: torch.Tensor, ood_scores: torch.Tensor) -> float:
    """Area under the ROC curve for "in-distribution scores higher", ties counted as 1/2
    (``sklearn.metrics.roc_auc_score`` with the in-distribution inputs as the positives)."""
    from sklearn.metrics import roc_auc_score

    n_in, n_ood = len(in_scores), len(ood_scores)
    if n_in == 0 or n_ood == 0:
        raise ValueError("AUROC needs at least one in-distribution and one OOD score")
    scores = torch.cat([in_scores, ood_scores]).double().cpu().numpy()
    labels = np.r_[np.ones(n_in), np.zeros(n_ood)]
    return float(roc_auc_score(labels, scores))


# ----------------------------------------------------------------------------------- sets
def _fit(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Float images ``[N, C, H, W]`` in [-1, 1] resized and re-channelled to ``shape``."""
    c, h, w = shape
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).expand(-1, c, -1, -1) if c != 1 else x.mean(1, keepdim=True)
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > w).clamp(-1, 1)
    return x.contiguous()


def _dataset(name: str, root) -> tuple[torch.Tensor, torch.Tensor]:
    from cdrl.data.images import load_image_dataset

    dataset, _, split = name.partition(":")
    if split == "all":
        parts = [load_image_dataset(dataset, root, sp) for sp in ("train", "test")]
        return (torch.cat([p.to_float() for p in parts]), torch.cat([p.labels for p in parts]))
    data = load_image_dataset(dataset, root, split or "test")
    return data.to_float(), data.labels


def _interpolate(x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``(x[i] + x[j]) / 2`` with ``j`` a seeded partner of a different label where possible."""
    j = torch.randperm(len(x), generator=gen)
    same = labels[j] == labels
    for _ in range(10):  # re-draw partners that share the label
        if not same.any():
            break
        j[same] = torch.randint(len(x), (int(same.sum()),), generator=gen)
        same = (labels[j] == labels) | (j == torch.arange(len(x)))
    return 0.5 * (x + x[j])


def _photos(n: int, gen: torch.Generator, crop: int = 64) -> torch.Tensor:
    import skimage.data

    imgs = []
    for name in PHOTOS:
        a = torch.from_numpy(np.asarray(getattr(skimage.data, name)())).float() / 127.5 - 1
        imgs.append(a[None] if a.dim() == 2 else a.permute(2, 0, 1)[:3])
    out = []
    for _ in range(n):
        img = imgs[int(torch.randint(len(imgs), (1,), generator=gen))]
        top = int(torch.randint(img.shape[1] - crop + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[2] - crop + 1, (1,), generator=gen))
        crop_img = img[:, top: top + crop, left: left + crop]
        out.append(crop_img.expand(3, -1, -1) if crop_img.shape[0] == 1 else crop_img)
    return torch.stack(out)


def load_named_set(name: str, shape: tuple[int, ...], root=None, seed: int = 0,
                   num: int = 1000) -> torch.Tensor:
    """Inputs of a named set (module docstring) as float ``[N, *shape]`` in [-1, 1]; ``num``
    sizes the generated sets (noise, photos). An ``.npz`` path is read with ``load_points``."""
    if name.endswith(".npz"):
        return load_points(name)
    root = root or os.environ.get("CDRL_DATA_ROOT", "resources/datasets")
    name = ALIASES.get(name, name)
    gen = torch.Generator().manual_seed(seed)
    if name == "noise":
        return torch.rand((num, *shape), generator=gen) * 2 - 1
    if name == "photos":
        return _fit(_photos(num, gen), shape)
    if name.endswith("-interp"):
        x, labels = _dataset(name[: -len("-interp")], root)
        return _fit(_interpolate(x, labels, gen), shape)
    return _fit(_dataset(name, root)[0], shape)


def load_points(path: str) -> torch.Tensor:
    """Samples to score: an ``.npz`` with ``x`` (data coordinates, or uint8 ``x_uint8`` images)."""
    with np.load(path) as npz:
        if "x" in npz:
            return torch.from_numpy(npz["x"]).float()
        if "x_uint8" in npz:  # [N, H, W, C] uint8 -> [N, C, H, W] in [-1, 1]
            return torch.from_numpy(npz["x_uint8"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    raise SystemExit(f"{path}: expected an array 'x' or 'x_uint8'")


def ood_table(method, in_dist: str, ood: list[str], level: int = 0, noise: bool = False,
              seed: int = 0, root=None, max_num: int | None = None) -> dict:
    """AUROC of every OOD set against ``in_dist`` (names or ``.npz`` paths)."""
    x_in = load_named_set(in_dist, method.data_shape, root, seed)[:max_num]
    s_in = energy_scores(method, x_in, level=level, noise=noise, seed=seed)
    sets = {}
    for name in ood:
        x = load_named_set(name, method.data_shape, root, seed + 1, len(x_in))[:max_num]
        s = energy_scores(method, x, level=level, noise=noise, seed=seed)
        sets[name] = {"auroc": auroc(s_in, s), "num": len(s), "mean_energy": float(s.mean())}
    return {"in_dist": in_dist, "num_in": len(s_in), "mean_energy_in": float(s_in.mean()),
            "level": level, "noise": noise, "seed": seed, "sets": sets}


def _cmd_ood(args) -> int:
    from cdrl.io import atomic_write_text
    from cdrl.train.trainer import load_run

    _, method, state = load_run(Path(args.run_dir), args.device)
    names = [n.strip() for n in args.ood.split(",") if n.strip()]
    result = ood_table(method, args.in_dist, names, args.level, args.noise, args.seed,
                       args.data_root, args.max_num)
    result.update(iteration=int(state["iteration"]), use_ema=True, ood=args.ood)
    if len(names) == 1:  # the single-pair keys of the original command
        one = result["sets"][names[0]]
        result.update(auroc=one["auroc"], num_ood=one["num"], mean_energy_ood=one["mean_energy"])
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    if args.csv:
        buf = io.StringIO()
        rows = csv.writer(buf)
        rows.writerow(["in_dist", "ood", "auroc", "num_in", "num_ood", "level"])
        for name, row in result["sets"].items():
            rows.writerow([args.in_dist, name, f"{row['auroc']:.4f}", result["num_in"],
                           row["num"], args.level])
        atomic_write_text(Path(args.csv), buf.getvalue())
    print(json.dumps(result))
    return 0


def add_cli(subparsers) -> None:
    """Register ``cdrl ood``."""
    o = subparsers.add_parser("ood", help="AUROC of the energy score, in-distribution vs OOD sets")
    o.add_argument("--run-dir", required=True)
    o.add_argument("--in-dist", required=True, help=".npz or a named set, e.g. digits16:test")
    o.add_argument("--ood", required=True,
                   help="comma list of .npz files or named sets: NAME[:SPLIT], NAME-interp, "
                        "digits-interp, cifar10-interp, lfw16, photos, noise")
    o.add_argument("--level", type=int, default=0, help="EBM level whose energy scores")
    o.add_argument("--noise", action="store_true", help="noise inputs to the level first")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--max-num", type=int, default=None, help="at most this many inputs per set")
    o.add_argument("--data-root", default=None, help="default: $CDRL_DATA_ROOT or "
                                                     "resources/datasets")
    o.add_argument("--out", default=None, help="JSON result")
    o.add_argument("--csv", default=None, help="CSV table: one row per OOD set")
    o.add_argument("--device", default=None)
    o.set_defaults(func=_cmd_ood)
