"""Drawing images from a trained run (``cdrl sample``): the run's newest checkpoint or one of
its snapshots, image ``i`` from its own noise stream, a diverged run at its last good snapshot.
The file they are written to is ``cdrl.data.sample_files``."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["generate"]


def generate(run_dir: Path, start: int, count: int, steps: int | None, seed: int,
             device: str | None = None, batch_size: int | None = None,
             guidance: float | None = None, labels: str | None = None,
             snapshot: int | None = None):
    """Draw images ``start .. start+count-1`` from a run's newest checkpoint (or its snapshot of
    iteration ``snapshot``).

    A diverged run (``cdrl train --on-divergence record``) is sampled at its last good snapshot
    (``load_run``; ``meta["diverged"]``, ``meta["snapshot"]``). Where that gives no weights (no
    snapshot before the divergence, or ``snapshot`` at or after it) the result has zero images
    and says why in ``meta`` (``no_good_snapshot`` or ``after_divergence``), so the workflow goes
    on and the evaluation records no value.

    Image ``i`` uses its own noise stream seeded by ``(seed, i)`` (``PerImageNoise``), so it is
    the same whatever the batch size or sharding. Returns ``(x, levels, meta)``: final samples
    ``[count, ...]``, the chain's states per level ``[T+1, count, ...]`` (``x_T`` first, ``x_0``
    last, before any Tweedie step), and metadata. Conditional runs: image ``i``'s label also
    depends only on ``(seed, i)`` (``cdrl.core.guidance.sampling_guide``), guided with weight
    ``guidance`` (spec 6.1); the labels go to ``meta["labels"]``.
    """
    import torch

    from cdrl.core.guidance import sampling_guide
    from cdrl.core.sampler import PerImageNoise
    from cdrl.train.trainer import load_run, read_divergence

    diverged = read_divergence(run_dir)
    if diverged is not None and (diverged["last_good_snapshot"] is None if snapshot is None
                                 else snapshot >= diverged["diverged_at"]):
        return _no_weights(run_dir, start, count, steps, seed, batch_size, guidance, labels,
                           snapshot, diverged)
    cfg, method, state = load_run(run_dir, device, snapshot)
    batch = batch_size or cfg.sample.batch_size
    out, levels, used = [], [], []
    t0 = time.perf_counter()  # sampling only: model loading and file writing are excluded
    for lo in range(start, start + count, batch):
        idx = range(lo, min(lo + batch, start + count))
        noise = PerImageNoise(seed, idx, method.device)
        guide, lab = sampling_guide(cfg, seed, idx, labels, guidance)
        guide = None if guide is None else guide.to(method.device)
        x, lv = method.sample(len(idx), steps=steps, generator=noise, return_levels=True,
                              guide=guide)
        used += [] if lab is None else lab.tolist()
        out.append(x.cpu())
        levels.append(torch.stack(lv).cpu())
    if method.device.type == "cuda":
        torch.cuda.synchronize(method.device)
    seconds = time.perf_counter() - t0
    shape = tuple(state["data_shape"])
    x = torch.cat(out) if out else torch.zeros(0, *shape)
    lv = torch.cat(levels, dim=1) if levels else torch.zeros(method.T + 1, 0, *shape)
    meta = _sample_meta(cfg, run_dir, int(state["iteration"]), start, count, steps, seed, batch,
                        guidance, labels, used)
    meta.update(seconds=seconds, seconds_per_image=seconds / max(count, 1),
                device=str(method.device), threads=torch.get_num_threads())
    if "diverged_at" in state:  # load_run gave the last good snapshot of a diverged run
        meta.update(diverged=True, diverged_at=state["diverged_at"],
                    snapshot=int(state["iteration"]))
    return x, lv, meta


def _sample_meta(cfg, run_dir, iteration, start, count, steps, seed, batch, guidance, labels,
                 used) -> dict:
    """The settings a sample file records (``generate``); timing and device come after."""
    meta = {"iteration": iteration, "seed": seed, "start": start, "count": count,
            "steps": cfg.sample.langevin_steps if steps is None else steps,
            "use_ema": cfg.sample.use_ema, "tweedie": cfg.sample.tweedie,
            "tweedie_b2": cfg.sample.tweedie_b2, "noise_scale": cfg.sample.noise_scale,
            "method": cfg.method, "run_dir": str(run_dir), "batch_size": batch}
    if cfg.data.conditional:
        meta.update(guidance=cfg.sample.guidance if guidance is None else guidance,
                    label_spec=labels or "uniform", labels=used)
    return meta


def _no_weights(run_dir, start, count, steps, seed, batch_size, guidance, labels, snapshot,
                diverged):
    """``generate`` for a diverged run with no good weights to sample: zero images, the same
    arrays and settings as a real sample (so shards still merge), and ``meta`` saying why.
    ``meta["count"]`` stays the number asked for: shards of it still follow each other."""
    import warnings

    import torch
    import yaml

    from cdrl.core.config import config_from_dict
    from cdrl.train.checkpoint import load_latest
    from cdrl.train.trainer import build_data

    cfg = config_from_dict(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()))
    latest = load_latest(run_dir)  # the data shape without loading the data, where it can
    shape = tuple(latest["data_shape"]) if latest else tuple(build_data(cfg).shape)
    why = ({"no_good_snapshot": True} if snapshot is None
           else {"after_divergence": True, "snapshot": snapshot})
    reason = (f"{run_dir} diverged at iteration {diverged['diverged_at']} "
              + ("before its first snapshot" if snapshot is None else
                 f"(snapshot {snapshot} is not before it)") + ": no weights, no images")
    warnings.warn(reason, stacklevel=2)
    meta = _sample_meta(cfg, run_dir, None, start, count, steps, seed,
                        batch_size or cfg.sample.batch_size, guidance, labels, [])
    meta.update(seconds=0.0, seconds_per_image=0.0, device=None, threads=None, diverged=True,
                diverged_at=diverged["diverged_at"], **why, reason=reason)
    return (torch.zeros(0, *shape), torch.zeros(cfg.schedule.levels + 1, 0, *shape), meta)
