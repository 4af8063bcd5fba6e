"""GPU check: paper-size CDRL vs DRL training iteration and sampling throughput on one GPU.

    python scripts/gpu_check.py                      # cuda, cdrl_cifar10 vs drl_cifar10 (~3 min)
    python scripts/gpu_check.py --quick --device cpu # tiny networks: checks the script anywhere

Times ``method.train_step`` at ``--train-batch`` and ``method.sample`` at ``--sample-batch`` for
both paper configs (34.83 M-parameter EBMs; random weights with converged spectral norm, which
cost the same arithmetic as trained ones) with ``cdrl.report.bench``: one warm-up call each, then
``--repeats`` interleaved timed calls with ``torch.cuda.synchronize``; medians. Prints a table and
writes JSON (``--out``). With ``--device cuda`` and no GPU it stops with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdrl.report.bench import bench_methods, build_for_bench  # noqa: E402

EXP = ROOT / "workflow/config/experiments"
QUICK = ["ebm.width=8", "ebm.ch_mult=[1, 2]", "ebm.blocks_per_level=1", "ebm.temb_dim=32",
         "ebm.emb_in_dim=16", "initializer.width=8", "initializer.num_blocks=1",
         "initializer.dim_mults=[1, 1]", "initializer.attn_resolutions=[16]",
         "initializer.temb_dim=32", "initializer.emb_in_dim=16", "initializer.groups=4"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true",
                    help="tiny networks, batch 2, one repeat, 1 CPU thread (tests the script)")
    ap.add_argument("--sample-batch", type=int, default=100)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/gpu_check.json")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but CUDA is not available (torch "
              f"{torch.__version__}, built for CUDA {torch.version.cuda}); use a GPU machine, or "
              "--quick --device cpu to test the script", file=sys.stderr)
        return 2
    overrides, sb, tb, reps = [], args.sample_batch, args.train_batch, args.repeats
    if args.quick:
        overrides, sb, tb, reps = QUICK, 2, 2, 1
        if not args.device.startswith("cuda"):
            torch.set_num_threads(1)  # tiny networks: more threads only add OpenMP overhead
    t0 = time.perf_counter()
    methods = {}
    for name in ("cdrl", "drl"):
        cfg, method, weights = build_for_bench(str(EXP / f"{name}_cifar10.yaml"), None, overrides,
                                               args.device)
        methods[name] = (cfg, method)
    results = bench_methods(methods, sb, tb, reps)
    dev = methods["cdrl"][1].device
    rows = []
    for name, r in results.items():
        s_img = statistics.median(r.sample_s_per_image)
        rows.append({"method": name, "ebm_params_m": r.ebm_params / 1e6,
                     "ebm_grads_per_image": r.ebm_grad_per_image,
                     "init_forwards_per_image": r.init_forward_per_image,
                     "sample_s_per_image": s_img, "sample_images_per_s": 1 / s_img,
                     "train_s_per_iter": statistics.median(r.train_s_per_iter),
                     "sample_s_all": r.sample_s_per_image, "train_s_all": r.train_s_per_iter})
    c, d = rows
    ratios = {"sample_drl_over_cdrl": d["sample_s_per_image"] / c["sample_s_per_image"],
              "train_drl_over_cdrl": d["train_s_per_iter"] / c["train_s_per_iter"],
              "nfe_drl_over_cdrl": d["ebm_grads_per_image"] / c["ebm_grads_per_image"],
              "claimed": 2.0}
    env = {"device": str(dev), "torch": torch.__version__, "quick": args.quick,
           "sample_batch": sb, "train_batch": tb, "repeats": reps, "weights": weights,
           "threads": torch.get_num_threads(), "total_s": time.perf_counter() - t0}
    if dev.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(dev),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   peak_memory_gb=torch.cuda.max_memory_allocated(dev) / 2**30)
    print(json.dumps(env))
    print(f"| method | EBM M params | EBM grads/image | init fwd/image | sampling images/s "
          f"(batch {sb}) | s/image | train s/iter (batch {tb}) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['ebm_params_m']:.2f} | {r['ebm_grads_per_image']:g} | "
              f"{r['init_forwards_per_image']:g} | {r['sample_images_per_s']:.3g} | "
              f"{r['sample_s_per_image']:.3g} | {r['train_s_per_iter']:.3g} |")
    print(f"DRL/CDRL: sampling {ratios['sample_drl_over_cdrl']:.2f}x, training "
          f"{ratios['train_drl_over_cdrl']:.2f}x, EBM gradients "
          f"{ratios['nfe_drl_over_cdrl']:.2f}x (claimed 2x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "rows": rows, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
