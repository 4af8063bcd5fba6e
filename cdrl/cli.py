"""Command line: ``cdrl schedule | train | sample | plot-toy``.

    cdrl schedule --kind cdrl --levels 6 [--json]
    cdrl train --config FILE --run-dir DIR [--max-iters N] [--device cpu]
    cdrl sample --run-dir DIR --num N --out FILE.npz [--steps K] [--seed S]
    cdrl plot-toy --run-dir DIR --samples FILE.npz --out FIG.png
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_schedule(args) -> int:
    from .schedule import make_schedule

    s = make_schedule(args.kind, args.levels, b2=args.b2, c_mode=args.c_mode)
    print(json.dumps(s.to_dict(), indent=1) if args.json else s.table())
    return 0


def _cmd_train(args) -> int:
    from .config import load_config
    from .trainer import train

    cfg = load_config(args.config)
    if args.device:
        cfg.device = args.device
    result = train(cfg, args.run_dir, max_iters=args.max_iters, progress=not args.no_progress)
    print(json.dumps(result))
    return 0


def generate(run_dir: Path, num: int, steps: int | None, seed: int, device: str | None = None):
    """Draw ``num`` samples from a run's newest checkpoint.

    Returns ``(x, levels, meta)``: final samples ``[N, ...]``, the chain's states per level
    ``[T+1, N, ...]`` (``x_T`` first, ``x_0`` last, before any Tweedie step), and metadata."""
    import torch

    from .trainer import load_run

    cfg, method, state = load_run(run_dir, device)
    gen = torch.Generator(device=method.device).manual_seed(seed)
    out, levels = [], []
    for start in range(0, num, cfg.sample.batch_size):
        n = min(cfg.sample.batch_size, num - start)
        x, lv = method.sample(n, steps=steps, generator=gen, return_levels=True)
        out.append(x.cpu())
        levels.append(torch.stack(lv).cpu())
    x = torch.cat(out) if out else torch.zeros(0, *state["data_shape"])
    meta = {"iteration": int(state["iteration"]), "seed": seed, "num": num,
            "steps": cfg.sample.langevin_steps if steps is None else steps,
            "use_ema": cfg.sample.use_ema, "tweedie": cfg.sample.tweedie, "method": cfg.method}
    return x, (torch.cat(levels, dim=1) if levels else None), meta


def _cmd_sample(args) -> int:
    import numpy as np

    from .checkpoint import atomic_write_bytes

    if not args.out.endswith(".npz"):
        raise SystemExit(f"--out {args.out!r}: only .npz output is supported for now")
    x, levels, meta = generate(Path(args.run_dir), args.num, args.steps, args.seed, args.device)
    arrays = {"x": x.numpy().astype(np.float32), "meta": np.array(json.dumps(meta))}
    if x.dim() == 2:  # vector data: keep every level for the toy figure (small)
        arrays["levels"] = levels.numpy().astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(args.out), buf.getvalue())
    print(json.dumps(meta))
    return 0


def _cmd_plot_toy(args) -> int:
    from .plots import toy_figure

    metrics = toy_figure(Path(args.run_dir), Path(args.samples), Path(args.out), grid=args.grid)
    print(json.dumps(metrics))
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser("sample", help="draw samples from a trained run")
    g.add_argument("--run-dir", required=True)
    g.add_argument("--num", type=int, required=True)
    g.add_argument("--out", required=True, help="output .npz (array x: [N, ...])")
    g.add_argument("--steps", type=int, default=None, help="Langevin steps per level K")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None)
    g.set_defaults(func=_cmd_sample)

    f = sub.add_parser("plot-toy", help="toy figure: data, density and samples per level")
    f.add_argument("--run-dir", required=True)
    f.add_argument("--samples", required=True, help=".npz written by `cdrl sample`")
    f.add_argument("--out", required=True, help="figure .png (a .pdf and a .json beside it)")
    f.add_argument("--grid", type=int, default=200, help="density grid points per axis")
    f.set_defaults(func=_cmd_plot_toy)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .trainer import RunStateError

    try:
        return args.func(args)
    except (ConfigError, RunStateError, CheckpointError) as err:
        print(f"cdrl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
