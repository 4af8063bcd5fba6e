"""GPU check: CUDA correctness, paper-size speed, A/B of speed-ups, cost of the preset.

    python scripts/gpu_check.py --out DIR                      # one GPU, about 8 minutes
    python scripts/gpu_check.py --quick --device cpu --out DIR # toy sizes on a CPU, about 1 minute

Four sections, each time-boxed inside ``--budget-s``; what did not fit is listed under
``skipped``, never estimated in its place:

1. correctness: ``pytest -m cuda tests/test_cuda.py`` in a child process; its JUnit XML and log go
   to DIR, every case's outcome and measured differences into the JSON.
2. speed: ``cdrl bench``'s measurements (``cdrl.measure.bench``) of cdrl_cifar10 against
   drl_cifar10 (34.83 M-parameter EBMs, random weights with converged spectral norm) at torch's
   default precision: training s/iteration at ``--train-batch`` (the paper's 32 per GPU),
   sampling s/image at ``--sample-batch`` (100) and at the largest batch that fits, EBM gradients
   per image (counted), peak memory, the DRL/CDRL ratios beside the claimed 2x; the FLOPs of one
   EBM gradient (``torch.utils.flop_counter``) and the achieved FLOP/s against the GPU's peaks;
   Inception features per second for the cost of evaluation. ``speed.csv``/``speed.md`` are
   ``cdrl bench``'s tables of the same numbers.
3. ab: ``cdrl.measure.speedups``: TF32, bf16 autocast, channels-last, torch.compile, a CUDA graph
   of the K-step chain, cudnn.benchmark and a larger sampling batch, one at a time against strict
   float32 on the Langevin step and the training iteration, kept by ``KEEP_RULE``.
4. cost: ``cdrl.plan.preset_cost``: GPU-hours of workflow/config/paper.yaml from the numbers
   above, the paragraph for the README's cluster section, and the achieved FLOP/s per GPU
   (``cost.throughput``) that ``scripts/preset_budget.py --gpu-check`` applies to each run's
   counted FLOPs.

Writes ``results.json`` and ``summary.md`` to ``--out DIR`` (the older ``--out FILE.json`` writes
FILE.json and FILE.md). Every section records the device it measured on; ``--quick`` measures toy
networks. With ``--device cuda`` and no GPU it stops with exit status 2; it exits 1 when a section
raised or a CUDA check failed (the files are written either way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdrl.core.nets.layers import frozen_spectral_norm  # noqa: E402
from cdrl.measure import speedups as ab  # noqa: E402
from cdrl.measure.bench import bench_methods, build_for_bench, compare, seconds  # noqa: E402
from cdrl.measure.gpu_report import (  # noqa: E402
    environment,
    peak_fractions,
    readme_paragraph,
    summary,
)
from cdrl.plan.preset_cost import Measured, measured_throughput, preset_cost  # noqa: E402

SCHEMA = "cdrl-gpu-check/1"
EXP = ROOT / "workflow/config/experiments"
PRESET = ROOT / "workflow/config/paper.yaml"
INCEPTION = ROOT / "resources/weights/pt_inception-2015-12-05-fid-port.pth"
QUICK = ["ebm.width=8", "ebm.ch_mult=[1, 2]", "ebm.blocks_per_level=1", "ebm.temb_dim=32",
         "ebm.emb_in_dim=16", "initializer.width=8", "initializer.num_blocks=1",
         "initializer.dim_mults=[1, 1]", "initializer.attn_resolutions=[16]",
         "initializer.temb_dim=32", "initializer.emb_in_dim=16", "initializer.groups=4"]
SECTIONS = {"correctness": 0.30, "speed": 0.25, "ab": 0.40, "cost": 0.05}  # budget shares


class Box:
    """A section's time box: ``allows`` says whether a step of about ``need`` s still fits and
    lists the step as skipped when it does not."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.perf_counter() + seconds
        self.skipped: list[dict] = []

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, need: float, what: str) -> bool:
        if need <= self.left():
            return True
        self.skipped.append({"what": what, "reason": f"needs about {need:.0f} s, "
                                                     f"{max(self.left(), 0):.0f} s left"})
        return False


# ----------------------------------------------------------------------------- 1. correctness
def _value(text: str | None):
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            pass
    return {"True": True, "False": False}.get(text, text)


def parse_junit(path: Path) -> list[dict]:
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = tc.find(tag)
            if el is not None:
                outcome, message = name, (el.get("message") or el.text or "")[:500]
        cases.append({"test": tc.get("name"), "outcome": outcome,
                      "seconds": float(tc.get("time") or 0), "message": message,
                      "properties": {p.get("name"): _value(p.get("value"))
                                     for p in tc.iter("property")}})
    return cases


def correctness(ctx, box: Box) -> dict:
    xml, log = ctx.out / "correctness.xml", ctx.out / "correctness.log"
    args = ["-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-v", "-rA", "-p",
            "no:cacheprovider", "-o", "junit_family=xunit1", f"--junitxml={xml}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    xml.unlink(missing_ok=True)
    try:
        r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=max(box.left(), 30))
        rc, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as err:
        rc, text = None, "".join(x.decode() if isinstance(x, bytes) else (x or "")
                                 for x in (err.stdout, err.stderr))
        box.skipped.append({"what": "the rest of tests/test_cuda.py",
                            "reason": f"pytest stopped at its {err.timeout:.0f} s time box"})
    log.write_text(text)
    if xml.is_file():
        cases = parse_junit(xml)
    else:  # stopped before the XML: the -v lines
        cases = [{"test": t, "outcome": o.lower(), "seconds": None, "message": "",
                  "properties": {}} for t, o in re.findall(r"::(\S+) (PASSED|FAILED|SKIPPED|"
                                                           r"ERROR)", text)]
    counts = {o: sum(c["outcome"] == o for c in cases)
              for o in ("passed", "failed", "error", "skipped")}
    if counts["failed"] or counts["error"]:
        verdict = "failed"
    elif rc is None or rc not in (0, 5):
        verdict = f"incomplete (pytest exit status {rc})"
    elif counts["passed"]:
        verdict = "passed"
    else:
        verdict = "not run: no CUDA device (every case skipped)"
    return {"command": "python " + " ".join(args[:-1]), "measured_on": ctx.dev.type,
            "returncode": rc, "verdict": verdict, "counts": counts, "cases": cases,
            "files": [xml.name, log.name]}


# ----------------------------------------------------------------------------- 2. speed
def build_methods(ctx) -> None:
    if ctx.methods:
        return
    for name in ("cdrl", "drl"):
        cfg, method, weights = build_for_bench(str(EXP / f"{name}_cifar10.yaml"), None,
                                               ctx.overrides, ctx.args.device)
        ctx.cfgs[name], ctx.methods[name], ctx.weights = cfg, method, weights


def _gib(n: int | None) -> float | None:
    return None if n is None else n / 2**30


def grad_timing(method, batch: int, dev, reps: int) -> float:
    """Median seconds of the Langevin drift (one EBM input gradient) at ``batch`` images."""
    chain = ab.make_chain(method, batch)
    with frozen_spectral_norm(chain.ebm):
        ab.drift(chain)
        return statistics.median(seconds(lambda: ab.drift(chain), dev) for _ in range(reps))


def largest_batch(ctx, name: str, mem: dict, s_img: float, box: Box) -> dict:
    """The largest sampling batch that fits (GPU: from the measured working memory per image,
    checked by a one-step call, shrunk on out-of-memory) and its seconds per image."""
    m, dev, sb = ctx.methods[name], ctx.dev, ctx.sample_batch
    if dev.type != "cuda":
        b, how = ctx.max_batch, f"{dev.type}: no memory probe; --max-batch {ctx.max_batch}"
    else:
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info(dev)[0]
        per_image = max((mem["sample_peak_bytes"] - mem["sample_base_bytes"]) / sb, 1.0)
        b = int(0.9 * free / per_image) // 100 * 100
        b = min(b, ctx.max_batch) if ctx.max_batch else b
        how = (f"0.9 x {free / 2**30:.1f} GiB free / {per_image / 2**20:.1f} MiB per image "
               f"(peak of batch {sb})")
        for _ in range(4):
            try:
                seconds(lambda b=b: m.sample(b, steps=1), dev)
                break
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                b, how = int(b * 0.75) // 100 * 100, how + "; shrunk by 1/4 after out-of-memory"
        else:
            return {"batch": None, "how": how + "; nothing fitted"}
    if b <= sb:
        return {"batch": b, "how": how, "s_per_image": None, "timing": "not above --sample-batch"}
    steps = ctx.cfgs[name].sample.langevin_steps
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    if box.left() > 1.3 * s_img * b + 5:
        t, timing = seconds(lambda: m.sample(b), dev), "measured: one full call"
    elif box.allows(0.5 * s_img * b + 5, f"{name} sampling at batch {b}"):
        t1 = seconds(lambda: m.sample(b, steps=1), dev)
        t2 = seconds(lambda: m.sample(b, steps=2), dev)
        t = t1 + (steps - 1) * (t2 - t1)
        timing = f"extrapolated linearly in K to K = {steps} from one call each at K = 1 and 2"
    else:
        return {"batch": b, "how": how, "s_per_image": None, "timing": "skipped: time box"}
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    return {"batch": b, "how": how, "s_per_image": t / b, "timing": timing,
            "peak_memory_gib": _gib(peak)}


def inception_speed(dev: torch.device, batch: int, dim: int) -> dict:
    """Seconds per image of the FID Inception features on ``dev`` at ``batch`` (TF32 off, the
    evaluation protocol), and of one FID's matrix square root at ``dim`` (scipy, on the CPU)."""
    import numpy as np
    import scipy.linalg

    weights = Path(os.environ.get("CDRL_INCEPTION_WEIGHTS") or INCEPTION)
    try:
        from cdrl.eval.evaluate import tf32_disabled
        from cdrl.eval.inception_weights import build_fid_port
    except ImportError as err:
        return {"s_per_image": None, "reason": f"torch-fidelity missing: {err}"}
    if not weights.is_file():
        return {"s_per_image": None, "reason": f"Inception FID weights not staged at {weights}"}
    ext = build_fid_port(weights).to(dev).eval()
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8).to(dev)
    with torch.no_grad(), tf32_disabled():
        ext(x)
        t = statistics.median(seconds(lambda: ext(x), dev) for _ in range(3))
    rng = np.random.default_rng(0)
    m1, m2 = (rng.standard_normal((dim, dim)) for _ in range(2))
    t0 = time.perf_counter()
    scipy.linalg.sqrtm((m1 @ m1.T / dim) @ (m2 @ m2.T / dim))
    return {"s_per_image": t / batch, "batch": batch, "device": dev.type,
            "fid_sqrtm_s": time.perf_counter() - t0, "fid_dim": dim,
            "how": "2048-d pool features of 32x32 uint8 images (resized to 299 inside), median "
                   "of 3 calls after a warm-up; one FID also takes the matrix square root"}


def speed(ctx, box: Box) -> dict:
    build_methods(ctx)
    sb, tb, dev = ctx.sample_batch, ctx.train_batch, ctx.dev
    res = bench_methods({k: (ctx.cfgs[k], m) for k, m in ctx.methods.items()}, sb, tb,
                        ctx.repeats)
    rows, grads, lb = [], {}, {}
    for name, r in res.items():
        s_img = statistics.median(r.sample_s_per_image)
        mem = r.memory
        rows.append({"method": name, "ebm_params_m": r.ebm_params / 1e6,
                     "init_params_m": r.init_params / 1e6,
                     "ebm_grads_per_image": r.ebm_grad_per_image,
                     "init_forwards_per_image": r.init_forward_per_image,
                     "ebm_grads_per_training_example": r.train_grad_per_example,
                     "sample_batch": sb, "sample_s_per_image": s_img,
                     "sample_images_per_s": 1 / s_img, "train_batch": tb,
                     "train_s_per_iter": statistics.median(r.train_s_per_iter),
                     "sample_s_all": r.sample_s_per_image, "train_s_all": r.train_s_per_iter,
                     "sample_peak_memory_gib": _gib(mem.get("sample_peak_bytes")),
                     "train_peak_memory_gib": _gib(mem.get("train_peak_bytes"))})
        m = ctx.methods[name]
        chain = ab.make_chain(m, sb)
        flops = ab.grad_flops(chain)
        t_sb, t_tb = grad_timing(m, sb, dev, ctx.repeats), grad_timing(m, tb, dev, ctx.repeats)
        grads[name] = {"batch": sb, "flops": flops, "flops_per_image": flops / sb,
                       "seconds": t_sb, "seconds_train_batch": t_tb, "train_batch": tb,
                       "tflop_per_s": flops / t_sb / 1e12, "peak_fraction": peak_fractions(
                           ctx.env, flops / t_sb)}
        if box.allows(2 * s_img * sb + 10, f"largest sampling batch of {name}"):
            lb[name] = largest_batch(ctx, name, mem, s_img, box)
    c, d = rows
    ratios = {"sample_drl_over_cdrl": d["sample_s_per_image"] / c["sample_s_per_image"],
              "train_drl_over_cdrl": d["train_s_per_iter"] / c["train_s_per_iter"],
              "nfe_drl_over_cdrl": d["ebm_grads_per_image"] / c["ebm_grads_per_image"],
              "claimed": 2.0}
    big = {k: lb.get(k, {}).get("s_per_image") for k in ("cdrl", "drl")}
    if big["cdrl"] and big["drl"]:
        ratios["sample_drl_over_cdrl_largest_batch"] = big["drl"] / big["cdrl"]
    meta = {"device": str(dev), "threads": torch.get_num_threads(), "batch": sb,
            "train_batch": tb, "repeats": ctx.repeats, "weights": ctx.weights,
            "cdrl": "workflow/config/experiments/cdrl_cifar10.yaml",
            "drl": "workflow/config/experiments/drl_cifar10.yaml"}
    bench_rows = []
    try:  # cdrl bench's own tables of the same measurements
        from cdrl.measure.bench import write_tables

        bench_rows = compare(res["cdrl"], res["drl"], meta)
        write_tables(bench_rows, meta, ctx.out / "speed.csv")
    except Exception as err:  # a table dependency missing on a GPU image: the JSON has it all
        box.skipped.append({"what": "speed.csv/speed.md", "reason": repr(err)[:300]})
    inception = (inception_speed(dev, 4 if ctx.args.quick else 64,
                                 256 if ctx.args.quick else 2048)
                 if box.allows(30, "Inception throughput")
                 else {"s_per_image": None, "reason": "time box"})
    return {"measured_on": dev.type, "precision": "torch defaults (see env.torch_defaults)",
            "weights": ctx.weights, "rows": rows, "ratios": ratios,
            "sample_s_per_image": {r["method"]: r["sample_s_all"] for r in rows},
            "train_s_per_iter": {r["method"]: r["train_s_all"] for r in rows},
            "ebm_gradient": grads, "largest_batch": lb, "inception": inception,
            "bench_rows": bench_rows}


# ----------------------------------------------------------------------------- 3. A/B
def ab_section(ctx, box: Box) -> dict:
    build_methods(ctx)
    d = ctx.env["torch_defaults"]
    abc = ab.ABContext(ctx.methods["cdrl"], ctx.dev, ctx.sample_batch, ctx.train_batch,
                       ctx.ab_rounds, "inductor" if ctx.dev.type == "cuda" else "aot_eager",
                       ab.Setting(tf32=d["tf32_matmul"], cudnn_tf32=d["tf32_cudnn"],
                                  cudnn_benchmark=d["cudnn_benchmark"]), box.allows)
    sp = ctx.results.get("speed") or {}
    train_s = statistics.median(sp["train_s_per_iter"]["cdrl"]) if sp else 1.0
    out = ab.run_ab(abc, ctx.cfgs["cdrl"].sample.langevin_steps, train_s,
                    sp.get("sample_s_per_image", {}).get("cdrl", []),
                    sp.get("largest_batch", {}).get("cdrl"))
    out["compile_backend"] = abc.backend
    for row in out["rows"]:
        if row.get("ebm_grad_tflop_per_s"):
            row["peak_fraction"] = peak_fractions(ctx.env, row["ebm_grad_tflop_per_s"] * 1e12)
    return out


# ----------------------------------------------------------------------------- 4. cost
def _speedup(rows: list[dict], target: str, device: str) -> float | None:
    """Speed-up of the kept changes on ``target`` over torch's defaults (both measured against
    strict float32): what the speed section's times would gain. Kept changes not measured
    together multiply."""
    by = {r["variant"]: r for r in rows if r["target"] == target and r.get("speedup")}
    together = next((r for v, r in by.items() if v.startswith("kept:")), None)
    gain = together["speedup"] if together else 1.0
    if together is None:
        for v in ab.kept_variants(rows, target):
            gain *= by[v]["speedup"]
    if target == "langevin_step" and by.get("cuda_graph", {}).get("decision") == "keep":
        gain *= by["cuda_graph"]["speedup"]
    ref = by.get("torch_defaults", {}).get("speedup") or (1.0 if device == "cpu" else None)
    return gain / ref if ref else None


def cost(ctx, box: Box) -> dict:
    sp = ctx.results.get("speed")
    if not sp:
        raise RuntimeError("no speed measurements to cost the preset from")
    g, lb = sp["ebm_gradient"], sp["largest_batch"]
    best = {}
    for name in ("cdrl", "drl"):
        cands = [statistics.median(sp["sample_s_per_image"][name])]
        cands += [lb[name]["s_per_image"]] if lb.get(name, {}).get("s_per_image") else []
        best[name] = min(cands)
    rows = (ctx.results.get("ab") or {}).get("rows", [])
    gains = {"train": _speedup(rows, "train_iteration", ctx.dev.type),
             "sampling": _speedup(rows, "langevin_step", ctx.dev.type)}
    m = Measured(ctx.dev.type, ctx.train_batch,
                 {k: statistics.median(v) for k, v in sp["train_s_per_iter"].items()},
                 {k: c.train.langevin_steps for k, c in ctx.cfgs.items()},
                 {k: v["seconds_train_batch"] for k, v in g.items()}, best,
                 {k: c.sample.langevin_steps for k, c in ctx.cfgs.items()},
                 {k: v["seconds"] / v["batch"] for k, v in g.items()},
                 ctx.methods["cdrl"].T, sp["inception"].get("s_per_image"),
                 sp["inception"].get("fid_sqrtm_s"),
                 {k: v for k, v in gains.items() if v})
    out = preset_cost(yaml.safe_load(PRESET.read_text()), m)
    out.update(preset=str(PRESET.relative_to(ROOT)), gpu=ctx.env["gpu"],
               readme_paragraph=readme_paragraph(out, ctx.env))
    # Achieved FLOP/s, for scripts/preset_budget.py --gpu-check (per run, per claim, requeues).
    try:
        out["throughput"] = measured_throughput(ctx.cfgs, m)
    except Exception as err:  # the hours above stand without it
        box.skipped.append({"what": "measured throughput", "reason": repr(err)[:300]})
    return out


# ----------------------------------------------------------------------------- command
FUNCS = {"correctness": correctness, "speed": speed, "ab": ab_section, "cost": cost}


def run_sections(ctx, total: Box, skip: set[str]) -> None:
    todo = [n for n in SECTIONS if n not in skip]
    for name in SECTIONS:
        if name in skip:
            ctx.results["sections"][name] = {"status": "skipped", "reason": "--skip"}
            continue
        rest = sum(SECTIONS[n] for n in todo[todo.index(name):])
        box = Box(max(total.left(), 0.0) * SECTIONS[name] / rest)
        t0, entry = time.perf_counter(), {"status": "ok"}
        print(f"gpu_check: {name} ({box.seconds:.0f} s box)", file=sys.stderr, flush=True)
        try:
            ctx.results[name] = FUNCS[name](ctx, box)
        except Exception:
            entry.update(status="failed", error=traceback.format_exc()[-3000:])
            ctx.results[name] = None
        if ctx.dev.type == "cuda":
            torch.cuda.empty_cache()
        entry.update(seconds=time.perf_counter() - t0, time_box_s=box.seconds,
                     skipped=box.skipped)
        ctx.results["sections"][name] = entry
        ctx.results["skipped"] += [{"section": name, **s} for s in box.skipped]


def output_paths(out: str) -> tuple[Path, Path, Path]:
    """``(folder, results file, summary file)``: ``DIR`` or the older ``FILE.json``."""
    p = Path(out)
    if p.suffix == ".json":
        return p.parent, p, p.with_suffix(".md")
    return p, p / "results.json", p / "summary.md"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true",
                    help="tiny networks, batch 2, one repeat, 1 CPU thread (tests the script)")
    ap.add_argument("--sample-batch", type=int, default=100)
    ap.add_argument("--train-batch", type=int, default=32,
                    help="images per training iteration (the paper: 32 per GPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up")
    ap.add_argument("--ab-rounds", type=int, default=5, help="paired rounds per A/B row")
    ap.add_argument("--max-batch", type=int, default=0,
                    help="cap on the largest sampling batch (0: all that fit on a GPU; on a "
                         "CPU 4 with --quick, else twice --sample-batch)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help=f"seconds for all sections together (shares: {SECTIONS})")
    ap.add_argument("--skip", default="", help="sections to leave out, e.g. correctness,ab")
    ap.add_argument("--out", default="results/gpu_check",
                    help="folder for results.json and summary.md (or a .json file)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but CUDA is not available (torch "
              f"{torch.__version__}, built for CUDA {torch.version.cuda}); use a GPU machine, or "
              "--quick --device cpu to test the script", file=sys.stderr)
        return 2
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        raise SystemExit(f"--skip: unknown sections {sorted(skip - set(SECTIONS))}")
    folder, results_file, summary_file = output_paths(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    quick = args.quick
    if quick and dev.type == "cpu":
        torch.set_num_threads(1)  # tiny networks: more threads only add OpenMP overhead
    ctx = SimpleNamespace(
        args=args, dev=dev, out=folder, overrides=QUICK if quick else [], methods={}, cfgs={},
        weights=None, sample_batch=2 if quick else args.sample_batch,
        train_batch=2 if quick else args.train_batch, repeats=1 if quick else args.repeats,
        ab_rounds=3 if quick else args.ab_rounds,
        max_batch=args.max_batch or (0 if dev.type == "cuda" else 4 if quick
                                     else 2 * args.sample_batch), env=environment(dev, quick))
    ctx.results = {"schema": SCHEMA, "env": ctx.env, "budget_s": args.budget_s,
                   "settings": {"sample_batch": ctx.sample_batch, "train_batch": ctx.train_batch,
                                "repeats": ctx.repeats, "ab_rounds": ctx.ab_rounds,
                                "max_batch": ctx.max_batch, "overrides": ctx.overrides},
                   "sections": {}, "skipped": []}
    total = Box(args.budget_s)
    run_sections(ctx, total, skip)
    res = ctx.results
    res["total_s"] = args.budget_s - total.left()
    sp = res.get("speed") or {}
    res["rows"], res["ratios"] = sp.get("rows", []), sp.get("ratios", {})  # the older layout
    from cdrl.io import atomic_write_text

    atomic_write_text(results_file, json.dumps(res, indent=1, default=str) + "\n")
    atomic_write_text(summary_file, summary(res))
    for r in res["rows"]:
        print(f"{r['method']}: {r['sample_images_per_s']:.4g} images/s (batch "
              f"{r['sample_batch']}), {r['train_s_per_iter']:.4g} s/iteration (batch "
              f"{r['train_batch']}), {r['ebm_grads_per_image']:g} EBM gradients / image")
    print(json.dumps({"results": str(results_file), "summary": str(summary_file),
                      "measured_on": dev.type, "sections": {k: v["status"] for k, v in
                                                            res["sections"].items()}}))
    verdict = (res.get("correctness") or {}).get("verdict", "")
    failed = any(v["status"] == "failed" for v in res["sections"].values())
    return 1 if failed or verdict == "failed" or verdict.startswith("incomplete") else 0


if __name__ == "__main__":
    sys.exit(main())
