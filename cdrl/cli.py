"""Command line: ``cdrl COMMAND ...``; ``cdrl COMMAND --help`` gives each one's options.

Training and sampling:
    cdrl schedule --kind cdrl --levels 6 [--json]
    cdrl train --config FILE --run-dir DIR [--max-iters N] [--device cpu]
               [--on-divergence fail|record]
    cdrl sample --run-dir DIR (--num N | --start S --count N) --out FILE.npz|DIR [--steps K]
                [--seed S]
    cdrl merge-samples SHARD.npz [SHARD.npz ...] --out FILE.npz
    cdrl plot-toy --run-dir DIR --samples FILE.npz --out FIG.png
Evaluation:
    cdrl evaluate --samples DIR|FILE.npz --reference NAME[:SPLIT]|DIR|FILE.npz
                  --metrics fid,kid,isc,prc --out FILE.json [--extractor inception|digits]
    cdrl class-accuracy ...          accuracy of a conditional run's samples by a trained CNN
    cdrl attribute-classifier ...    train the CelebA attribute CNN that scores compositions
    cdrl bench ...                   CDRL vs DRL: gradient counts, seconds per image and iteration
Downstream tasks:
    cdrl ood --run-dir DIR --in-dist IN.npz|NAME --ood A.npz|NAME[,...] [--level 0]
             [--out FILE.json] [--csv FILE.csv]
    cdrl inpaint ...                 inpaint masked test images; PSNR against trivial fills
    cdrl compose ...                 compose attribute conditions (product of experts)
    cdrl compose-score ...           fractions of composed samples that carry the conditions
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import time
from pathlib import Path

from cdrl.io import atomic_write_text

__all__ = ["main"]


def _cmd_schedule(args) -> int:
    from cdrl.core.schedule import make_schedule

    s = make_schedule(args.kind, args.levels, b2=args.b2, c_mode=args.c_mode)
    print(json.dumps(s.to_dict(), indent=1) if args.json else s.table())
    return 0


def _cmd_train(args) -> int:
    from cdrl.core.config import load_config
    from cdrl.train.trainer import train

    cfg = load_config(args.config)
    if args.device:
        cfg.device = args.device
    if args.replace_changed:
        _set_aside_if_changed(Path(args.run_dir), cfg)
    from cdrl.train import distributed  # N processes when the job has N GPUs or CDRL_NPROC=N

    if (nproc := distributed.procs_wanted()) > 1:
        return distributed.launch(nproc)
    if distributed.world()[1] > 1:
        train = distributed.train
    result = train(cfg, args.run_dir, max_iters=args.max_iters, progress=not args.no_progress,
                   on_divergence=args.on_divergence)
    print(json.dumps(result))
    return 0


def _set_aside_if_changed(run_dir: Path, cfg) -> None:
    """``--replace-changed``: a run directory started under another config is renamed to
    ``<dir>.replaced-<time>`` (kept, never deleted) so this config starts afresh there."""
    from cdrl.core.config import config_to_dict
    from cdrl.train.trainer import RunStateError, check_same_config

    try:
        check_same_config(run_dir, config_to_dict(cfg))
    except RunStateError as err:
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"cdrl train: {err}; moved the old run to {aside} and starting afresh",
              file=sys.stderr)


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


def write_samples(out: Path, x, levels, meta: dict) -> None:
    """``.npz`` (any data; 2-D data keeps every level) or a folder of ``<index>.png`` images."""
    import numpy as np

    from cdrl.data.images import float_to_uint8
    from cdrl.io import atomic_write_bytes

    if out.suffix == ".npz":
        # len(x), not meta["count"]: a diverged run's file has zero images (``generate``).
        arrays = {"x": x.numpy().astype(np.float32), "meta": np.array(json.dumps(meta)),
                  "index": np.arange(meta["start"], meta["start"] + len(x))}
        if "labels" in meta:  # conditional runs: condition index per image (-1: null)
            arrays["labels"] = np.array(meta["labels"], dtype=np.int64)
        if x.dim() == 2:  # vector data: keep every level for the toy figure (small)
            arrays["levels"] = levels.numpy().astype(np.float32)
        else:
            arrays["x_uint8"] = float_to_uint8(x).permute(0, 2, 3, 1).contiguous().numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(out, buf.getvalue())
        return
    if x.dim() != 4:
        raise SystemExit(f"--out {str(out)!r}: vector samples need an .npz output")
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    nhwc = float_to_uint8(x).permute(0, 2, 3, 1).contiguous().numpy()
    for i, img in zip(range(meta["start"], meta["start"] + len(x)), nhwc, strict=True):
        png = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(png, format="PNG")
        atomic_write_bytes(out / f"{i:06d}.png", png.getvalue())
    atomic_write_text(out / f"meta-{meta['start']:06d}.json", json.dumps(meta, indent=1))


# Per-shard facts a merged file sums or lists; every other metadata key must agree across shards.
_SHARD_OWN = ("start", "count", "seconds", "seconds_per_image", "labels", "device", "threads")


class ShardError(ValueError):
    """Shards that do not make one sample file: a gap, an overlap or a different setting."""


def merge_samples(shards, out: Path) -> dict:
    """Concatenate ``.npz`` shards written by ``cdrl sample --start S --count N`` into the one
    file ``cdrl sample`` would write for all their images (the workflow's ``sample_shard_size``).

    The shards must follow each other without gap or overlap and share every setting (run,
    checkpoint iteration, seed, steps, ...). Image ``i`` depends only on ``(seed, i)``, so the
    merged images are those of one unsharded job (bit for bit when each shard's size is a
    multiple of the batch size, as then the batches are the same too). The merged ``meta`` has
    ``start``/``count`` of the whole, ``seconds`` summed over shards (device-seconds), and a
    ``shards`` list of each shard's ``start``, ``count``, ``seconds`` and ``device``.
    Returns the merged metadata."""
    import numpy as np

    from cdrl.io import atomic_write_bytes

    if not shards:
        raise ShardError("no shards to merge")
    parts, metas = [], []
    for path in shards:
        with np.load(path, allow_pickle=False) as f:
            parts.append({k: f[k] for k in f.files})
        metas.append(json.loads(str(parts[-1].pop("meta"))))
    first = metas[0]
    same = {k: v for k, v in first.items() if k not in _SHARD_OWN}
    expected = first["start"]
    for path, meta, arrays in zip(shards, metas, parts, strict=True):
        if meta["start"] != expected:
            raise ShardError(f"{path}: starts at image {meta['start']}, expected {expected} "
                             "(shards must be given in order, without gap or overlap)")
        expected += meta["count"]
        if diff := sorted(k for k in set(same) | set(meta)
                          if k not in _SHARD_OWN and meta.get(k) != same.get(k)):
            raise ShardError(f"{path}: {', '.join(diff)} differ from {shards[0]}'s: these shards "
                             "are not of one sample")
        if sorted(arrays) != sorted(parts[0]):
            raise ShardError(f"{path}: arrays {sorted(arrays)}, expected {sorted(parts[0])}")
    count = expected - first["start"]
    seconds = sum(m["seconds"] for m in metas)
    meta = {**first, "count": count, "seconds": seconds,
            "seconds_per_image": seconds / max(count, 1),
            "shards": [{k: m[k] for k in ("start", "count", "seconds", "device")}
                       for m in metas]}
    if "labels" in first:
        meta["labels"] = [label for m in metas for label in m["labels"]]
    arrays = {"meta": np.array(json.dumps(meta))}
    for key in parts[0]:
        axis = 1 if key == "levels" else 0  # levels: [T+1, N, ...]
        arrays[key] = np.concatenate([a[key] for a in parts], axis=axis)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(out), buf.getvalue())
    return meta


def _cmd_merge_samples(args) -> int:
    meta = merge_samples([Path(s) for s in args.shards], Path(args.out))
    print(json.dumps({k: v for k, v in meta.items() if k != "labels"}))
    return 0


def _cmd_sample(args) -> int:
    start = args.start
    count = args.count if args.count is not None else args.num
    if count is None or count < 0 or start < 0:
        raise SystemExit("give --num N (images 0..N-1) or --start S --count N, all >= 0")
    x, levels, meta = generate(Path(args.run_dir), start, count, args.steps, args.seed,
                               args.device, args.batch_size, args.guidance, args.labels,
                               args.snapshot)
    write_samples(Path(args.out), x, levels, meta)
    print(json.dumps(meta))
    return 0


def _cmd_plot_toy(args) -> int:
    from cdrl.report.plots import toy_figure

    metrics = toy_figure(Path(args.run_dir), Path(args.samples), Path(args.out), grid=args.grid)
    print(json.dumps(metrics))
    return 0


def dataset_reference(name: str):
    """``cdrl evaluate --reference NAME[:SPLIT[:N]]``: a dataset's uint8 images from
    ``$CDRL_DATA_ROOT`` (default ``resources/datasets``), e.g. ``digits16:test``; ``:N`` keeps
    the first N images of the split (a fixed subset: Inception features of 10,000 images cost
    half an hour on a 2-core CPU)."""
    import os

    from cdrl.data.images import load_image_dataset

    dataset, _, rest = name.partition(":")
    split, _, count = rest.partition(":")
    if count and not (count.isdigit() and int(count) > 0):
        raise SystemExit(f"reference {name!r}: the part after the split must be a positive "
                         "image count, as in mnist28:test:2000")
    root = os.environ.get("CDRL_DATA_ROOT", "resources/datasets")
    return load_image_dataset(dataset, root, split or "train").uint8_dataset(
        int(count) if count else None)


# name -> module whose add_cli(subparsers) defines it.
_MODULE_COMMANDS = {"ood": "cdrl.tasks.ood", "evaluate": "cdrl.eval.evaluate",
                    "bench": "cdrl.report.bench", "class-accuracy": "cdrl.eval.class_accuracy",
                    "inpaint": "cdrl.tasks.inpaint", "compose": "cdrl.tasks.compose",
                    "attribute-classifier": "cdrl.eval.class_accuracy",
                    "compose-score": "cdrl.tasks.compose"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser. Given the ``command`` about to run, only its module is imported (none for
    the commands defined here); without one (``--help``, a typo) every subcommand is."""
    p = argparse.ArgumentParser(prog="cdrl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("schedule", help="print a noise schedule and its per-step quantities")
    s.add_argument("--kind", choices=["cdrl", "drl"], default="cdrl")
    s.add_argument("--levels", type=int, default=6, help="number of EBM levels T")
    s.add_argument("--b2", type=float, default=None, help="step-size constant (default: kind's)")
    s.add_argument("--c-mode", choices=["std_ratio", "constant"], default="std_ratio")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_cmd_schedule)

    t = sub.add_parser("train", help="train or resume a run")
    t.add_argument("--config", required=True)
    t.add_argument("--run-dir", required=True)
    t.add_argument("--max-iters", type=int, default=None,
                   help="stop at this total iteration (default: train.iterations)")
    t.add_argument("--device", default=None, help="override config device (cpu, cuda, ...)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--replace-changed", action="store_true",
                   help="if --run-dir was started under another config, rename it aside and "
                        "start afresh (the workflow's behaviour) instead of refusing")
    t.add_argument("--on-divergence", choices=["fail", "record"], default="fail",
                   help="when the divergence guard fires: fail (an error, exit status 2) or "
                        "record it in final.json and exit 0 (the workflow's; the run is then "
                        "compared at its last good snapshot)")
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser("sample", help="draw samples from a trained run")
    g.add_argument("--run-dir", required=True)
    g.add_argument("--num", type=int, default=None, help="images 0 .. N-1")
    g.add_argument("--start", type=int, default=0, help="first image index (sharding)")
    g.add_argument("--count", type=int, default=None, help="number of images from --start")
    g.add_argument("--out", required=True,
                   help="an .npz (array x: [N, ...]) or a folder of <index>.png images")
    g.add_argument("--steps", type=int, default=None, help="Langevin steps per level K")
    g.add_argument("--seed", type=int, default=0, help="image i uses the stream (seed, i)")
    g.add_argument("--batch-size", type=int, default=None, help="default: sample.batch_size")
    g.add_argument("--device", default=None)
    g.add_argument("--guidance", type=float, default=None,
                   help="conditional runs: CFG weight w (default: sample.guidance)")
    g.add_argument("--labels", default=None,
                   help="conditional runs: uniform (per image from (seed, i)), a class index, "
                        "an attribute (~ for value 0) or null; default uniform")
    g.add_argument("--snapshot", type=int, default=None, metavar="ITER",
                   help="sample from the run's snapshot of this iteration (train.snapshot_every) "
                        "instead of its newest checkpoint (a diverged run: zero images for an "
                        "ITER at or after the divergence)")
    g.set_defaults(func=_cmd_sample)

    m = sub.add_parser("merge-samples", help="concatenate sample shards (--start/--count) into "
                       "one .npz")
    m.add_argument("shards", nargs="+", help=".npz shards, in order of their first image")
    m.add_argument("--out", required=True, help="the merged .npz")
    m.set_defaults(func=_cmd_merge_samples)

    f = sub.add_parser("plot-toy", help="toy figure: data, density and samples per level")
    f.add_argument("--run-dir", required=True)
    f.add_argument("--samples", required=True, help=".npz written by `cdrl sample`")
    f.add_argument("--out", required=True, help="figure .png (a .pdf and a .json beside it)")
    f.add_argument("--grid", type=int, default=200, help="density grid points per axis")
    f.set_defaults(func=_cmd_plot_toy)

    # Subcommands defined in their own modules, imported only when asked for (or for --help):
    # the evaluation modules import torch-fidelity and torchvision, seconds per job.
    wanted = ([command] if command in _MODULE_COMMANDS else [] if command in sub.choices
              else list(_MODULE_COMMANDS))
    for name in wanted:
        add_cli = importlib.import_module(_MODULE_COMMANDS[name]).add_cli
        if name == "evaluate":
            add_cli(sub, reference_loader=dataset_reference)
        else:
            add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Errors a user can act on (a bad config or argument, missing data or
    weights, a run directory that needs a decision, a diverged run) end in one line naming the
    problem and its fix, exit status 2; ``CDRL_TRACEBACK=1`` shows the traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    if (problem := _cuda_problem()) is not None:
        print(f"cdrl {args.command}: error: {problem}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except _user_errors() as err:
        if os.environ.get("CDRL_TRACEBACK"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"cdrl {args.command}: error: {message}", file=sys.stderr)
        return 2


def _cuda_problem() -> str | None:
    """``CDRL_REQUIRE_CUDA=1``, set by the workflow's GPU rules (preset key ``require_cuda``):
    a job that asked for GPUs stops before any work when torch sees no CUDA device, instead of
    silently running on the CPU (``device: auto``) for days."""
    if os.environ.get("CDRL_REQUIRE_CUDA", "0").strip().lower() in ("", "0", "false", "no"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"this job asked for GPUs, but torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda or 'none: a CPU-only build'}) sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}). Check the job's "
            "GPU partition and gpu resource, the NVIDIA driver (nvidia-smi; CUDA 13 builds need "
            "driver >= 580) and the torch build (docs/cluster.md). To run GPU rules on the CPU on "
            "purpose, set require_cuda: false in the preset.")


def _user_errors() -> tuple[type[BaseException], ...]:
    import yaml

    from cdrl.core.config import ConfigError
    from cdrl.core.optim import DivergenceError
    from cdrl.data.images import DatasetError
    from cdrl.eval.evaluate import EvaluationError
    from cdrl.train.checkpoint import CheckpointError
    from cdrl.train.trainer import RunStateError

    return (ConfigError, RunStateError, CheckpointError, DatasetError, EvaluationError,
            DivergenceError, yaml.YAMLError, ValueError, FileNotFoundError, PermissionError)


if __name__ == "__main__":
    sys.exit(main())
