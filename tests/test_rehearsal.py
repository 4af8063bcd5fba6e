"""The paper preset's rehearsal without a cluster: fake datasets in the real formats, the
``every_run`` override, and the rehearsal's plan against the paper preset's.

    .venv/bin/python -m pytest tests/test_rehearsal.py

The rehearsal itself, on the test cluster with faults injected, is in tests/test_slurm.py.
"""

from __future__ import annotations

import copy
import pickletools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cdrl.core.config import ConfigError
from cdrl.data.fake_formats import CELEBA_ATTRIBUTES, MARKER, write_all
from cdrl.data.images import load_image_dataset
from cdrl.plan.experiments import apply_every_run, resolve_run
from cdrl.plan.preflight import REQUIRED
from tests.conftest import ROOT, SNAKEMAKE, subprocess_env

PAPER = ROOT / "workflow/config/paper.yaml"
REHEARSAL = ROOT / "workflow/config/overrides/rehearsal.yaml"


# ---- fake datasets in the real formats -----------------------------------------------------------

@pytest.mark.parametrize("name, split, n", [
    ("cifar10", "train", 15), ("cifar10", "test", 3), ("cifar100", "train", 3),
    ("cifar100", "test", 3), ("imagenet32", "train", 30), ("imagenet32", "val", 3),
    ("celeba64", "train", 3), ("celeba64", "val", 3), ("celeba64", "test", 3)])
def test_loaders_read_the_fake_files(tmp_path, name, split, n):
    write_all(tmp_path, per_file=3)
    data = load_image_dataset(name, tmp_path, split)
    assert len(data) == n
    if name == "celeba64":
        assert data.attribute_names == tuple(CELEBA_ATTRIBUTES) and len(CELEBA_ATTRIBUTES) == 40
        # Both values of each attribute the compose run conditions on, in every split.
        for attr in ("Male", "Smiling", "Young"):
            assert set(data.attributes[:, CELEBA_ATTRIBUTES.index(attr)].tolist()) == {0, 1}
    else:
        assert len(set(data.labels.tolist())) >= 2  # -interp OOD sets pair different labels


def test_fake_files_are_the_real_formats_and_cover_every_required_file(tmp_path):
    root = write_all(tmp_path / "a", per_file=2)
    # Python 2 pickles as the 2009 files are: protocol 2, byte-string keys, numpy.core names.
    raw = (root / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"numpy.core.multiarray" in raw
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert b"numpy._core" not in raw and not ops & {"SHORT_BINUNICODE", "BINUNICODE"}, ops
    for name in ("cifar10", "cifar100", "imagenet32", "celeba64"):  # the paper preset's sets
        for alternatives in REQUIRED[name].values():  # the files the preflight asks for
            assert all((root / rel).exists() for rel in alternatives[0]), alternatives[0]
    # Seeded: the same bytes again.
    again = write_all(tmp_path / "b", per_file=2)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_fake_data_never_overwrites_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileExistsError, match="did not write"):
        write_all(tmp_path)
    (tmp_path / "cifar-10-batches-py").rmdir()
    write_all(tmp_path, per_file=2)
    assert (tmp_path / MARKER).is_file()
    write_all(tmp_path, per_file=2)  # its own files: fine


# ---- every_run: one override for every run ---------------------------------------------------------

def _preset() -> dict:
    return {"runs": {
        "a": {"base": "cdrl_cifar10", "set": {"train.iterations": 100, "train": {"batch_size": 8},
                                              "train.log_every": 7},
              "resources": {"gpu": 8, "threads": 32}},
        "b": {"base": "drl_cifar10"}}}


def test_every_run_comes_after_each_runs_own_set_and_resources():
    preset = {**_preset(), "every_run": {"set": {"train.iterations": 4, "train.batch_size": 2},
                                         "resources": {"gpu": 1}}}
    before = copy.deepcopy(preset)
    out = apply_every_run(preset)
    assert preset == before  # not modified in place
    experiments = ROOT / "workflow/config/experiments"
    for run in ("a", "b"):
        train = resolve_run(out, run, 0, experiments)["train"]
        # ``train: {batch_size: 8}`` of run a comes after its train.iterations: still overridden.
        assert (train["iterations"], train["batch_size"]) == (4, 2), run
    assert resolve_run(out, "a", 0, experiments)["train"]["log_every"] == 7
    assert out["runs"]["a"]["resources"] == {"gpu": 1, "threads": 32}
    assert out["runs"]["b"]["resources"] == {"gpu": 1}
    assert apply_every_run(out) == out
    assert apply_every_run(_preset()) == _preset()


@pytest.mark.parametrize("every, match", [
    ({"sett": {}}, "every_run: expected a mapping with keys set and resources"),
    ({"set": ["train.iterations", 4]}, r"every_run.set: expected a mapping"),
    ([1], "every_run: expected a mapping")])
def test_every_run_errors_name_the_key(every, match):
    with pytest.raises(ConfigError, match=match):
        apply_every_run({**_preset(), "every_run": every})


# ---- the rehearsal plans the paper preset's DAG ----------------------------------------------------

def _plan(work: Path, *configfiles: Path) -> str:
    """The dry run of ``all`` with these config files, from a working directory with fake data."""
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "-n",
                           "all", "--configfile", *map(str, configfiles)], cwd=work,
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def _job_stats(plan: str) -> dict[str, int]:
    table = plan[plan.index("Job stats:"):].split("total")[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def _resources(plan: str) -> list[dict[str, int]]:
    return [{k: int(v) for k, v in re.findall(r"\b(gpu|runtime|mem_mb)=(\d+)", line)}
            for line in plan.splitlines() if line.strip().startswith("resources:")]


@pytest.mark.slow
def test_rehearsal_plans_every_rule_and_run_of_the_paper_preset(tmp_path):
    write_all(tmp_path / "resources" / "datasets", per_file=2)
    paper, rehearsal = _plan(tmp_path, PAPER), _plan(tmp_path, PAPER, REHEARSAL)
    jobs, planned = _job_stats(paper), _job_stats(rehearsal)
    assert planned.keys() == jobs.keys() and jobs["train"] == 29 and planned["train"] == 21
    # The same jobs of every rule but those of the shorter sweeps (steps, guidance weights) and
    # of the seeds 1 and 2 the rehearsal leaves out of the four runs it cuts to one (rehearsal.yaml).
    shorter = {rule for rule in jobs if planned[rule] != jobs[rule]}
    assert shorter <= {"sample_shard", "merge_samples", "evaluate", "train", "run_config",
                       "compose", "compose_score", "figure_grid"}, (planned, jobs)
    assert all(planned[rule] > 0 for rule in planned), planned

    def runs(plan):
        return sorted(set(re.findall(r"results/runs/\w+/seed\d+/final\.json", plan)))

    cut = ("cifar10_cdrl_drl_schedule", "cifar10_cdrl_no_vr", "imagenet32_cond",
           "celeba64_compose")
    assert len(runs(paper)) == 29
    assert runs(rehearsal) == [r for r in runs(paper)
                               if not any(f"/{name}/seed{s}/" in r for name in cut for s in (1, 2))]
    # Only the counts differ: 50,000 samples become 12, 8-GPU jobs one-GPU jobs that fit a test
    # cluster (figure_toy's fixed 4 GB and 15 minutes are no preset's).
    assert "-n50000-" in paper and "-n50000-" not in rehearsal and "-n12-" in rehearsal
    # Sampling sharded as in the paper preset: 10 jobs of 5,000 there, 8 + 4 images here, each
    # sample file merged from its shards.
    assert "shards/k15-n50000/45000-50000.npz" in paper
    assert "shards/k15-n12/0-8.npz" in rehearsal and "shards/k15-n12/8-12.npz" in rehearsal
    for plan, shards in ((paper, 10), (rehearsal, 2)):
        n = _job_stats(plan)
        assert n["sample_shard"] == shards * n["merge_samples"], n
        assert "sample" not in n and "sample_guided" not in n, n
    assert any(r.get("gpu") == 8 for r in _resources(paper))
    res = _resources(rehearsal)
    assert res and all(r.get("gpu", 0) <= 1 and r.get("runtime", 0) <= 30
                       and r.get("mem_mb", 0) <= 4000 for r in res), res


def test_rehearsal_override_is_one_file_over_the_paper_preset():
    """Every key is one of the preset's (the schema's), and it copies no run: a ``runs:`` entry
    only cuts the seeds of one of the preset's runs (Snakemake merges it into that run)."""
    over = yaml.safe_load(REHEARSAL.read_text())
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    paper = yaml.safe_load(PAPER.read_text())
    assert set(over) <= set(schema["properties"])
    for run, entry in (over.get("runs") or {}).items():
        assert run in paper["runs"] and set(entry) == {"seeds"}, (run, entry)
        assert set(entry["seeds"]) < set(paper["runs"][run]["seeds"]), (run, entry)
    assert over["require_cuda"] is False
