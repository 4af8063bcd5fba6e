"""The Snakemake workflow: presets, schema, lint, dry runs, and a real end-to-end tiny run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, SNAKEMAKE, stage_dataset_stand_ins, subprocess_env

TINY = ROOT / "workflow" / "config" / "tiny.yaml"


def _workdir(tmp_path: Path, cfg: dict) -> Path:
    """A working directory that sees the repo's workflow/ and weights, with its own preset."""
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    weights = ROOT / "resources" / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "weights").symlink_to(weights)
    cfg = {**cfg, "experiments_dir": str(ROOT / cfg.get("experiments_dir",
                                                          "workflow/config/experiments"))}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path


def _snakemake(workdir: Path, *args, check=True, timeout=900):
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args,
           "--configfile", str(workdir / "test.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


def _paper_dry_run(tmp_path: Path) -> str:
    """`snakemake -n all --configfile workflow/config/paper.yaml` (target first: --configfile
    takes several values), run from a working directory with the datasets staged."""
    work = stage_dataset_stand_ins(tmp_path)
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "-n",
                           "all", "--configfile", str(ROOT / "workflow/config/paper.yaml")],
                          cwd=work, capture_output=True, text=True, env=subprocess_env(),
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


@pytest.mark.parametrize("argv", [
    ["-n", "--cores", "2", "all"],                                         # smoke (default)
    ["-n", "all", "--configfile", "workflow/config/tiny.yaml"],
    "paper",
])
@pytest.mark.slow
def test_dry_run_of_each_preset(argv, tmp_path):
    if argv == "paper":
        out = _paper_dry_run(tmp_path)
    else:
        proc = subprocess.run([*SNAKEMAKE, *argv], cwd=ROOT, capture_output=True, text=True,
                              env=subprocess_env(), timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
    # The paper preset samples in shards (sample_shard_size), the others in one job per file.
    sample = ("sample_shard", "merge_samples") if argv == "paper" else ("sample",)
    for rule in ("train", *sample, "evaluate", "tables", "figure_steps", "figure_curves",
                 "figure_claims"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule


@pytest.mark.slow
def test_paper_dry_run_plans_the_full_reproduction(tmp_path):
    """As a lab's first step: a fresh folder without any dataset. The plan is shown (rc 0) after
    the pre-flight's warnings, and every claim can be decided as configured."""
    work = tmp_path / "fresh"
    work.mkdir()
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "-n",
                           "all", "--configfile", str(ROOT / "workflow/config/paper.yaml")],
                          cwd=work, capture_output=True, text=True, env=subprocess_env(),
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Pre-flight check: jobs of this plan would fail" in out
    assert "resources/datasets/cifar-10-batches-py/data_batch_1" in out
    assert "cannot be decided as configured" not in out, out[-5000:]
    assert not (work / "results").exists()
    for run in ("cifar10_cdrl/seed2", "cifar10_drl/seed1", "imagenet32_cdrl/seed0",
                "celeba64_drl/seed0", "cifar10_cdrl_no_vr/seed0"):
        assert f"results/runs/{run}/final.json" in out, run
    assert "results/metrics/cifar10_cdrl/seed1/k8-n50000-inception.json" in out
    # 50,000 images in 10 shards of 5,000 (sample_shard_size), merged where Snakemake runs.
    shards = "results/samples/cifar10_cdrl/seed1/shards/k8-n50000"
    assert all(f"{shards}/{a}-{a + 5000}.npz" in out for a in range(0, 50000, 5000))
    assert "rule merge_samples:" in out
    assert "digits" not in out  # presets are whole: the smoke preset is not merged in
    for run in ("cifar10_cdrl_drl_schedule", "cifar10_cdrl_no_vr", "imagenet32_cond",
                "celeba64_compose"):  # a claim compares them over seeds: 3 each
        assert f"results/runs/{run}/seed2/final.json" in out, run


@pytest.mark.slow
def test_decide_plans_only_what_the_named_claims_need(tmp_path):
    """--config 'decide=[...]': the headline claims plan the CDRL and DRL runs and their sweeps,
    not the ablations or the downstream runs; a claim the preset lacks fails at planning."""
    work = stage_dataset_stand_ins(tmp_path)

    def plan(*extra):
        return subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "-n",
                               "all", "--configfile", str(ROOT / "workflow/config/paper.yaml"),
                               "--config", *extra], cwd=work, capture_output=True, text=True,
                              env=subprocess_env(), timeout=300)

    proc = plan("decide=[C1,C2,C3]")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "results/runs/cifar10_drl/seed2/final.json" in out
    assert "results/metrics/cifar10_drl/seed0/k15-n50000-inception.json" in out  # C3's sweep
    for absent in ("cifar10_cdrl_no_vr", "imagenet32_cond", "celeba64_compose", "rule ood:"):
        assert absent not in out, absent
    proc = plan("decide=[C42]")
    assert proc.returncode != 0 and "decide: ['C42'] are not claims of this preset" in (
        proc.stdout + proc.stderr)


@pytest.mark.slow
def test_mnist_dry_run_plans_the_deciding_preset(tmp_path):
    """The MNIST preset at 16x16: 5 seeds for every run a claim compares over seeds (C1, C4, C5),
    a 500-sample snapshot evaluation per learning-curve point with the 16x16 MNIST CNN (FID, KID
    and the p >= 0.9 share), and the claims tables; a part plans only its own claims' work."""
    work = stage_dataset_stand_ins(tmp_path)

    def plan(*extra):
        proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "-n",
                               "-p", "all", "--configfile", str(ROOT / "workflow/config/mnist.yaml"),
                               *extra], cwd=work, capture_output=True, text=True,
                              env=subprocess_env(), timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        return out

    out = plan()
    for run in ("mnist_cdrl", "mnist_drl", "mnist_cdrl_drl_schedule", "mnist_cdrl_no_vr"):
        for seed in range(5):
            assert f"results/runs/{run}/seed{seed}/final.json" in out, (run, seed)
    assert "results/runs/mnist_cdrl_k30/seed1/" not in out  # one seed where no claim needs five
    for it in (1500, 3000, 4500, 6000):
        assert f"results/metrics/mnist_drl/seed4/it{it}-n500-mnist16.json" in out, it
    assert "--reference mnist16:test --metrics fid,kid,conf --extractor mnist16" in out
    assert "--on-divergence record" in out
    for target in ("results/figures/learning_curves.png", "results/tables/claims.md",
                   "results/tables/claims_curve.csv", "results/figures/guidance.png"):
        assert target in out, target
    head = plan("--config", "part=headline")
    assert "results/runs/mnist_drl/seed4/final.json" in head and "mnist_cdrl_no_vr" not in head
    assert "results/speed/mnist16.csv" in head and "mnist_cond" not in head


@pytest.mark.slow
def test_lint_is_clean():
    for extra in ([], ["--configfile", "workflow/config/paper.yaml"],
                  ["--configfile", "workflow/config/mnist.yaml"]):
        proc = subprocess.run([*SNAKEMAKE, "--lint", *extra], cwd=ROOT, capture_output=True,
                              text=True, env=subprocess_env(), timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("snakefmt", path=str(Path(sys.executable).parent)) is None,
                    reason="snakefmt is installed by the dev extra")
@pytest.mark.slow
def test_snakefmt_clean():
    fmt = str(Path(sys.executable).parent / "snakefmt")
    proc = subprocess.run([fmt, "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(toyy=1), "toyy"),                                   # unknown key
    (lambda c: c["evaluation"]["digits16"].update(num_samples="40"), "num_samples"),
    (lambda c: c["runs"]["digits_cdrl"]["set"].update({"train.iterationz": 3}),
     "train.iterationz"),                                                   # bad run override
    (lambda c: c["runs"].pop("digits_cdrl_no_vr"), "digits_cdrl_no_vr"),    # undefined run
])
@pytest.mark.slow
def test_bad_preset_fails_at_planning_with_the_key(tmp_path, mutate, expected):
    cfg = _tiny()
    mutate(cfg)
    proc = _snakemake(_workdir(tmp_path, cfg), "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr


TABLES = ["main", "ablations", "sampling_steps", "training_cost", "toy", "guidance", "compose",
          "inpaint", "ood", "speed"]


@pytest.mark.slow
def test_end_to_end_tiny_preset(tmp_path):
    work = _workdir(tmp_path, _tiny())
    _snakemake(work, "--cores", "2", "all")
    res = work / "results"
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (res / "tables" / f"{name}.{ext}").stat().st_size > 50, (name, ext)
    claims = pd.read_csv(res / "tables" / "claims.csv")
    stability = claims[claims.claim == "stability"]
    claims = claims[claims.claim != "stability"]
    assert sorted(set(claims["claim"]), key=lambda c: int(c[1:])) == [f"C{i}" for i in range(1, 11)]
    assert set(claims["verdict"]) <= {"reproduced", "not reproduced", "inconclusive"}
    # One seed: every claim decided by sampled data is inconclusive (C2's exact counts may decide).
    assert (claims[claims.claim != "C2"]["verdict"] == "inconclusive").all()
    # Every compared run finished; C1 is also tested at each snapshot (3 and 6 iterations).
    assert set(stability["a"]) >= {"CDRL", "DRL"} and (stability["a_mean"] == 1).all()
    curve = pd.read_csv(res / "tables" / "claims_curve.csv")
    assert list(curve[curve.clock == "iterations"]["point"]) == [3, 6]
    assert set(curve["verdict"]) == {"inconclusive"}  # one seed a side
    assert "Claims along the learning curve" in (res / "tables" / "claims.md").read_text()
    assert (res / "tables" / "claims.md").stat().st_size > 1000
    main = pd.read_csv(res / "tables" / "main.csv")
    assert set(main["run"]) == {"digits_cdrl", "digits_drl"}
    fid = main[(main.metric == "FID") & (main.run == "digits_cdrl")].iloc[0]
    assert fid["mean"] > 0 and fid["published"] == 4.31 and fid["published_dataset"] == "cifar10"
    steps = pd.read_csv(res / "tables" / "sampling_steps.csv")
    assert sorted(zip(steps["run"], steps["steps"], strict=False)) == [
        ("digits_cdrl", 0), ("digits_cdrl", 2), ("digits_cdrl", 15), ("digits_drl", 2),
        ("digits_drl", 4)]
    assert (steps["seconds_per_image"] > 0).all()
    assert len(pd.read_csv(res / "tables" / "training_cost.csv")) == 6
    for fig in ["fid_vs_steps", "training_curves"]:
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{fig}.{ext}").stat().st_size > 5_000
    for run in ("digits_cdrl", "digits_drl", "digits_cdrl_no_vr"):
        assert (res / "figures" / "samples" / f"{run}-seed0.png").stat().st_size > 5_000
    toy = json.loads((res / "figures" / "toy" / "toy_cdrl-seed0.json").read_text())
    assert toy["num_samples"] == 256
    # Downstream tasks and speed (issues 7, 8).
    guidance = pd.read_csv(res / "tables" / "guidance.csv")
    assert list(guidance["w"]) == [0.0, 1.0] and guidance["class_accuracy"].between(0, 1).all()
    assert list(guidance["published_FID"]) == [8.28, 6.67]  # ImageNet 32 curve (spec 6.1)
    compose = pd.read_csv(res / "tables" / "compose.csv")
    assert "composed" in set(compose["setting"])
    inpaint = pd.read_csv(res / "tables" / "inpaint.csv")
    assert set(inpaint["mask"]) == {"center", "random"} and (inpaint["num"] == 8).all()
    ood = pd.read_csv(res / "tables" / "ood.csv")
    assert set(ood["ood"]) == {"lfw16", "noise"} and ood["auroc"].between(0, 1).all()
    assert ood.set_index("ood").loc["lfw16", "published"] == 0.84
    speed = pd.read_csv(res / "tables" / "speed.csv")
    assert {"case", "quantity", "cdrl", "drl", "drl_over_cdrl"} <= set(speed.columns)
    # The Markdown tables are for people: one row per method, sources cited, no internal labels.
    md = {name: (res / "tables" / f"{name}.md").read_text() for name in TABLES}
    body = [ln for ln in md["main"].splitlines() if ln.startswith("| ")]  # header and 2 runs
    assert [c.strip() for c in body[0].split("|")[1:8]] == [
        "method", "dataset", "features", "samples", "FID", "FID paper", "FID difference"]
    assert len(body) == 3 and "4.31 on CIFAR-10 [1]" in md["main"]
    assert "arXiv 2309.05153, Table 1" in md["main"]
    assert len([ln for ln in md["speed"].splitlines() if ln.startswith("| digits")]) == 4
    assert "read off the plot" in md["guidance"]
    for name, text in md.items():
        assert "spec " not in text and "AI-rev" not in text, name
    for fig in ("guidance.png", "guidance.pdf", "compose/toy_compose-seed0.png",
                "inpaint/digits_cdrl-seed0.png"):
        assert (res / "figures" / fig).stat().st_size > 5_000, fig

    # A second invocation has nothing to do.
    again = _snakemake(work, "--cores", "2", "all")
    assert "Nothing to be done" in again.stdout + again.stderr

    # The report gathers the tables and figures, and opens on the claims: its landing page (the
    # workflow description, shown first when metadata is given) holds the claims figure, embedded,
    # and the claims table.
    report = res / "report.html"
    _snakemake(work, "--report", str(report), "--report-metadata",
               str(ROOT / "workflow" / "report" / "metadata.yaml"))
    html = report.read_text()
    assert report.stat().st_size > 50_000
    desc = json.loads(html.split("var workflow_desc = ", 1)[1].split(";\n", 1)[0])
    assert 'class="cdrl-claims"' in desc and "data:image/png;base64," in desc, desc[:300]
    assert "<th>claim</th>" in desc.lower() or "<table>" in desc
    meta = json.loads(html.split('<script id="metadata">', 1)[1].split("var metadata = ", 1)[1]
                      .split(";\n", 1)[0])
    assert meta == {"The paper, arXiv": 2309.05153, "The paper, ICLR": 2024}

    # More iterations for one run: only that run resumes from its checkpoint, and what depends
    # on it is redone; the other runs are untouched.
    cfg = _tiny()
    cfg["runs"]["digits_drl"]["set"]["train.iterations"] = 8
    (work / "test.yaml").write_text(yaml.safe_dump(
        {**cfg, "experiments_dir": str(ROOT / cfg["experiments_dir"])}, sort_keys=False))
    plan = _snakemake(work, "-n", "--cores", "2", "all").stdout
    trained = [ln.split("=")[1].split(",")[0] for ln in plan.splitlines()
               if ln.strip().startswith("wildcards: run=")]
    assert "digits_drl" in trained and "digits_cdrl" not in trained
    assert "digits_cond" not in trained and "toy_compose" not in trained
    _snakemake(work, "--cores", "2", "all")
    log = (work / "logs" / "train" / "digits_drl" / "seed0.log").read_text()
    stats = [json.loads(x) for x in
             (res / "runs" / "digits_drl" / "seed0" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["iteration"] == 8 and [s["iteration"] for s in stats] == [2, 4, 6, 8], log
