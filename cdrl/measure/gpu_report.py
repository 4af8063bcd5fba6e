"""The GPU check's report: the machine it ran on, the GPU's peaks, and ``summary.md``.

    python scripts/gpu_check.py --out DIR     # writes DIR/results.json and DIR/summary.md

``environment`` records what a number needs to be read later (GPU model, driver from
``nvidia-smi``, torch, CUDA and cuDNN versions, torch's default precision flags, commit);
``gpu_peaks`` looks the GPU's dense peak rates up by name; ``summary`` renders ``results.json``
(schema ``cdrl-gpu-check/1``) for people, with the paragraph for the README's cluster section.
"""

from __future__ import annotations

import platform
import re
import subprocess
import time
from pathlib import Path

import torch

from cdrl.report.render import fmt

__all__ = ["PEAKS", "gpu_peaks", "environment", "peak_fractions", "summary", "readme_paragraph"]

ROOT = Path(__file__).resolve().parents[2]
NA = "n/a"  # a missing value in the summary (fmt's ``missing``)

# Dense peak TFLOP/s, FP32 / TF32 Tensor Core / BF16 Tensor Core, from NVIDIA's datasheets (their
# "with sparsity" figures are twice these): H100 and H200 SXM 67 / 494.7 / 989.4; H100 and H200
# NVL 60 / 417.5 / 835.5; H100 PCIe 51 / 378 / 756; A100 (SXM4 and PCIe) 19.5 / 156 / 312; L40S
# 91.6 / 183 / 362; L4 30.3 / 60 / 121; A10 31.2 / 62.5 / 125. Matched on the device name in this
# order; any other GPU gets null peaks rather than a guess.
PEAKS = [(r"H[12]00 NVL", "H100/H200 NVL", 60.0, 417.5, 835.5),
         (r"H200", "H200 SXM", 67.0, 494.7, 989.4),
         (r"H100 PCIe", "H100 PCIe", 51.0, 378.0, 756.0),
         (r"H100", "H100 SXM", 67.0, 494.7, 989.4),
         (r"A100", "A100", 19.5, 156.0, 312.0),
         (r"L40S", "L40S", 91.6, 183.0, 362.0),
         (r"\bL4\b", "L4", 30.3, 60.0, 121.0),
         (r"\bA10\b", "A10", 31.2, 62.5, 125.0)]


def gpu_peaks(name: str | None) -> dict | None:
    for pattern, model, fp32, tf32, bf16 in PEAKS:
        if name and re.search(pattern, name):
            return {"model": model, "fp32": fp32, "tf32": tf32, "bf16": bf16,
                    "unit": "TFLOP/s", "source": "NVIDIA datasheet, dense"}
    return None


def _command(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor())


def environment(dev: torch.device, quick: bool) -> dict:
    env = {"measured_on": dev.type, "device": str(dev), "quick": quick,
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "python": platform.python_version(), "cpu": _cpu_name(),
           "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "git_commit": _command(["git", "rev-parse", "HEAD"]),
           "torch_defaults": {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                              "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                              "cudnn_benchmark": torch.backends.cudnn.benchmark},
           "gpu": None, "driver": None, "peaks": None}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        keys = ["name", "driver_version", "memory_total_mib", "max_sm_clock_mhz", "power_limit_w"]
        smi = _command(["nvidia-smi", "--query-gpu=" + ",".join(
            ["name", "driver_version", "memory.total", "clocks.max.sm", "power.limit"]),
            "--format=csv,noheader,nounits"])
        smi = dict(zip(keys, (v.strip() for v in smi.splitlines()[0].split(",")),
                       strict=False)) if smi else None
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}",
                   gpu_memory_gib=p.total_memory / 2**30, multiprocessors=p.multi_processor_count,
                   nvidia_smi=smi, driver=smi and smi.get("driver_version"),
                   peaks=gpu_peaks(p.name))
    return env

def peak_fractions(env: dict, flop_per_s: float) -> dict | None:
    """``flop_per_s`` as fractions of the GPU's FP32, TF32 and BF16 peaks (None: unknown GPU)."""
    peaks = env.get("peaks")
    if not peaks:
        return None
    return {k: flop_per_s / 1e12 / peaks[k] for k in ("fp32", "tf32", "bf16")}


# ----------------------------------------------------------------------------- summary.md
def readme_paragraph(c: dict, env: dict) -> str:
    h = c["hours"]
    dev = env["gpu"] or f"{env['cpu']} (CPU, toy networks: not a GPU estimate)"
    ev = "not measured" if h["evaluation"] is None else f"{h['evaluation']:,.0f}"
    text = (f"**Cost of the paper preset (measured on one {dev}, {env['date'][:10]}; "
            f"`scripts/gpu_check.py`, results/reference/gpu/).** Training to the preset's "
            f"iteration counts: {h['training']:,.0f} GPU-hours; sampling 50,000 images per "
            f"evaluated step count and guidance weight: {h['sampling']:,.0f}; Inception "
            f"evaluation: {ev}; in all {h['total']:,.0f} GPU-hours at torch's default "
            f"precision.")
    kept = c.get("hours_with_kept_changes")
    if kept:
        text += (f" With the changes the A/B kept, about {kept['total']:,.0f} GPU-hours "
                 "(projected from the measured speed-ups).")
    return text + (" Data-parallel communication is not included; each run's basis is in the "
                   "results' cost rows.")


def _table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(fmt(c, missing=NA) for c in r) + " |" for r in rows] + [""])


def _pct(fr: dict | None, key: str) -> str:
    return "n/a" if not fr else f"{100 * fr[key]:.3g} %"


def summary(res: dict) -> str:
    env, out = res["env"], []
    where = env["gpu"] or f"CPU ({env['cpu']})"
    out += [f"# GPU check: {where}, {env['date']}", ""]
    if env["measured_on"] != "cuda" or env["quick"]:
        out += [f"> **Measured on {env['measured_on']}{' at toy sizes (--quick)' * env['quick']}"
                ": these numbers test the script; they are not GPU results.**", ""]
    out += _table(["GPU", "driver", "torch", "CUDA", "cuDNN", "python", "CPU", "commit"],
                  [[env["gpu"], env["driver"], env["torch"], env["cuda"], env["cudnn"],
                    env["python"], env["cpu"], (env["git_commit"] or "n/a")[:10]]])
    out += [f"torch's default precision flags: {env['torch_defaults']}. Budget "
            f"{res['budget_s']:.0f} s; sections: " + ", ".join(
                f"{k} {v['status']} ({fmt(v.get('seconds'), 3, NA)} s)"
                for k, v in res["sections"].items()), ""]
    for name, part in (("correctness", _summary_correctness), ("speed", _summary_speed),
                       ("ab", _summary_ab), ("cost", _summary_cost)):
        if res.get(name):
            out += part(res[name], env)
        elif name in res["sections"]:
            err = res["sections"][name].get("error", "").strip().splitlines()[-1:]
            out += [f"## {name}: {res['sections'][name]['status']}", "", *err, ""]
    if res["skipped"]:
        out += ["## Skipped", ""] + [f"- {s['section']}: {s['what']} ({s['reason']})"
                                     for s in res["skipped"]] + [""]
    return "\n".join(out)


def _summary_correctness(c: dict, env: dict) -> list[str]:
    rows = [[x["test"], x["outcome"], x["seconds"], ", ".join(
        f"{k} {fmt(v, 3, NA)}" for k, v in x["properties"].items()) or x["message"][:80]]
        for x in c["cases"]]
    return ([f"## 1. Correctness on {c['measured_on']}: {c['verdict']}", "",
             f"`{c['command']}`: {c['counts']}", ""]
            + _table(["test", "outcome", "s", "measured"], rows))


def _summary_speed(s: dict, env: dict) -> list[str]:
    lb = s["largest_batch"]
    rows = [[r["method"], r["ebm_params_m"], r["ebm_grads_per_image"],
             r["init_forwards_per_image"], r["train_s_per_iter"], r["train_peak_memory_gib"],
             r["sample_s_per_image"], r["sample_images_per_s"], r["sample_peak_memory_gib"],
             lb.get(r["method"], {}).get("batch"), lb.get(r["method"], {}).get("s_per_image")]
            for r in s["rows"]]
    r0 = s["rows"][0]
    out = [f"## 2. Speed on {s['measured_on']} ({s['precision']}; weights: {s['weights']})", ""]
    out += _table(["method", "EBM M params", "EBM grads / image", "init fwd / image",
                   f"train s / iter (batch {r0['train_batch']})", "train peak GiB",
                   f"sampling s / image (batch {r0['sample_batch']})", "images/s",
                   "sampling peak GiB", "largest batch", "s / image there"], rows)
    out += ["DRL / CDRL: " + ", ".join(f"{k} {fmt(v, 3, NA)}" for k, v in s["ratios"].items()), ""]
    out += [f"- largest batch, {k}: {v.get('how')}; {v.get('timing')}" for k, v in lb.items()]
    g = s["ebm_gradient"]
    out += ["", "EBM input gradient (forward + input backward), FLOPs by torch.utils.flop_counter:",
            ""] + _table(["method", "GFLOP / image", "batch", "s", "TFLOP/s", "of FP32 peak",
                          "of TF32 peak", "of BF16 peak"],
                         [[k, v["flops_per_image"] / 1e9, v["batch"], v["seconds"],
                           v["tflop_per_s"], _pct(v["peak_fraction"], "fp32"),
                           _pct(v["peak_fraction"], "tf32"), _pct(v["peak_fraction"], "bf16")]
                          for k, v in g.items()])
    inc = s["inception"]
    out += [f"Inception features: {fmt(inc.get('s_per_image'), missing=NA)} s / image "
            f"({inc.get('how') or inc.get('reason')})", ""]
    return out


def _peak_key(variant: str) -> str:
    """The peak a change's arithmetic runs against: BF16, TF32 (cuDNN's default too) or FP32."""
    if "bf16" in variant:
        return "bf16"
    return "tf32" if "tf32" in variant or variant == "torch_defaults" else "fp32"


def _summary_ab(a: dict, env: dict) -> list[str]:
    rows = [[r["variant"], r["target"], r.get("batch"), r.get("base_median_s"),
             r.get("variant_median_s"), r["speedup"], r["error"], r.get("ebm_grad_tflop_per_s"),
             _pct(r.get("peak_fraction"), _peak_key(r["variant"])) + f" {_peak_key(r['variant'])}"
             if r.get("peak_fraction") else "n/a", r["decision"], r["reason"]]
            for r in a["rows"]]
    flops = a.get("ebm_grad_flops")
    return ([f"## 3. A/B on {a['measured_on']}: one change at a time against "
             f"{a['reference']}", "", f"Rule: {a['rule']}. Model: {a['model']}; "
             f"{a['rounds']} paired rounds after a warm-up; torch.compile backend "
             f"{a.get('compile_backend')}. Errors: Langevin rows, relative error of the drift; "
             "training rows, relative error of the EBM loss. TFLOP/s: the EBM gradient's "
             f"{fmt(flops / 1e9 if flops else None, missing=NA)} GFLOP "
             f"(batch {a.get('ebm_grad_batch')}) over "
             "the changed step's time, and its fraction of the matching peak.", ""]
            + _table(["change", "target", "batch", "float32 s", "changed s", "speed-up",
                      "rel. error", "TFLOP/s", "of peak", "decision", "why"], rows))


def _summary_cost(c: dict, env: dict) -> list[str]:
    h = c["hours"]
    out = [f"## 4. Cost of {c['preset']} on {c['gpu'] or env['cpu']} "
           f"(measured on {c['measured_on']})", ""]
    out += _table(["", "training", "sampling", "evaluation", "total"],
                  [["GPU-hours, torch defaults", h["training"], h["sampling"], h["evaluation"],
                    h["total"]]] + ([["GPU-hours with the kept changes (projected)", *[
                        c["hours_with_kept_changes"][k] for k in ("training", "sampling",
                                                                   "evaluation", "total")]]]
                                    if c.get("hours_with_kept_changes") else []))
    out += _table(["run", "seeds", "iterations", "batch", "K", "GPU-hours", "basis"],
                  [[r["run"], r["seeds"], r["iterations"], r["batch"], r["K"], r["gpu_hours"],
                    r["basis"]] for r in c["training"]])
    return out + ["For the README's cluster section:", "", c["readme_paragraph"], ""]
