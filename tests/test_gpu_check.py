"""scripts/gpu_check.py without a GPU: the whole pipeline at toy sizes, its JSON, its rules.

    .venv/bin/pytest tests/test_gpu_check.py

``--quick --device cpu`` runs every section (the CUDA checks skip, the A/B rows that need a GPU
say so) and must write a complete ``results.json``; the keep rule, the GPU-peak lookup, the
JUnit parsing and the cost model are checked against hand-computed answers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cdrl.measure import speedups as ab
from cdrl.measure.bench import build_for_bench
from cdrl.measure.gpu_report import gpu_peaks
from cdrl.plan.preset_cost import Measured, preset_cost
from tests.conftest import ROOT, load_script

SCRIPT = ROOT / "scripts/gpu_check.py"
EXP = ROOT / "workflow/config/experiments"
ROW_KEYS = {"variant", "description", "target", "speedup", "error", "tolerance", "decision",
            "reason", "measured_on"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out",
                        str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return r, out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section(quick):
    r, out, res = quick
    env = res["env"]
    assert res["schema"] == "cdrl-gpu-check/1"
    assert env["measured_on"] == "cpu" and env["quick"] is True
    assert {"gpu", "driver", "torch", "cuda", "cudnn", "peaks", "torch_defaults"} <= set(env)
    assert env["gpu"] is None and env["driver"] is None  # never invented off a GPU
    assert {k: v["status"] for k, v in res["sections"].items()} == {
        "correctness": "ok", "speed": "ok", "ab": "ok", "cost": "ok"}
    assert all({"seconds", "time_box_s", "skipped"} <= set(v) for v in res["sections"].values())
    assert isinstance(res["skipped"], list)
    for name in ("correctness", "speed", "ab", "cost"):
        assert res[name]["measured_on"] == "cpu", name
    assert (out / "summary.md").read_text().count("not GPU results") == 1
    assert "images/s" in r.stdout


@pytest.mark.slow
def test_quick_run_correctness_section_lists_the_cuda_cases(quick):
    _, out, res = quick
    c = res["correctness"]
    assert c["verdict"].startswith("not run") and c["returncode"] == 0
    assert c["counts"]["skipped"] == len(c["cases"]) >= 10
    assert all(case["test"].endswith("cuda]") for case in c["cases"])
    assert all("CUDA is not available" in case["message"] for case in c["cases"])
    assert all((out / f).is_file() for f in c["files"])


@pytest.mark.slow
def test_quick_run_speed_section(quick):
    _, out, res = quick
    s = res["speed"]
    rows = {r["method"]: r for r in s["rows"]}
    assert set(rows) == {"cdrl", "drl"} and res["rows"] == s["rows"]  # older layout kept
    assert (rows["cdrl"]["ebm_grads_per_image"], rows["drl"]["ebm_grads_per_image"]) == (91, 180)
    assert rows["cdrl"]["train_batch"] == 2 and rows["cdrl"]["sample_images_per_s"] > 0
    assert s["ratios"]["claimed"] == 2.0 and s["ratios"]["nfe_drl_over_cdrl"] == 180 / 91
    for g in s["ebm_gradient"].values():
        assert g["flops"] > 0 and g["tflop_per_s"] > 0 and g["peak_fraction"] is None  # a CPU
    assert s["largest_batch"]["cdrl"]["batch"] == 4 and s["largest_batch"]["cdrl"]["s_per_image"]
    assert "s_per_image" in s["inception"]
    assert (out / "speed.csv").is_file() and (out / "speed.md").is_file()


@pytest.mark.slow
def test_quick_run_ab_rows_have_errors_and_decisions(quick):
    a = quick[2]["ab"]
    assert a["rule"] == ab.KEEP_RULE and a["tolerance"] == ab.TOLERANCE
    rows = a["rows"]
    assert all(ROW_KEYS <= set(r) for r in rows)
    seen = {(r["variant"], r["target"]) for r in rows}
    for target in ("langevin_step", "train_iteration"):
        assert {(v, target) for v in ab.ORDER} <= seen
    assert ("larger_batch", "sampling") in seen
    for r in rows:
        assert r["decision"] in {"keep", "reject", "not measured", "reference"}
        if r["decision"] in ("keep", "reject"):
            assert r["error"] is not None and r["speedup"] > 0 and r["base_s"] and r["variant_s"]
            assert (r["decision"] == "keep") == (r["speedup"] >= ab.MIN_SPEEDUP
                                                 and r["error"] <= ab.TOLERANCE)
    na = {(r["variant"], r["target"]) for r in rows if r["decision"] == "not measured"}
    assert ("cuda_graph", "langevin_step") in na and ("tf32", "train_iteration") in na
    measured = {(r["variant"], r["target"]) for r in rows if r["decision"] in ("keep", "reject")}
    assert {("channels_last", "langevin_step"), ("bf16", "train_iteration"),
            ("compile", "langevin_step")} <= measured


@pytest.mark.slow
def test_quick_run_cost_section(quick):
    res = quick[2]
    c = res["cost"]
    preset = yaml.safe_load((ROOT / "workflow/config/paper.yaml").read_text())
    assert [r["run"] for r in c["training"]] == list(preset["runs"])
    assert set(c["hours"]) == {"training", "sampling", "evaluation", "total"}
    cifar = next(r for r in c["training"] if r["run"] == "cifar10_cdrl")
    assert cifar["gpu_hours"] > 0 and cifar["seeds"] == 3 and cifar["iterations"] == 500001
    assert c["evaluation"]["sample_files"] > 10
    assert "CPU, toy networks: not a GPU estimate" in c["readme_paragraph"]


def test_keep_rule():
    assert ab.decide(1.06, 1e-3)[0] == "keep"
    assert ab.decide(1.04, 1e-3) == ("reject", "speed-up 1.040x < 1.05x")
    assert ab.decide(3.0, 0.02)[0] == "reject"
    assert ab.decide(None, 0.0)[0] == ab.decide(2.0, math.nan)[0] == "reject"


def test_gpu_peaks_by_name():
    assert gpu_peaks("NVIDIA H200") == {"model": "H200 SXM", "fp32": 67.0, "tf32": 494.7,
                                        "bf16": 989.4, "unit": "TFLOP/s",
                                        "source": "NVIDIA datasheet, dense"}
    assert gpu_peaks("NVIDIA H100 80GB HBM3")["model"] == "H100 SXM"
    assert gpu_peaks("NVIDIA H100 PCIe")["bf16"] == 756.0
    assert gpu_peaks("NVIDIA H200 NVL")["model"] == "H100/H200 NVL"
    assert gpu_peaks("NVIDIA A100-SXM4-80GB")["tf32"] == 156.0
    assert gpu_peaks("NVIDIA L40S")["model"] == "L40S" and gpu_peaks("NVIDIA L4")["model"] == "L4"
    assert gpu_peaks("NVIDIA A10")["model"] == "A10"
    assert gpu_peaks("NVIDIA GeForce RTX 4090") is None and gpu_peaks(None) is None


def test_output_paths_keep_the_older_json_form():
    m = load_script("gpu_check")
    assert m.output_paths("a/b.json") == (Path("a"), Path("a/b.json"), Path("a/b.md"))
    assert m.output_paths("d") == (Path("d"), Path("d/results.json"), Path("d/summary.md"))


def test_junit_properties_are_typed(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite><testcase name="t[cuda]" time="1.5"><properties>'
                   '<property name="max_rel_diff" value="1e-07"/><property name="bit_exact" '
                   'value="True"/></properties></testcase><testcase name="u[cuda]" time="0">'
                   '<skipped message="no GPU"/></testcase></testsuite></testsuites>')
    cases = load_script("gpu_check").parse_junit(xml)
    assert cases[0] == {"test": "t[cuda]", "outcome": "passed", "seconds": 1.5, "message": "",
                        "properties": {"max_rel_diff": 1e-07, "bit_exact": True}}
    assert cases[1]["outcome"] == "skipped" and cases[1]["message"] == "no GPU"


@pytest.mark.slow
def test_without_cuda_it_stops_with_status_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--out",
                        str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2 and "CUDA is not available" in r.stderr


def test_applied_settings_are_undone():
    torch.set_num_threads(1)
    _, method, _ = build_for_bench(str(EXP / "cdrl_cifar10.yaml"), None,
                                   load_script("gpu_check").QUICK, "cpu")
    ebm = method.ebm_ema.model
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    s = ab.Setting(tf32=True, bf16=True, channels_last=True, compile=True, cudnn_benchmark=True)
    with ab.applied(s, [ebm], backend="eager"):
        assert {"energy", "langevin_grad"} <= set(ebm.__dict__)
        assert ebm.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.backends.cudnn.benchmark
    assert not {"energy", "langevin_grad"} & set(ebm.__dict__)
    assert ebm.conv_in.weight.is_contiguous()
    assert flags == (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                     torch.backends.cudnn.benchmark)


def test_preset_cost_model_by_hand():
    preset = {"experiments_dir": str(EXP), "seeds": [0, 1],
              "runs": {"c": {"base": "cdrl_cifar10", "set": {"train.iterations": 1000}},
                       "d": {"base": "drl_cifar10", "seeds": [0],
                             "set": {"train.iterations": 2000, "train.langevin_steps": 20}}},
              "tables": {"main": ["c", "d"], "sampling_steps": {"c": [15, 5]}},
              "evaluation": {"cifar10": {"reference": "cifar10:train", "num_samples": 1000}}}
    m = Measured("cuda", 32, {"cdrl": 0.5, "drl": 0.8}, {"cdrl": 15, "drl": 30},
                 {"cdrl": 0.01, "drl": 0.012}, {"cdrl": 0.02, "drl": 0.04},
                 {"cdrl": 15, "drl": 30}, {"cdrl": 1e-4, "drl": 1e-4}, 6, 1e-3, 2.0,
                 {"train": 2.0, "sampling": 4.0})
    c = preset_cost(preset, m)
    train = {r["run"]: r["gpu_hours"] for r in c["training"]}
    # iterations * (256 / 32) * s_iter * seeds; DRL at K 20: 0.8 + (20 - 30) * 0.012 = 0.68.
    assert train["c"] == pytest.approx(1000 * 8 * 0.5 * 2 / 3600)
    assert train["d"] == pytest.approx(2000 * 8 * 0.68 / 3600)
    # c: 2 seeds x (K 15: 0.02, K 5: 0.02 - 10 * 6 * 1e-4) s/image; d: K 30, 0.04 s/image.
    assert c["hours"]["sampling"] == pytest.approx(1000 * (2 * (0.02 + 0.014) + 0.04) / 3600)
    # 5 sample files + the 50,000 reference images at 1 ms, one 2 s square root per file.
    assert c["evaluation"]["sample_files"] == 5
    assert c["hours"]["evaluation"] == pytest.approx((55_000 * 1e-3 + 5 * 2.0) / 3600)
    kept = c["hours_with_kept_changes"]
    assert kept["training"] == pytest.approx(c["hours"]["training"] / 2)
    assert kept["sampling"] == pytest.approx(c["hours"]["sampling"] / 4)
