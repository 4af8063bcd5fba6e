"""GPU-hours of a workflow preset from measured speeds (``scripts/gpu_check.py``, docs/gpu.md).

    python scripts/gpu_check.py --out DIR     # measures, then ``preset_cost(paper.yaml, ...)``

The model, every factor of which is either measured or read from the preset's resolved configs:

* training, per run: ``iterations * (batch / b) * s_iter * (size / 32)^2 * seeds`` GPU-seconds,
  with ``s_iter`` the measured seconds of one iteration at ``b`` images on one GPU (``b`` = 32, the
  paper's batch per GPU) of CDRL (runs with an initializer) or DRL (runs without one), moved to
  the run's K by the measured seconds of one Langevin step at ``b`` images. Data parallelism is
  taken as free (the all-reduce of 35 M gradients is not measured on one GPU), cost as linear in
  the batch, and a 64-pixel run as 4x a 32-pixel one (the EBM's work grows with the pixels);
  the single-EBM baselines are costed as DRL at their K. Each row names the factors it used.
* sampling, per sample file of the preset (main table, ablations, step sweeps, guidance sweep):
  ``n * s_image(K)`` with ``s_image`` measured for the method at its own K and moved to another
  K by the measured per-image EBM-gradient time, ``T`` gradients per K; a guided file with
  ``w != 0`` evaluates two energies per step (``+ T K`` gradients per image).
* evaluation: Inception features of every sample file and, once per dataset, of its reference
  split, at the measured features per second, plus one FID matrix square root per file.

Toy runs (2-D, CPU-sized), composition (64 images), inpainting (1,000) and OOD scoring are left
out and listed as such.

``measured_throughput`` turns the same measurements into achieved FLOP/s per GPU (the FLOPs of
the measured iterations and images, counted by ``cdrl.measure.run_flops``, over their measured
seconds), which ``cdrl.plan.budget`` applies to every run's own counted FLOPs:
``python scripts/preset_budget.py --gpu-check DIR/results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdrl.measure.run_flops import run_work
from cdrl.plan.budget import SPLIT_IMAGES, sample_files
from cdrl.plan.experiments import resolve_run, run_seeds

__all__ = ["Measured", "preset_cost", "measured_throughput", "REFERENCE_IMAGES"]

# Reference split sizes (spec 8; CelebA's official train partition), for the one-off features.
REFERENCE_IMAGES = SPLIT_IMAGES


@dataclass
class Measured:
    """The measured inputs (seconds on one GPU, torch's default precision unless noted)."""

    device: str
    per_gpu_batch: int                  # b: images per training iteration measured
    train_s: dict                       # {"cdrl": s/iteration, "drl": ...} at b
    train_steps: dict                   # {"cdrl": 15, "drl": 30}: K of the measured configs
    step_s: dict                        # {"cdrl": s per Langevin step at b, "drl": ...}
    sample_s_per_image: dict            # {"cdrl": s/image at the best measured batch, ...}
    sample_steps: dict                  # {"cdrl": 15, "drl": 30}
    grad_s_per_image: dict              # {"cdrl": s per EBM gradient per image when sampling}
    levels: int = 6
    inception_s_per_image: float | None = None
    fid_sqrtm_s: float | None = None    # one FID's matrix square root (per sample file)
    speedups: dict = field(default_factory=dict)  # {"train": x, "sampling": y}: kept changes


def _pixels(name: str) -> float | None:
    from cdrl.data.images import IMAGE_DATASETS

    spec = IMAGE_DATASETS.get(name)
    return None if spec is None else (spec.size / 32) ** 2


def _train_row(preset: dict, run: str, m: Measured) -> dict:
    seeds = run_seeds(preset, run)
    cfg = resolve_run(preset, run, seeds[0])
    px = _pixels(cfg["data"]["name"])
    row = {"run": run, "method": cfg["method"], "dataset": cfg["data"]["name"],
           "seeds": len(seeds), "iterations": cfg["train"]["iterations"],
           "batch": cfg["train"]["batch_size"], "K": cfg["train"]["langevin_steps"]}
    if px is None:
        return {**row, "gpu_hours": None, "basis": "not costed: 2-D toy (CPU-sized)"}
    base = "cdrl" if cfg["initializer"]["arch"] != "none" else "drl"
    k0 = m.train_steps[base]
    s_iter = m.train_s[base] + (row["K"] - k0) * m.step_s[base]
    basis = [f"{base} measured at {m.per_gpu_batch} per GPU"]
    if row["K"] != k0:
        basis.append(f"K {k0} -> {row['K']} at the measured Langevin step")
    if px != 1:
        basis.append(f"x{px:g} pixels")
    if cfg["method"] != base:
        basis.append(f"method {cfg['method']} costed as {base}")
    gpu_s = row["iterations"] * row["batch"] / m.per_gpu_batch * s_iter * px * len(seeds)
    return {**row, "s_per_iteration_per_gpu": s_iter * px, "gpu_hours": gpu_s / 3600,
            "basis": "; ".join(basis)}


def _sample_row(preset: dict, f: dict, m: Measured) -> dict:
    run, seed, k, w, n = f["run"], f["seed"], f["steps"], f["guidance"] or 0.0, f["images"]
    cfg = resolve_run(preset, run, seed)
    base = "cdrl" if cfg["initializer"]["arch"] != "none" else "drl"
    px = _pixels(cfg["data"]["name"]) or 1.0
    g, T = m.grad_s_per_image[base], m.levels
    s_img = m.sample_s_per_image[base] + (k - m.sample_steps[base]) * T * g
    if w:
        s_img += T * k * g  # the null-label energy beside the conditional one
    return {"run": run, "seed": seed, "K": k, "guidance": w, "images": n,
            "dataset": cfg["data"]["name"], "s_per_image": s_img * px,
            "gpu_hours": n * s_img * px / 3600}


def preset_cost(preset: dict, m: Measured) -> dict:
    """Training, sampling and evaluation GPU-hours of ``preset`` (see the module docstring)."""
    train = [_train_row(preset, run, m) for run in preset["runs"]]
    files = sample_files(preset)
    sample = [_sample_row(preset, f, m) for f in files]
    s_inc = m.inception_s_per_image
    references = {}
    for f in files:
        ds = resolve_run(preset, f["run"], f["seed"])["data"]["name"]
        ref = preset["evaluation"][ds]["reference"]
        references[ref] = REFERENCE_IMAGES.get(ref, preset["evaluation"][ds]["num_samples"])
    images = sum(f["images"] for f in files) + sum(references.values())
    fixed = len(files) * (m.fid_sqrtm_s or 0.0)
    hours = {"training": sum(r["gpu_hours"] or 0 for r in train),
             "sampling": sum(r["gpu_hours"] for r in sample),
             "evaluation": (images * s_inc + fixed) / 3600 if s_inc else None}
    hours["total"] = sum(v for v in hours.values() if v is not None)
    out = {"measured_on": m.device, "hours": hours, "training": train, "sampling": sample,
           "evaluation": {"images": images, "sample_files": len(files), "references": references,
                          "s_per_image": s_inc},
           "not_costed": ["2-D toy runs (CPU-sized)", "composition (64 images)",
                          "inpainting (1,000 images)", "OOD energies", "reference statistics "
                          "of the step sweeps beyond the first (cached)"],
           "inputs": m.__dict__}
    if m.speedups:
        tr, sa = m.speedups.get("train", 1.0), m.speedups.get("sampling", 1.0)
        kept = {"training": hours["training"] / tr, "sampling": hours["sampling"] / sa,
                "evaluation": hours["evaluation"]}
        kept["total"] = sum(v for v in kept.values() if v is not None)
        out["hours_with_kept_changes"] = kept
    return out


def measured_throughput(cfgs: dict, m: Measured) -> dict:
    """Achieved FLOP/s per GPU of the measured configs (``{"cdrl": cfg, "drl": cfg}``): the
    counted FLOPs of one training iteration at the measured batch and of one sampled image, over
    the measured seconds, summed over the methods."""
    train_flops = sum(run_work(cfgs[k]).train_iteration(m.per_gpu_batch, m.train_steps[k])
                      for k in m.train_s)
    sample_flops = sum(run_work(cfgs[k]).sample_image(m.sample_steps[k])
                       for k in m.sample_s_per_image)
    return {"train_flop_per_s": train_flops / sum(m.train_s.values()),
            "sample_flop_per_s": sample_flops / sum(m.sample_s_per_image.values()),
            "measured_on": m.device,
            "how": f"FLOPs counted on the measured networks (cdrl.measure.run_flops) of one "
                   f"training iteration at {m.per_gpu_batch} images and of one sampled image "
                   f"at the best measured batch, over the measured seconds, summed over "
                   f"{', '.join(sorted(m.train_s))}"}
