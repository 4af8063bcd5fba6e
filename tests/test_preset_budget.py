"""The cost of a preset counted from FLOPs (cdrl.measure.run_flops, cdrl.plan.budget), its tables
and the documented block (cdrl.plan.budget_table, scripts/preset_budget.py), and the requeue
budgets that make every paper run fit its attempts."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from cdrl.core.config import load_config
from cdrl.measure.run_flops import META, NONE, Pass, RunWork, _pass, count_flops, run_work
from cdrl.plan.budget import (
    DEFAULT_THROUGHPUT,
    MIN_REQUEUE,
    REQUEUE_MARGIN,
    Throughput,
    attempt_hours,
    claim_costs,
    plan_cost,
    plan_warnings,
    requeue_budget,
    runtime_minutes,
    sample_files,
    throughput_from_gpu_check,
)
from cdrl.plan.budget_table import BEGIN, END, read_block, replace_block
from cdrl.plan.experiments import resolve_run
from cdrl.plan.preset_cost import Measured, measured_throughput
from cdrl.train.registry import build_method
from tests.conftest import ROOT, load_script

EXP = ROOT / "workflow/config/experiments"
PAPER = "workflow/config/paper.yaml"  # relative to ROOT, as the docs name it


def _paper() -> dict:
    return yaml.safe_load((ROOT / PAPER).read_text())


@pytest.fixture(scope="module")
def paper_costs():
    """claim_costs of the paper preset at the default throughput (counts every network once)."""
    return claim_costs(_paper(), DEFAULT_THROUGHPUT, EXP)


# ----------------------------------------------------------------------------- FLOP counts
def test_one_convolution_against_a_hand_count():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, device=META)
    x = torch.zeros(1, 3, 16, 16, device=META, requires_grad=True)
    # Forward: 2 FLOPs per multiply-add, 8 x 16 x 16 outputs of 3 x 3 x 3 products each.
    forward = 2 * 8 * 16 * 16 * 3 * 3 * 3
    assert count_flops(lambda: conv(x)) == forward
    # Backward: the input's gradient and the weight's, each as many products as the forward.
    assert _pass(lambda: conv(x), lambda out: out.sum().backward()) == Pass(forward, 2 * forward)
    two = torch.zeros(2, 3, 16, 16, device=META)
    assert count_flops(lambda: conv(two)) == 2 * forward  # linear in the batch


def test_sampling_and_training_bookkeeping():
    w = RunWork(langevin_step=Pass(10.0, 10.0), loss_pass=Pass(10.0, 20.0),
                proposal=Pass(3.0, 6.0), levels=6, tweedie=True)
    assert w.train_image(15) == 15 * 20 + 2 * 30 + 9
    assert w.train_iteration(256, 15) == 256 * w.train_image(15)
    # T proposals and T K + 1 (Tweedie) gradients; a 2-row guide doubles both.
    assert w.sample_image(15) == 6 * 3 + (6 * 15 + 1) * 20
    assert w.sample_image(15, rows=2) == 2 * w.sample_image(15)
    assert w.energy_image() == 10.0


@contextlib.contextmanager
def _bare_steps(method):
    """Optimizer steps as a bare backward(): meta tensors cannot be clipped or checked."""
    names = [n for n in ("_step", "optimizer_step") if hasattr(method, n)]
    for n in names:
        setattr(method, n, lambda loss, *a, **k: loss.backward())
    try:
        yield
    finally:
        for n in names:
            vars(method).pop(n)


@pytest.mark.parametrize("base", ["cdrl_digits", "drl_digits", "coopnets_digits",
                                  "replay_buffer_digits", "short_run_digits"])
def test_work_model_matches_each_methods_train_step(base):
    """The methods' own train_step with the chain cut to K = 0 (everything but the Langevin
    gradients, which FlopCounterMode cannot count) does what RunWork says per image: the loss
    pass on 2 images and the proposal network's forward and backward, up to the per-call
    noise-level embedding."""
    cfg = load_config(EXP / f"{base}.yaml")
    w, batch = run_work(cfg), 8
    cfg.train.langevin_steps = 0
    with torch.device(META):
        torch.manual_seed(0)
        method = build_method(cfg, (1, 16, 16), META)
    x = torch.zeros(batch, 1, 16, 16, device=META)
    with _bare_steps(method):
        counted = count_flops(lambda: method.train_step(x))
    assert counted == pytest.approx(w.train_iteration(batch, 0), rel=0.01)
    assert (w.proposal == NONE) == (base in ("drl_digits", "replay_buffer_digits",
                                             "short_run_digits"))


def test_counts_are_cached_per_network():
    preset = _paper()
    a = run_work(resolve_run(preset, "cifar10_cdrl", 0, EXP))
    b = run_work(resolve_run(preset, "cifar10_cdrl_no_vr", 2, EXP))
    assert a == b and a.langevin_step is b.langevin_step


def test_counts_persist_in_the_cache_file_and_a_bad_file_is_recounted(tmp_path, monkeypatch):
    from cdrl.measure import run_flops

    cache = tmp_path / "flops.json"
    monkeypatch.setenv("CDRL_FLOPS_CACHE", str(cache))
    monkeypatch.setattr(run_flops, "_COUNTED", {})  # a fresh process
    monkeypatch.setattr(run_flops, "_WORK", {})
    cfg = resolve_run(_paper(), "cifar10_cdrl", 0, EXP)
    counted = run_work(cfg)
    stored = json.loads(cache.read_text())
    assert len(stored) == 2  # the EBM's two passes and the initializer's, one entry each
    monkeypatch.setattr(run_flops, "_COUNTED", {})
    monkeypatch.setattr(run_flops, "_WORK", {})
    monkeypatch.setattr(run_flops, "count_flops", lambda step: pytest.fail("counted again"))
    assert run_work(cfg) == counted  # read back, not counted
    cache.write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setenv("CDRL_FLOPS_CACHE", str(cache))
    monkeypatch.setattr(run_flops, "_COUNTED", {})
    monkeypatch.setattr(run_flops, "_WORK", {})
    assert run_work(cfg) == counted and len(json.loads(cache.read_text())) == 2


# ----------------------------------------------------------------------------- the paper preset
# The rough count, in units of one seed of cifar10_cdrl; ours counts each run's networks,
# the loss pass and the initializer as well, so it may differ by up to 5 %.
ROUGH_UNITS = {"cifar10_drl": 3.7, "celeba64_drl": 15.0, "celeba64_cdrl": 4.0,
               "imagenet32_cond": 2.0, "cifar10_cdrl_k30": 1.8}


def test_paper_runs_in_units_of_one_cifar10_cdrl_run(paper_costs):
    rows = {r["run"]: r for r in paper_costs["whole"]["training"]}
    unit = rows["cifar10_cdrl"]["flops_per_seed"]
    for run, rough in ROUGH_UNITS.items():
        assert rows[run]["flops_per_seed"] / unit == pytest.approx(rough, rel=0.05), run
    # Same networks and budget, another dataset or noise schedule: the same work.
    for run in ("imagenet32_cdrl", "cifar10_cdrl_drl_schedule", "cifar10_cdrl_no_vr"):
        assert rows[run]["flops_per_seed"] == unit
    assert not rows["toy_official_cdrl"]["costed"] and rows["toy_official_cdrl"]["gpu_hours"] is None


def test_paper_sample_files_follow_the_tables():
    preset = _paper()
    files = sample_files(preset, EXP)
    names = {(f["run"], f["seed"], f["name"]) for f in files}
    for run, steps in preset["tables"]["sampling_steps"].items():
        for seed in preset["runs"][run]["seeds"]:
            assert {(run, seed, f"k{k}-n50000") for k in steps} <= names
    guided = [f for f in files if f["purpose"] == "guidance"]
    assert len(guided) == len(preset["downstream"]["guidance"]["weights"])
    assert {f["guidance"] for f in guided} == {float(w) for w in
                                              preset["downstream"]["guidance"]["weights"]}
    assert len(names) == len(files)


def test_claim_rows_add_up(paper_costs):
    whole = {r["run"]: r["gpu_hours"] or 0.0 for r in paper_costs["whole"]["training"]}
    for c in paper_costs["claims"]:
        h = c["hours"]
        assert h["total"] == pytest.approx(h["training"] + h["sampling"] + h["evaluation"]
                                           + h["downstream"])
        assert h["training"] == pytest.approx(sum(whole[r] for r in c["runs"]))
    together = paper_costs["all_claims"]
    union = {r for c in paper_costs["claims"] for r in c["runs"]}
    assert set(together["runs"]) == union
    # A run several claims read is counted once in the total of all claims.
    assert together["hours"]["training"] == pytest.approx(sum(whole[r] for r in union))
    assert together["hours"]["total"] < sum(c["hours"]["total"] for c in paper_costs["claims"])
    assert together["hours"]["total"] <= paper_costs["whole"]["hours"]["total"]
    assert set(paper_costs["unread_runs"]) == set(paper_costs["whole"]["runs"]) - union
    shared = {r for c in paper_costs["claims"] for r in c["shared"]}
    assert "cifar10_cdrl" in shared and "imagenet32_cond" not in shared


def test_docs_block_is_what_the_command_writes():
    text, _, _ = load_script("preset_budget").render(PAPER)
    assert read_block((ROOT / "docs/cluster.md").read_text()) == text, (
        "docs/cluster.md's budget block is stale: python scripts/preset_budget.py --preset "
        "workflow/config/paper.yaml --write-docs docs/cluster.md")


def test_replace_block_keeps_the_rest():
    doc = f"head\n{BEGIN}\nold\n{END}\ntail\n"
    new = replace_block(doc, "new table\n")
    assert new == f"head\n{BEGIN}\nnew table\n{END}\ntail\n" and read_block(new) == "new table\n"
    with pytest.raises(ValueError):
        read_block("no markers")


# ----------------------------------------------------------------------------- requeues
def test_requeue_budgets_fit_every_paper_run(paper_costs):
    preset = _paper()
    for row in paper_costs["whole"]["training"]:
        budget = requeue_budget(preset, row["run"], DEFAULT_THROUGHPUT, EXP)
        assert budget == row["max_requeue"] >= MIN_REQUEUE
        if row["costed"]:
            window = (budget + 1) * attempt_hours(row["runtime_h"])
            assert REQUEUE_MARGIN * row["wall_h_per_seed"] <= window, row["run"]
            expect = math.ceil(REQUEUE_MARGIN * row["wall_h_per_seed"]
                               / attempt_hours(row["runtime_h"])) - 1
            assert budget == max(MIN_REQUEUE, expect)
    assert plan_warnings(preset, DEFAULT_THROUGHPUT, EXP) == []
    # The profile's 3 requeues (4 attempts of 48 h) are too few for CelebA 64 DRL.
    drl = next(r for r in paper_costs["whole"]["training"] if r["run"] == "celeba64_drl")
    assert drl["wall_h_per_seed"] > 4 * attempt_hours(drl["runtime_h"]) and drl["max_requeue"] > 3


def test_warnings_name_a_run_that_cannot_finish():
    preset = copy.deepcopy(_paper())
    preset["runs"]["celeba64_drl"]["resources"] = {
        **preset["runs"]["celeba64_drl"]["resources"], "max_requeue": 3}
    warnings = plan_warnings(preset, DEFAULT_THROUGHPUT, EXP)
    assert len(warnings) == 1 and warnings[0].startswith("celeba64_drl:")
    assert "cannot finish" in warnings[0]
    # A slower GPU needs more requeues.
    slow = requeue_budget(_paper(), "celeba64_drl", Throughput.tflops(20.0), EXP)
    assert slow > requeue_budget(_paper(), "celeba64_drl", DEFAULT_THROUGHPUT, EXP)


def test_cpu_presets_get_the_default_requeues_without_counting():
    preset = yaml.safe_load((ROOT / "workflow/config/smoke.yaml").read_text())
    run = next(iter(preset["runs"]))
    assert requeue_budget(preset, run, DEFAULT_THROUGHPUT, EXP) == MIN_REQUEUE


def test_runtime_minutes():
    assert runtime_minutes(2880) == 2880.0
    assert runtime_minutes("2d") == 2880.0 and runtime_minutes("12h30m") == 750.0
    assert runtime_minutes("90") == 90.0
    with pytest.raises(ValueError):
        runtime_minutes("soon")


# ----------------------------------------------------------------------------- throughput
def test_measured_throughput_and_the_gpu_check_json():
    cfgs = {k: load_config(EXP / f"{k}_digits.yaml") for k in ("cdrl", "drl")}
    m = Measured("cuda", 32, {"cdrl": 0.5, "drl": 0.7}, {"cdrl": 15, "drl": 30},
                 {"cdrl": 0.01, "drl": 0.01}, {"cdrl": 0.02, "drl": 0.04},
                 {"cdrl": 15, "drl": 30}, {"cdrl": 1e-4, "drl": 1e-4})
    got = measured_throughput(cfgs, m)
    train = sum(run_work(cfgs[k]).train_iteration(32, m.train_steps[k]) for k in cfgs)
    assert got["train_flop_per_s"] == pytest.approx(train / 1.2)
    sample = sum(run_work(cfgs[k]).sample_image(m.sample_steps[k]) for k in cfgs)
    assert got["sample_flop_per_s"] == pytest.approx(sample / 0.06)
    tp = throughput_from_gpu_check({"cost": {"throughput": got},
                                    "env": {"gpu": "NVIDIA H100", "date": "2026-12-07T10:00"}})
    assert tp.train == got["train_flop_per_s"] and "NVIDIA H100" in tp.source
    with pytest.raises(ValueError, match="no measured throughput"):
        throughput_from_gpu_check({"cost": {}})
    # Hours scale inversely with the throughput.
    preset = _paper()
    fast = plan_cost(preset, Throughput.tflops(2 * DEFAULT_THROUGHPUT.train / 1e12), EXP)
    slow = plan_cost(preset, DEFAULT_THROUGHPUT, EXP)
    assert fast["hours"]["total"] == pytest.approx(slow["hours"]["total"] / 2)


@pytest.mark.slow
def test_the_command_checks_the_docs():
    proc = subprocess.run([sys.executable, "scripts/preset_budget.py", "--check-docs",
                           "docs/cluster.md"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
