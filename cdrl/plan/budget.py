"""GPU-hours of a workflow preset, per run and per claim, from FLOPs counted on each run's networks,
and the requeue budget each training job needs.

    python scripts/preset_budget.py --preset workflow/config/paper.yaml     # the Markdown tables
    plan_cost(preset, throughput)       # one plan: rows per run, sample file, evaluation, task
    claim_costs(preset, throughput)     # what selecting each claim alone would plan, and totals
    requeue_budget(preset, run, throughput)     # time-limit requeues a training job needs
    plan_warnings(preset, throughput)   # runs that cannot finish within their requeues

Work is counted (``cdrl.measure.run_flops``: FLOPs per training image and per sampled image of
each run's own networks) and multiplied by what the preset plans, as the workflow plans it
(``workflow/rules/common.smk``):

* training, per run and seed: ``iterations x batch x FLOPs of one training image at K``;
* sampling, per sample file: the main table, ablations, headline, sampling-step sweeps, learning
  curves and the guidance sweep (``sample_files``): ``images x FLOPs of one image at the file's
  K`` under its guide (2 energies per step where w != 0; a conditional run's plain files use its
  ``sample.guidance``);
* evaluation: Inception-v3 features of every sample file and, once, of each reference split:
  ``INCEPTION_FLOPS`` per image (torchvision's count, 5.71 G multiply-adds at 299x299);
* downstream: inpainting (masks x images, sampled at K), composition (the composed guide, each
  condition under CFG and the unconditional model), OOD scores (one energy per image), and the
  speed benchmark (its warm-up and timed rounds of sampling and training calls).

GPU-hours = FLOPs / throughput (FLOP/s per GPU) / 3600. The throughput is the user's, measured
by ``scripts/gpu_check.py``, or ``DEFAULT_THROUGHPUT``. Not counted: data loading, job start-up
and queueing, data-parallel communication, checkpoints, evaluations with feature extractors
other than Inception (small CNNs), and the 2-D toy runs (CPU-sized; listed).

Requeues: a training job's time limit (``runtime``) bounds one attempt; ``requeue_budget`` gives
the attempts its estimated wall-clock hours need (``REQUEUE_MARGIN`` x the estimate), which the
workflow passes to the submitit plugin as the job's ``max_requeue`` resource
(``workflow/rules/common.smk``).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path

from cdrl.measure.gpu_report import gpu_peaks
from cdrl.measure.run_flops import is_image_run, run_work
from cdrl.plan.experiments import apply_every_run, resolve_run, run_seeds, select_part
from cdrl.report.curves import snapshot_iterations
from cdrl.tasks.ood import ALIASES as OOD_ALIASES

__all__ = ["Throughput", "DEFAULT_THROUGHPUT", "INCEPTION_FLOPS", "SPLIT_IMAGES",
           "REQUEUE_MARGIN", "MIN_REQUEUE", "ATTEMPT_OVERHEAD_H", "sample_files", "plan_cost",
           "claim_costs", "requeue_budget", "plan_warnings", "throughput_from_gpu_check",
           "runtime_minutes", "attempt_hours"]

# Images per split (spec 8; CelebA's official partitions), for reference statistics and OOD sets.
SPLIT_IMAGES = {"cifar10:train": 50_000, "cifar10:test": 10_000, "cifar100:train": 50_000,
                "cifar100:test": 10_000, "imagenet32:train": 1_281_167, "imagenet32:val": 50_000,
                "celeba64:train": 162_770, "celeba64:test": 19_962}
# Inception-v3 at 299x299: 5.71 G multiply-adds per image (torchvision's model table), two FLOPs
# each as FlopCounterMode counts; the 32- and 64-pixel images are resized to 299 inside.
INCEPTION_FLOPS = 2 * 5.71e9
# Default throughput: 15 % of an H100 SXM's dense TF32 tensor-core peak (494.7 TFLOP/s, NVIDIA's
# datasheet, cdrl.measure.gpu_report.PEAKS). torch runs convolutions in TF32 by default (cuDNN);
# 15 % is what NVIDIA's own ResNet-50 v1.5 PyTorch recipe reaches in TF32 on one A100 (938 images/s
# x 3 x 8.2 GFLOP per image = 23 TFLOP/s of 156; DeepLearningExamples, ConvNets/resnet50v1.5
# README). An assumption, not a measurement: scripts/gpu_check.py measures yours.
DEFAULT_UTILISATION = 0.15


@dataclass(frozen=True)
class Throughput:
    """FLOP/s per GPU: training, and sampling (also used for evaluation and downstream tasks)."""

    train: float
    sample: float
    source: str

    @staticmethod
    def tflops(value: float, source: str | None = None) -> Throughput:
        return Throughput(value * 1e12, value * 1e12,
                          source or f"{value:g} TFLOP/s per GPU (given)")


_PEAK = gpu_peaks("H100 SXM")["tf32"]
DEFAULT_THROUGHPUT = Throughput.tflops(
    DEFAULT_UTILISATION * _PEAK,
    f"{DEFAULT_UTILISATION * _PEAK:.1f} TFLOP/s per GPU, an assumption: "
    f"{DEFAULT_UTILISATION:.0%} of an H100 SXM's dense TF32 peak ({_PEAK:g} TFLOP/s, NVIDIA "
    "datasheet), the fraction NVIDIA's ResNet-50 PyTorch recipe reaches in TF32 on an A100")


def throughput_from_gpu_check(results: dict) -> Throughput:
    """The throughput ``scripts/gpu_check.py`` measured (its ``results.json``)."""
    got = (results.get("cost") or {}).get("throughput") or {}
    if not got.get("train_flop_per_s") or not got.get("sample_flop_per_s"):
        raise ValueError("the GPU check's results have no measured throughput (cost.throughput); "
                         "run scripts/gpu_check.py again with its cost section")
    env = results.get("env", {})
    where = env.get("gpu") or f"{env.get('cpu', 'a CPU')} (CPU: not a GPU estimate)"
    return Throughput(float(got["train_flop_per_s"]), float(got["sample_flop_per_s"]),
                      f"measured by scripts/gpu_check.py on {where}, {str(env.get('date'))[:10]}: "
                      f"{got['train_flop_per_s'] / 1e12:.3g} TFLOP/s per GPU in training, "
                      f"{got['sample_flop_per_s'] / 1e12:.3g} in sampling")


# ----------------------------------------------------------------------------- the plan
def _plan(preset: dict) -> dict:
    """The preset as the workflow plans it: ``every_run:`` folded in, cut to its ``part:`` or to
    the claims its ``decide:`` names (the same cut, through a part listing them)."""
    preset = apply_every_run(preset)
    if preset.get("decide") and not preset.get("part"):
        preset = _claims_plan(preset, list(preset["decide"]))
    out = select_part(preset)
    for key in ("part", "decide"):
        out.pop(key, None)
    return out


class _Runs:
    """Resolved configs of a preset's runs (first seed; seeds differ only in ``seed``)."""

    def __init__(self, preset: dict, experiments_dir) -> None:
        self.preset, self.dir, self._cfg = preset, experiments_dir, {}

    def cfg(self, run: str) -> dict:
        if run not in self._cfg:
            self._cfg[run] = resolve_run(self.preset, run, run_seeds(self.preset, run)[0],
                                         self.dir)
        return self._cfg[run]

    def resource(self, run: str, name: str, default):
        spec = self.preset["runs"][run].get("resources") or {}
        return spec.get(name, (self.preset.get("train_resources") or {}).get(name, default))


def runtime_minutes(value) -> float:
    """A Snakemake ``runtime`` in minutes: a number, or ``"2d"``, ``"12h30m"``, ``"90m"``."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", str(value))
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", str(value)):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"runtime: cannot read {value!r} as minutes") from None
    scale = {"d": 1440.0, "h": 60.0, "m": 1.0, "s": 1 / 60}
    return sum(float(n) * scale[u] for n, u in parts)


def _train_row(runs: _Runs, run: str, tp: Throughput) -> dict:
    cfg, seeds = runs.cfg(run), run_seeds(runs.preset, run)
    tc = cfg["train"]
    gpus = int(runs.resource(run, "gpu", 0) or 0)
    runtime_h = runtime_minutes(runs.resource(run, "runtime", 60)) / 60
    row = {"run": run, "method": cfg["method"], "dataset": cfg["data"]["name"],
           "seeds": len(seeds), "iterations": tc["iterations"], "batch": tc["batch_size"],
           "K": tc["langevin_steps"], "gpus": gpus, "runtime_h": runtime_h, "attempts": None,
           "requeue_budget": MIN_REQUEUE, "max_requeue": None}
    explicit = runs.resource(run, "max_requeue", None)
    if gpus:
        row["max_requeue"] = MIN_REQUEUE if explicit is None else int(explicit)
    if not is_image_run(cfg):
        return {**row, "costed": False, "flops_per_image": None, "flops_per_seed": None,
                "gpu_hours": None, "wall_h_per_seed": None,
                "note": "2-D toy (CPU-sized and latency-bound: FLOPs say nothing of its time)"}
    per_image = run_work(cfg).train_image(tc["langevin_steps"])
    per_seed = per_image * tc["batch_size"] * tc["iterations"]
    gpu_h = per_seed / tp.train / 3600
    row = {**row, "costed": True, "flops_per_image": per_image, "flops_per_seed": per_seed,
           "gpu_hours": gpu_h * len(seeds), "wall_h_per_seed": gpu_h / gpus if gpus else None,
           "note": ""}
    if gpus:
        row["attempts"] = math.ceil(row["wall_h_per_seed"] / attempt_hours(runtime_h))
        row["requeue_budget"] = _budget(row)
        row["max_requeue"] = row["requeue_budget"] if explicit is None else int(explicit)
    return row


def _eval_spec(preset: dict, runs: _Runs, run: str) -> dict | None:
    return (preset.get("evaluation") or {}).get(runs.cfg(run)["data"]["name"])


def _image_runs(tables: dict) -> list[str]:
    names = set(tables.get("main", [])) | set(tables.get("sampling_steps", {}))
    names |= {r for a in tables.get("ablations", {}).values() for r in a["runs"]}
    names |= set(tables.get("headline", {}).values())
    return sorted(names)


def sample_files(preset: dict, experiments_dir: str | Path | None = None) -> list[dict]:
    """Every sample file a (planned) preset draws, as ``workflow/rules/common.smk`` plans them:
    ``{run, seed, name, steps, guidance, images, extractors, purpose}``; ``guidance`` is None for
    an unconditional run's files."""
    return _sample_files(preset, _Runs(preset, experiments_dir))


def _sample_files(preset: dict, runs: _Runs) -> list[dict]:
    tables, files = preset.get("tables", {}), {}

    def add(run, seed, name, steps, images, extractors, purpose, guidance=None):
        cfg = runs.cfg(run)
        if guidance is None and cfg["data"]["conditional"]:
            guidance = float(cfg["sample"]["guidance"])
        key = (run, seed, f"{name}-n{images}")
        entry = files.setdefault(key, {"run": run, "seed": seed, "name": key[2], "steps": steps,
                                       "guidance": guidance, "images": images,
                                       "extractors": [], "purpose": purpose})
        entry["extractors"] = sorted(set(entry["extractors"]) | set(extractors))

    for run in _image_runs(tables):
        spec = _eval_spec(preset, runs, run)
        if spec is None:
            continue
        k = runs.cfg(run)["sample"]["langevin_steps"]
        steps = [k] + [s for s in tables.get("sampling_steps", {}).get(run, []) if s != k]
        for seed in run_seeds(preset, run):
            for s in steps:
                add(run, seed, f"k{s}", s, spec["num_samples"], spec.get("metrics") or {},
                    "table" if s == k else "step sweep")
            if run in tables.get("headline", {}).values() and spec.get("headline_metrics"):
                add(run, seed, f"k{k}", k, spec.get("headline_num_samples", spec["num_samples"]),
                    spec["headline_metrics"], "headline")
    curves = preset.get("curves") or {}
    for run in curves.get("runs", []):
        cfg, spec = runs.cfg(run), _eval_spec(preset, runs, run) or {}
        for seed in run_seeds(preset, run):
            for it in snapshot_iterations(cfg["train"]["snapshot_every"],
                                          cfg["train"]["iterations"]):
                add(run, seed, f"it{it}", cfg["sample"]["langevin_steps"],
                    curves["num_samples"], spec.get("metrics") or {}, "curve")
    g = (preset.get("downstream") or {}).get("guidance")
    if g:
        run = g["run"]
        spec, k = _eval_spec(preset, runs, run) or {}, runs.cfg(run)["sample"]["langevin_steps"]
        for w in g["weights"]:
            add(run, run_seeds(preset, run)[0], f"guided-w{float(w):g}", k, g["num_samples"],
                spec.get("metrics") or {}, "guidance", float(w))
    return list(files.values())


def _rows(guidance: float | None) -> int:
    """Label rows of a sampling guide: 2 (conditional and null) for CFG with w != 0."""
    return 2 if guidance else 1


def _sample_cost(runs: _Runs, f: dict, tp: Throughput) -> dict:
    w = run_work(runs.cfg(f["run"]))
    flops = f["images"] * w.sample_image(f["steps"], _rows(f["guidance"]))
    return {**f, "flops": flops, "gpu_hours": flops / tp.sample / 3600}


def _evaluation(preset: dict, runs: _Runs, files: list[dict], tp: Throughput) -> dict:
    """Inception features of every sample file and of each reference split, once."""
    images, refs, other = 0, {}, set()
    for f in files:
        dataset = runs.cfg(f["run"])["data"]["name"]
        spec = preset["evaluation"][dataset]
        for ex in f["extractors"]:
            if ex != "inception":
                other.add(ex)
                continue
            images += f["images"]
            ref = (spec.get("headline_reference", spec["reference"])
                   if ex not in (spec.get("metrics") or {}) else spec["reference"])
            refs[ref] = SPLIT_IMAGES.get(ref)
    unknown = sorted(r for r, n in refs.items() if n is None)
    images += sum(n for n in refs.values() if n)
    flops = images * INCEPTION_FLOPS
    return {"images": images, "references": refs, "flops": flops,
            "gpu_hours": flops / tp.sample / 3600, "unknown_references": unknown,
            "other_extractors": sorted(other)}


def _split_images(name: str) -> int | None:
    """Images of an OOD set name (``NAME[:SPLIT][-interp]``, aliases resolved), if known."""
    name = OOD_ALIASES.get(name, name).removesuffix("-interp")
    return SPLIT_IMAGES.get(name if ":" in name else f"{name}:test")


def _side_work(preset: dict, runs: _Runs, spec: dict, side: str):
    """(run work, train K, sample K) of one side of a speed case; None for a 2-D toy run."""
    if f"{side}_run" in spec:
        cfg = runs.cfg(spec[f"{side}_run"])
    else:
        path = Path(runs.dir or preset.get("experiments_dir", "workflow/config/experiments"))
        cfg = resolve_run({"runs": {"x": {"base": spec[f"{side}_config"]}}}, "x", 0, path)
    if not is_image_run(cfg):
        return None
    return run_work(cfg), cfg["train"]["langevin_steps"], cfg["sample"]["langevin_steps"]


def _downstream(preset: dict, runs: _Runs, tp: Throughput) -> list[dict]:
    """FLOPs of the downstream tasks (but the guidance sweep, a sample file) and speed cases."""
    ds, out = preset.get("downstream") or {}, []

    def row(task, run, images, flops, how):
        out.append({"task": task, "run": run, "images": images, "flops": flops,
                    "gpu_hours": flops / tp.sample / 3600, "how": how})

    ds = dict(ds)
    for task, t in list(ds.items()):  # a task on a 2-D toy run: listed, not counted
        if isinstance(t, dict) and "run" in t and not is_image_run(runs.cfg(t["run"])):
            row(task, t["run"], 0, 0.0, "2-D toy: not counted")
            del ds[task]
    if "inpaint" in ds:
        t = ds["inpaint"]
        cfg = runs.cfg(t["run"])
        n = t["num"] * len(t["masks"])
        row("inpaint", t["run"], n, n * run_work(cfg).sample_image(cfg["sample"]
                                                                    ["langevin_steps"]),
            f"{t['num']:,} images x {len(t['masks'])} masks, sampled at K")
    if "compose" in ds:
        t = ds["compose"]
        cfg, c = runs.cfg(t["run"]), len(t["conditions"])
        rows = (c + 1) + 2 * c + 1  # the composition, each condition under CFG, unconditional
        row("compose", t["run"], t["num_samples"], t["num_samples"] * run_work(cfg).sample_image(
            cfg["sample"]["langevin_steps"], rows), f"{rows} energies per step")
    if "ood" in ds:
        t = ds["ood"]
        sizes = [_split_images(s) for s in [t["in_dist"], *t["sets"]]]
        n = sum(s for s in sizes if s)
        row("ood", t["run"], n, n * run_work(runs.cfg(t["run"])).energy_image(),
            "one energy per image" + ("" if all(sizes) else " (sets of unknown size left out)"))
    for case, spec in (preset.get("speed") or {}).items():
        calls = max(int(spec.get("repeats", 10)), 2) + 1  # the timed rounds and one warm-up
        batch = int(spec.get("batch", 16))
        train_batch = int(spec.get("train_batch", batch))
        flops = 0.0
        sides = [_side_work(preset, runs, spec, side) for side in ("cdrl", "drl")]
        if None in sides:
            row(f"speed:{case}", spec.get("cdrl_run", ""), 0, 0.0, "2-D toy: not counted")
            continue
        for w, k_train, k_sample in sides:
            flops += calls * (batch * w.sample_image(k_sample)
                              + w.train_iteration(train_batch, k_train))
        row(f"speed:{case}", spec.get("cdrl_run", ""), 2 * calls * batch, flops,
            f"{calls} calls of each side: {batch} images, one iteration of {train_batch}")
    return out


def plan_cost(preset: dict, throughput: Throughput = DEFAULT_THROUGHPUT,
              experiments_dir: str | Path | None = None) -> dict:
    """Rows and GPU-hours of everything ``preset`` plans (its ``part:`` only, if it has one)."""
    plan = _plan(preset)
    runs = _Runs(plan, experiments_dir)
    train = [_train_row(runs, run, throughput) for run in plan["runs"]]
    files = [_sample_cost(runs, f, throughput) for f in _sample_files(plan, runs)]
    evaluation = _evaluation(plan, runs, files, throughput)
    downstream = _downstream(plan, runs, throughput)
    hours = {"training": sum(r["gpu_hours"] or 0.0 for r in train),
             "sampling": sum(f["gpu_hours"] for f in files),
             "evaluation": evaluation["gpu_hours"],
             "downstream": sum(d["gpu_hours"] for d in downstream)}
    hours["total"] = sum(hours.values())
    not_costed = [f"`{r['run']}`, a {r['note']}" for r in train if not r["costed"]]
    not_costed += [f"evaluation with {ex} features (a small CNN)"
                   for ex in evaluation["other_extractors"]]
    not_costed += [f"reference {r}: size unknown" for r in evaluation["unknown_references"]]
    return {"throughput": throughput, "training": train, "sampling": files,
            "evaluation": evaluation, "downstream": downstream, "hours": hours,
            "runs": list(plan["runs"]), "not_costed": not_costed}


# ----------------------------------------------------------------------------- claims
BUDGET_PART = "_budget"


def _claims_plan(preset: dict, ids: list[str]) -> dict:
    """The preset cut to ``ids``, as ``--config part=...`` with a part listing them would be."""
    out = copy.deepcopy(apply_every_run(preset))
    out["parts"] = {**(out.get("parts") or {}), BUDGET_PART: {"claims": list(ids)}}
    out["part"] = BUDGET_PART
    return out


def claim_costs(preset: dict, throughput: Throughput = DEFAULT_THROUGHPUT,
                experiments_dir: str | Path | None = None) -> dict:
    """What each claim costs alone (what selecting only that claim plans), all claims together
    (a run or file several claims read counted once) and the whole preset."""
    base = {k: v for k, v in preset.items() if k not in ("part", "decide")}
    ids = [c["id"] for c in base.get("claims", [])]
    plans = {cid: plan_cost(_claims_plan(base, [cid]), throughput, experiments_dir)
             for cid in ids}
    readers: dict[str, list[str]] = {}
    for cid, p in plans.items():
        for run in p["runs"]:
            readers.setdefault(run, []).append(cid)
    rows = [{"claim": cid, "runs": p["runs"], "hours": p["hours"],
             "shared": [r for r in p["runs"] if len(readers[r]) > 1]}
            for cid, p in plans.items()]
    together = plan_cost(_claims_plan(base, ids), throughput, experiments_dir) if ids else None
    whole = plan_cost(base, throughput, experiments_dir)
    unread = [r for r in whole["runs"] if r not in readers]
    return {"throughput": throughput, "claims": rows, "readers": readers,
            "all_claims": together, "whole": whole, "unread_runs": unread}


# ----------------------------------------------------------------------------- requeues
# Each attempt of a training job loses about this much to the USR2 lead before its time limit
# (submitit-signal-delay-s, 3 minutes), the checkpoint, and the next attempt's start-up (data,
# networks, NCCL): the hours an attempt trains are its runtime less this.
ATTEMPT_OVERHEAD_H = 0.25
# Requeues allow for twice the estimated hours: the default throughput is an assumption that may
# be off by that much, and an unused requeue costs nothing (a job requeues only while it trains).
REQUEUE_MARGIN = 2.0
# Never fewer requeues than the profile's default (slurm/config.yaml, submitit-max-requeue).
MIN_REQUEUE = 3


def attempt_hours(runtime_h: float) -> float:
    """Hours an attempt of ``runtime_h`` hours trains (at least half of it for short limits)."""
    return max(runtime_h - ATTEMPT_OVERHEAD_H, runtime_h / 2)


def _budget(row: dict) -> int:
    need = math.ceil(REQUEUE_MARGIN * row["wall_h_per_seed"] / attempt_hours(row["runtime_h"]))
    return max(MIN_REQUEUE, need - 1)


def requeue_budget(preset: dict, run: str, throughput: Throughput = DEFAULT_THROUGHPUT,
                   experiments_dir: str | Path | None = None) -> int:
    """Time-limit requeues a training job of ``run`` needs: ``ceil(REQUEUE_MARGIN x estimated
    wall-clock hours per seed / hours trained per attempt) - 1``, at least ``MIN_REQUEUE``. Runs
    on no GPU (the CPU presets) and the 2-D toys get ``MIN_REQUEUE`` without an estimate."""
    runs = _Runs(apply_every_run(preset), experiments_dir)
    if not int(runs.resource(run, "gpu", 0) or 0):
        return MIN_REQUEUE
    return _train_row(runs, run, throughput)["requeue_budget"]


def plan_warnings(preset: dict, throughput: Throughput = DEFAULT_THROUGHPUT,
                  experiments_dir: str | Path | None = None) -> list[str]:
    """One line per GPU training run that cannot finish within ``(max_requeue + 1)`` attempts of
    its runtime (its ``max_requeue`` resource if the preset sets one, else
    ``requeue_budget``), or that fits only without ``REQUEUE_MARGIN``."""
    plan = _plan(preset)
    runs, out = _Runs(plan, experiments_dir), []
    for run in plan["runs"]:
        if not int(runs.resource(run, "gpu", 0) or 0):
            continue
        row = _train_row(runs, run, throughput)
        if not row["costed"]:
            continue
        allowed = row["max_requeue"]
        window = (allowed + 1) * attempt_hours(row["runtime_h"])
        need = row["wall_h_per_seed"]
        what = (f"{run}: about {need:,.0f} h of training per seed on {row['gpus']} GPU(s) "
                f"({throughput.train / 1e12:.1f} TFLOP/s per GPU), {allowed + 1} attempts of "
                f"{row['runtime_h']:g} h allowed (max_requeue {allowed})")
        if need > window:
            out.append(f"{what}: it cannot finish; raise its runtime or max_requeue")
        elif REQUEUE_MARGIN * need > window:
            out.append(f"{what}: it fits only if the estimate is not {REQUEUE_MARGIN:g}x low")
    return out
