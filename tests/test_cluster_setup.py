"""Setting up and running on a cluster: one environment, pre-flight checks, GPU jobs that stop
without CUDA, progress in training logs, the Inception Score switch, config overrides and
running from another folder (docs/cluster.md).

    .venv/bin/python -m pytest tests/test_cluster_setup.py
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT, SNAKEMAKE, subprocess_env

TINY = ROOT / "workflow" / "config" / "tiny.yaml"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _smk(args, cwd=ROOT, timeout=300, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          env=subprocess_env(threads=1, **env), timeout=timeout)


def _workdir(tmp_path: Path, cfg: dict) -> Path:
    """An empty working directory with its own preset (the workflow comes from -s)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path


def _in(work: Path, *args, **kw) -> subprocess.CompletedProcess:
    return _smk(["-s", str(ROOT / "Snakefile"), "--directory", str(work), *args,
                 "--configfile", str(work / "preset.yaml")], cwd=work, **kw)


def _tiny(**top) -> dict:
    cfg = yaml.safe_load(TINY.read_text())
    cfg.pop("claims", None)  # judged on the tables, which these tests do not make
    return {**cfg, **top}


def _one_run(run: dict, name: str = "one", **top) -> dict:
    """A preset with a single run and only the sections every preset needs."""
    cfg = _tiny(**top)
    return {**{k: cfg[k] for k in ("seeds", "train_resources", "sample_resources")},
            "runs": {name: run}, "evaluation": cfg["evaluation"],
            "toy": {"runs": [], "num_samples": 8, "seed": 0}, "tables": {"main": [name]}, **top}


# ---- config: --config overrides the default preset; -s/--directory from another folder ----------

def test_the_root_all_file_is_gone():
    assert not (ROOT / "all").exists()


@pytest.mark.parametrize("argv", [
    ["-n", "all", "--config", "seeds=[1]"],
    ["-n", "--config", "seeds=[1]", "--", "all"],
])
@pytest.mark.slow
def test_config_override_merges_onto_the_default_preset(argv):
    proc = _smk(argv)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "results/runs/digits_cdrl/seed1/final.json" in out  # smoke preset, seed overridden
    assert "seed0/final.json" not in out


@pytest.mark.slow
def test_snakefile_from_another_folder_with_directory(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    proc = _smk(["-s", str(ROOT / "Snakefile"), "--directory", str(work), "-n", "all"],
                cwd=elsewhere)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "results/tables/main.csv" in proc.stdout + proc.stderr


def _documented_commands() -> list[tuple[str, str]]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for doc in docs:
        if doc.is_file():
            for line in doc.read_text().splitlines():
                m = re.search(r"\bsnakemake( [^`#|&;]*)", line)
                if m and ("--config" in m.group(1)):
                    found.append((doc.name, "snakemake" + m.group(1).rstrip()))
    return found


def test_documented_commands_do_not_feed_a_target_to_config_options():
    """--configfile and --config take several values: `... --configfile P all` reads `all` as a
    config file. Every such command in the README and docs/ must parse as meant."""
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()
    bad = []
    for doc, cmd in _documented_commands():
        try:
            args = parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit:
            continue  # placeholders such as <clone> that the parser rejects: not this check
        files = [str(f) for f in (args.configfile or [])]
        bad += [(doc, cmd) for f in files if not re.search(r"\.(ya?ml|json)$|[A-Z<]", f)]
        bad += [(doc, cmd) for c in (args.config or []) if "=" not in c]
    assert not bad, f"a target read as a config value (put it before the option): {bad}"


# ---- one environment: conda-forge only, pins that agree, a lock that make install uses --------

def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _conda_deps() -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
            conda[name] = spec
    return conda, pip


def test_environment_yml_is_conda_forge_only_and_copyable():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    text = (ROOT / "environment.yml").read_text()
    assert "pytorch-cuda" not in text and not re.search(r"^\s*-\s*pytorch\s*$", text, re.M)
    _, pip = _conda_deps()
    # --sdm conda builds a copy under .snakemake/conda/: no path relative to this file.
    assert not [p for p in pip if p.startswith(("-e", ".", "/")) or "/" in p], pip
    assert "CONDA_OVERRIDE_CUDA" in text


def test_torch_pins_agree_across_environment_pyproject_and_lock():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = _project_requirements()
    lock = _lock()
    conda, pip = _conda_deps()
    for pkg, conda_name in (("torch", "pytorch-gpu"), ("torchvision", "torchvision")):
        assert SpecifierSet(conda[conda_name].replace(" ", "")) == project[pkg].specifier, pkg
        assert lock[pkg] in project[pkg].specifier, (pkg, lock[pkg])
    # The CUDA runtime of the conda env is the one of the lock's torch wheels.
    cuda = ".".join(lock["nvidia-cuda-runtime"].split(".")[:2])
    assert conda["cuda-version"].lstrip("=") == cuda
    for req in map(Requirement, pip):  # the pip part of environment.yml pins the lock's versions
        assert str(req.specifier) == f"=={lock[_norm(req.name)]}", req
    mk = (ROOT / "Makefile").read_text()
    assert f"torch=={lock['torch']} torchvision=={lock['torchvision']}" in mk


def _project_requirements() -> dict:
    import tomllib
    from packaging.requirements import Requirement

    reqs = {}
    for toml in (ROOT / "pyproject.toml", ROOT / "slurm" / "pyproject.toml"):
        project = tomllib.loads(toml.read_text())["project"]
        deps = project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])
        for r in map(Requirement, deps):
            reqs.setdefault(_norm(r.name), r)
    return reqs


def test_lock_satisfies_every_requirement_and_is_what_is_installed():
    lock = _lock()
    for name, req in _project_requirements().items():
        if name == "snakemake-executor-plugin-submitit":
            continue
        assert name in lock, f"{name} is not in requirements-lock.txt: run make lock"
        assert lock[name] in req.specifier, (name, lock[name], str(req.specifier))
    # make install (which make test runs first) installed exactly the lock.
    wrong = {n: (v, metadata.version(n)) for n, v in lock.items()
             if _installed(n) and metadata.version(n) != v}
    missing = [n for n in lock if not _installed(n)]
    assert not wrong and not missing, (wrong, missing)


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.slow
def test_make_install_installs_from_the_lock(tmp_path):
    proc = subprocess.run(["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if "pip install" in ln]
    assert "-r requirements-lock.txt" in lines[0], lines
    assert all("--no-deps" in ln for ln in lines[1:]) and len(lines) == 2, lines


def test_every_rule_deploys_environment_yml():
    rules = (ROOT / "workflow" / "rules").glob("*.smk")
    envs = {m for f in rules for m in re.findall(r'conda:\s*\n\s*"([^"]+)"', f.read_text())}
    assert envs == {"../../environment.yml"}


# ---- GPU rules stop at once without CUDA --------------------------------------------------------

@NO_CUDA
@pytest.mark.slow
def test_cli_with_cuda_required_stops_before_any_work(tmp_path, tiny_config_dict):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(device="auto")))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cdrl", "train", "--config", str(cfg),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                          env=subprocess_env(threads=1, CDRL_REQUIRE_CUDA="1"),
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "asked for GPUs" in proc.stderr and "sees no CUDA device" in proc.stderr
    assert "require_cuda: false" in proc.stderr
    assert not (tmp_path / "run").exists()
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_gpu_rules_get_the_cuda_requirement(tmp_path):
    cfg = _tiny()
    cfg["train_resources"] = {**cfg["train_resources"], "gpu": 1}
    work = _workdir(tmp_path / "on", {**cfg, "require_cuda": True})
    out = _in(work, "-n", "-p", "--cores", "1", "all").stdout
    train = [ln for ln in out.splitlines() if "cdrl train" in ln]
    assert train and all("CDRL_REQUIRE_CUDA=1" in ln for ln in train)
    assert "CDRL_REQUIRE_CUDA=0 python -m cdrl sample" in out  # sample_resources has gpu: 0
    work = _workdir(tmp_path / "off", {**cfg, "require_cuda": False})
    out = _in(work, "-n", "-p", "--cores", "1", "all").stdout
    assert "CDRL_REQUIRE_CUDA=1" not in out and "CDRL_REQUIRE_CUDA=0" in out


@NO_CUDA
@pytest.mark.slow
def test_gpu_rule_without_cuda_fails_in_seconds_with_a_clear_message(tmp_path):
    cfg = _tiny(require_cuda=True)
    cfg["train_resources"] = {**cfg["train_resources"], "gpu": 1}
    work = _workdir(tmp_path, cfg)
    t0 = time.monotonic()
    # The target first: --resources, like --config, takes several values.
    proc = _in(work, "results/runs/digits_cdrl/seed0/final.json", "--cores", "1",
               "--resources", "gpu=1", timeout=300)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    log = (work / "logs/train/digits_cdrl/seed0.log").read_text()
    assert "cdrl train: error: this job asked for GPUs" in log, log
    assert "sees no CUDA device" in log and "require_cuda: false" in log, log
    assert not (work / "results/runs/digits_cdrl/seed0").exists()  # stopped before any work
    # Planning, the run config and every attempt (train has retries) in well under a minute
    # each on an idle machine; generous here for shared CI cores.
    assert elapsed < 240, elapsed


# ---- pre-flight: missing data, weights or output folders fail the plan --------------------------

def _cifar_preset(**top) -> dict:
    tiny = yaml.safe_load(TINY.read_text())["runs"]["digits_cdrl"]["set"]
    run = {"base": "cdrl_cifar10", "set": {k: v for k, v in tiny.items()
                                           if k.startswith("train.")}}
    cfg = _one_run(run, name="c10", **top)
    cfg["evaluation"] = {"cifar10": {"reference": "cifar10:train", "num_samples": 8,
                                     "metrics": {"inception": ["fid"]}}}
    return cfg


@pytest.mark.slow
def test_missing_dataset_is_a_dry_run_warning_and_stops_a_real_run(tmp_path):
    work = _workdir(tmp_path, _cifar_preset())
    t0 = time.monotonic()
    proc = _in(work, "-n", "all")
    out = proc.stdout + proc.stderr
    # A dry run names the file and the fix, then shows the plan.
    assert proc.returncode == 0, out[-3000:]
    assert "resources/datasets/cifar-10-batches-py/data_batch_1" in out, out[-3000:]
    assert "cifar-10-python.tar.gz" in out and "fix:" in out and "c10 (training)" in out
    assert "preflight=false" in out and "Job stats" in out
    # A real run stops after planning, before any job runs (not even the local run_config).
    proc = _in(work, "--cores", "1", "all")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Pre-flight check failed, nothing was submitted" in out, out[-3000:]
    assert "dataset cifar10" in out
    assert not (work / "results").exists(), sorted(p.name for p in work.iterdir())
    assert time.monotonic() - t0 < 180
    # Staged (stand-in files: only their presence is checked while planning), no warning.
    batches = work / "resources/datasets/cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(b"")
    proc = _in(work, "-n", "all")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Pre-flight" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("word", ["false", "no", "False"])
@pytest.mark.slow
def test_preflight_can_be_switched_off_as_yaml_writes_it(tmp_path, word):
    work = _workdir(tmp_path, _cifar_preset())
    proc = _in(work, "-n", "all", "--config", f"preflight={word}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Pre-flight" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_preflight_can_be_switched_off(tmp_path):
    work = _workdir(tmp_path, _cifar_preset(preflight=False))
    proc = _in(work, "--cores", "1", "results/configs/c10/seed0.yaml")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.slow
def test_missing_weights_and_unwritable_results_are_named_by_the_plan(tmp_path):
    work = _workdir(tmp_path, _tiny(inception_weights=str(tmp_path / "nope.pth")))
    cfg = yaml.safe_load((work / "preset.yaml").read_text())
    cfg["evaluation"]["digits16"]["headline_metrics"] = {"inception": ["fid"]}
    (work / "preset.yaml").write_text(yaml.safe_dump(cfg))
    (work / "results").write_text("not a folder")
    out = (lambda p: p.stdout + p.stderr)(_in(work, "-n", "all"))
    assert "Pre-flight check: jobs of this plan would fail" in out
    assert f"{tmp_path / 'nope.pth'}" in out
    assert "output folder results" in out and "not a folder" in out


def test_preflight_knows_every_dataset_that_needs_staging():
    from cdrl.data.images import IMAGE_DATASETS
    from cdrl.plan.preflight import REQUIRED

    unchecked = [name for name, spec in IMAGE_DATASETS.items()
                 if name not in REQUIRED and not spec.layout.strip().startswith("none:")]
    assert not unchecked, f"add their files to cdrl.plan.preflight.REQUIRED: {unchecked}"


def test_preflight_helpers(tmp_path):
    from cdrl.plan.preflight import check_writable, missing_dataset_files, parse_dataset_spec

    assert parse_dataset_spec("cifar10-interp") == ("cifar10", "test")
    assert parse_dataset_spec("digits16:test") is None and parse_dataset_spec("noise") is None
    assert parse_dataset_spec("celeba64:test") == ("celeba64", "test")
    # imagenet32: either layout is enough.
    missing = missing_dataset_files("imagenet32", "val", tmp_path)
    assert missing == [str(tmp_path / "imagenet32/val_data.npz")]
    (tmp_path / "imagenet32").mkdir()
    (tmp_path / "imagenet32/val_data.npz").write_bytes(b"")
    assert missing_dataset_files("imagenet32", "test", tmp_path) == []  # test means val here
    assert check_writable(tmp_path / "a" / "b") is None
    (tmp_path / "f").write_text("")
    assert "not a folder" in check_writable(tmp_path / "f" / "x").missing[0]


# ---- progress: training logs grow while the job runs, and attempts append ------------------------

def _long_preset(iterations: int) -> dict:
    tiny = yaml.safe_load(TINY.read_text())
    run = tiny["runs"]["digits_cdrl"]
    run["set"] = {**run["set"], "train.iterations": iterations, "train.log_every": 3,
                  "train.ckpt_every": 30}
    return _one_run(run, name="long")


@pytest.mark.slow
def test_training_log_shows_progress_while_it_runs_and_attempts_append(tmp_path):
    work = _workdir(tmp_path, _long_preset(100000))
    log = work / "logs/train/long/seed0.log"
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "1",
           "results/runs/long/seed0/final.json", "--configfile", str(work / "preset.yaml")]
    proc = subprocess.Popen(cmd, cwd=work, env=subprocess_env(threads=1), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        lines = []
        while time.monotonic() < deadline and len(lines) < 2:
            if proc.poll() is not None:
                pytest.fail(f"snakemake ended early:\n{proc.stdout.read()[-3000:]}")
            time.sleep(1)
            text = log.read_text() if log.is_file() else ""
            lines = re.findall(r"train \S+/seed0: iteration (\d+)/100000, loss_ebm \S+, [\d.]+ s/it, "
                               r"ETA \d+:\d\d:\d\d", text)
        assert len(lines) >= 2, f"no progress lines in {log} after 300 s"
        assert not (work / "results/runs/long/seed0/final.json").exists()  # still training
    finally:
        killed = False
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Snakemake stops the job
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # a loaded host: Snakemake still winding down
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            killed = True
    if killed:  # a killed Snakemake leaves its lock behind
        assert _in(work, "--unlock", "results/runs/long/seed0/final.json").returncode == 0
    first = log.read_text()
    # A second attempt (Snakemake deletes a job's log before it runs) appends to the first.
    (work / "preset.yaml").write_text(yaml.safe_dump(_long_preset(40), sort_keys=False))
    proc = _in(work, "--cores", "1", "--rerun-incomplete", "results/runs/long/seed0/final.json")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    second = log.read_text()
    assert second.startswith(first) and len(second) > len(first)
    assert second.count("== ") == 2, second


# ---- Inception Score: torch-fidelity's own weights, or a file staged by hand ---------------------

def _stand_in_torch_fidelity_weights(path: Path) -> Path:
    """A file in torch-fidelity's format, with the 1008-way classifier, random weights."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict",
                           lambda self, *a, **k: None), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return _stand_in_torch_fidelity_weights(tmp_path_factory.mktemp("tf") / "weights.pth")


def _samples(tmp_path: Path, n: int = 6) -> Path:
    x = np.random.default_rng(0).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", x=x)
    return tmp_path / "s.npz"


def test_torch_hub_folder_rule_matches_torch(tmp_path, monkeypatch):
    from cdrl.eval.inception_files import torch_hub_checkpoints

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "x")},
                {}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert torch_hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"


def test_isc_with_torch_fidelity_weights_from_the_hub_cache(tmp_path, monkeypatch, capsys,
                                                           stand_in):
    from cdrl.eval import evaluate as ev
    from cdrl.eval.inception_files import TORCH_FIDELITY_FILE

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch/hub/checkpoints" / TORCH_FIDELITY_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(stand_in.read_bytes())
    res = ev.evaluate(_samples(tmp_path), None, metrics=("isc",), weights_path="torch-fidelity",
                      cache_root=tmp_path / "cache")
    assert res["isc_mean"] is not None and res["isc_mean"] >= 1.0, res
    assert "unavailable" not in res
    assert res["provenance"]["feature_extractor"] == "inception-v3-compat"
    assert res["provenance"]["weights_file"] == str(cached)
    err = capsys.readouterr().err  # evaluation logs its progress
    assert "cdrl evaluate: samples features: 6/6 images read" in err
    assert "cdrl evaluate: done in" in err


def test_torch_fidelity_weights_download_or_say_how_to_stage(tmp_path, monkeypatch, stand_in):
    from urllib.error import URLError

    from cdrl.eval import evaluate as ev
    from cdrl.eval.inception_files import TORCH_FIDELITY_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def fake_download(url, dst, **kw):  # a cluster with internet
        calls.append(url)
        Path(dst).write_bytes(stand_in.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    res = ev.evaluate(_samples(tmp_path), None, metrics=("isc",), weights_path="torch-fidelity",
                      cache_root=tmp_path / "cache")
    assert calls == [TORCH_FIDELITY_URL] and res["isc_mean"] is not None

    def offline(url, dst, **kw):
        raise URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch2"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ev.MissingWeightsError, match="on a machine with internet download"):
        ev.evaluate(_samples(tmp_path), None, metrics=("isc",), weights_path="torch-fidelity")


def test_isc_with_a_file_staged_by_hand(tmp_path, stand_in):
    from cdrl.eval import evaluate as ev

    res = ev.evaluate(_samples(tmp_path), None, metrics=("isc",), weights_path=stand_in,
                      cache_root=tmp_path / "cache")
    assert res["isc_mean"] is not None


@pytest.mark.slow
def test_the_preset_switch_reaches_the_evaluation_jobs(tmp_path, stand_in):
    cfg = _tiny()
    cfg["evaluation"]["digits16"]["headline_metrics"] = {"inception": ["fid", "isc"]}
    th = tmp_path / "empty-torch-home"
    work = _workdir(tmp_path / "tf", {**cfg, "inception_weights": "torch-fidelity"})
    proc = _in(work, "-n", "-p", "all", TORCH_HOME=str(th))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "--extractor inception --weights torch-fidelity" in out
    assert "will download" in out  # the note: not cached yet
    work = _workdir(tmp_path / "path", {**cfg, "inception_weights": str(stand_in)})
    out = _in(work, "-n", "-p", "all").stdout
    assert f"--extractor inception --weights {stand_in}" in out
    assert "--extractor digits --weights" not in out


def test_fid_port_stays_the_default_and_says_how_to_get_isc(tmp_path):
    from cdrl.eval import evaluate as ev
    from cdrl.eval.inception_weights import FID_PORT_FILE

    fake = tmp_path / FID_PORT_FILE
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, fake)
    res = ev.evaluate(_samples(tmp_path), None, metrics=("isc",), weights_path=fake)
    assert res["isc_mean"] is None and "inception_weights: torch-fidelity" in \
        res["unavailable"]["isc"]
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["inception_weights"]["default"] == "fid-port"
    assert json.dumps(schema["properties"]["require_cuda"]["default"]) == "true"
