"""The submitit executor plugin without a cluster: resource mapping, job names, the profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake_executor_plugin_submitit import ExecutorSettings
from snakemake_executor_plugin_submitit.resources import job_key, job_name, submitit_parameters

ROOT = Path(__file__).resolve().parents[1]


def _settings(**over):
    return SimpleNamespace(**{**vars(ExecutorSettings()), **over})


def test_gpu_rule_goes_to_the_gpu_partition_with_its_resources():
    p = submitit_parameters({"gpu": 2, "runtime": 2880, "mem_mb": 64000}, 8, "smk-train-x",
                            _settings(account="lab"))
    assert p["gpus_per_node"] == 2 and p["slurm_partition"] == "gpu"
    assert p["timeout_min"] == 2880 and p["slurm_mem"] == "64000M"
    assert p["cpus_per_task"] == 8 and p["tasks_per_node"] == 1 and p["slurm_account"] == "lab"
    typed = submitit_parameters({"gpu": 2, "gpu_model": "h100"}, 1, "n", _settings())
    assert typed["slurm_gres"] == "gpu:h100:2" and "gpus_per_node" not in typed


def test_cpu_rule_and_overrides():
    p = submitit_parameters({"mem_mb": 1000, "cpus_per_task": 3}, 1, "n",
                            _settings(cpu_partition="short", default_runtime=30))
    assert p["slurm_partition"] == "short" and p["timeout_min"] == 30 and p["cpus_per_task"] == 3
    assert "gpus_per_node" not in p and "slurm_gres" not in p
    q = submitit_parameters({"slurm_partition": "debug", "gpu": 1}, 1, "n", _settings())
    assert q["slurm_partition"] == "debug"


def test_job_names_are_stable_and_distinct(tmp_path):
    a = job_key(str(tmp_path), ["b.txt", "a.txt"])
    assert a == job_key(str(tmp_path), ["a.txt", "b.txt"])
    assert a != job_key(str(tmp_path), ["a.txt"]) != job_key("/elsewhere", ["a.txt"])
    assert job_name("smk-", "train", a) == f"smk-train-{a}"


def test_profile_dry_run_of_the_paper_preset(tmp_path):
    """The profile's keys are valid Snakemake options (a dry run submits nothing)."""
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                           "--profile", str(ROOT / "slurm"), "-n", "all"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "train" in proc.stdout
