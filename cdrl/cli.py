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
import json
import os
import sys
import time
from pathlib import Path

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


def _cmd_merge_samples(args) -> int:
    from cdrl.data.sample_files import merge_samples

    meta = merge_samples([Path(s) for s in args.shards], Path(args.out))
    print(json.dumps({k: v for k, v in meta.items() if k != "labels"}))
    return 0


def _cmd_sample(args) -> int:
    from cdrl.data.sample_files import write_samples
    from cdrl.tasks.generate import generate

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
    from cdrl.io import atomic_write_text
    from cdrl.report.plots import toy_figure, toy_run_metrics

    run_dir, out = Path(args.run_dir), Path(args.out)
    metrics = toy_run_metrics(run_dir, Path(args.samples))
    atomic_write_text(out.with_suffix(".json"), json.dumps(metrics, indent=2))
    toy_figure(run_dir, Path(args.samples), out, grid=args.grid, metrics=metrics)
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
                    "bench": "cdrl.measure.bench", "class-accuracy": "cdrl.eval.class_accuracy",
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
