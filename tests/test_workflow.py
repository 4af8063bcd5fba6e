"""The Snakemake workflow: schema, lint, dry run, and a real end-to-end run on a tiny config."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _workdir(tmp_path: Path, cfg: dict, experiments: dict[str, dict]) -> Path:
    """A working directory that sees the repo's workflow/ and a config of the test's own."""
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    exps = tmp_path / "exps"
    exps.mkdir()
    for name, data in experiments.items():
        (exps / f"{name}.yaml").write_text(yaml.safe_dump(data))
    cfg = {"experiments_dir": str(exps), **cfg}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _snakemake(workdir: Path, *args, check=True):
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "test.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=check,
                          timeout=900)


def test_dry_run_of_the_local_default():
    proc = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2", "all"], cwd=ROOT,
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "train_toy" in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("snakefmt", path=str(Path(sys.executable).parent)) is None,
                    reason="snakefmt is installed by the dev extra")
def test_snakefmt_clean():
    fmt = str(Path(sys.executable).parent / "snakefmt")
    proc = subprocess.run([fmt, "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_rejects_unknown_key(tmp_path, tiny_config_dict):
    work = _workdir(tmp_path, {"toy": {"experiments": ["tiny"], "num_samples": 10, "seed": 0},
                               "toyy": 1}, {"tiny": tiny_config_dict()})
    proc = _snakemake(work, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "toyy" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_end_to_end_toy_workflow(tmp_path, tiny_config_dict):
    work = _workdir(tmp_path, {"toy": {"experiments": ["tiny"], "num_samples": 500, "seed": 1}},
                    {"tiny": tiny_config_dict()})
    _snakemake(work, "--cores", "2", "all")
    fig = work / "results/figures/toy/tiny.png"
    assert fig.stat().st_size > 10_000
    metrics = json.loads((work / "results/figures/toy/tiny.json").read_text())
    assert metrics["num_samples"] == 500 and 0.0 <= metrics["support_fraction"] <= 1.0
    assert (work / "results/runs/tiny/latest.json").exists()
    # A second invocation has nothing to do.
    again = _snakemake(work, "--cores", "2", "all")
    assert "Nothing to be done" in again.stdout + again.stderr
    report = work / "results/report.html"
    _snakemake(work, "--report", str(report))
    assert report.stat().st_size > 10_000
