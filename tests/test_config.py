"""Strict typed configs: unknown keys and wrong types are errors that name the key."""

import subprocess
import sys

import pytest

from cdrl.core.config import ConfigError, config_from_dict, config_to_dict, load_config
from tests.conftest import ROOT

EXPERIMENTS = ROOT / "workflow" / "config" / "experiments"


@pytest.mark.parametrize("name", ["toy_official.yaml", "toy_fast.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(EXPERIMENTS / name)
    assert cfg.ebm.arch == "toy_mlp" and cfg.schedule.levels == 6


def test_toy_official_mirrors_spec_11():
    cfg = load_config(EXPERIMENTS / "toy_official.yaml")
    t = cfg.train
    assert (t.batch_size, t.langevin_steps, t.iterations) == (2500, 15, 100_000)
    assert (t.ebm_optim.lr, t.init_optim.lr) == (3e-6, 1e-5)
    assert (t.ebm_optim.name, t.init_optim.name) == ("adam", "adamw")
    assert t.ebm_optim.ema_decay == t.init_optim.ema_decay == 0.9999
    assert (t.ebm_optim.warmup_iters, t.init_optim.warmup_offset) == (10_000, 500)
    assert (cfg.schedule.b2, cfg.schedule.c_mode) == (2e-3, "constant")
    assert cfg.ebm.ch_mult == [1, 2, 2, 2] and cfg.ebm.width == 128
    assert cfg.initializer.width == 64 and not cfg.sample.tweedie


@pytest.mark.parametrize("data, pattern", [
    ({"trian": {}}, r"unknown config key trian"),
    ({"train": {"batchsize": 3}}, r"unknown config key train\.batchsize"),
    ({"train": {"ebm_optim": {"lr": "1e-4"}}}, r"train\.ebm_optim\.lr: expected float, got str"),
    ({"train": {"batch_size": 2.5}}, r"train\.batch_size: expected int, got float"),
    ({"train": {"batch_size": True}}, r"train\.batch_size: expected int, got bool"),
    ({"train": {"variance_reduction": 1}}, r"train\.variance_reduction: expected bool"),
    ({"ebm": {"ch_mult": [1, "2"]}}, r"ebm\.ch_mult\[1\]: expected int"),
    ({"ebm": {"ch_mult": 2}}, r"ebm\.ch_mult: expected a list"),
    ({"schedule": {"kind": "ddpm"}}, r"schedule\.kind: expected one of \['cdrl', 'drl'\]"),
    ({"train": 5}, r"train: expected a mapping"),
    ({"train": {"batch_size": 0}}, r"train\.batch_size: must be >= 1"),
    ({"device": "tpu"}, r"device: expected auto, cpu, cuda"),
])
def test_errors_name_the_key(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(data)


def test_defaults_and_round_trip():
    cfg = config_from_dict({"schedule": {"b2": 1}})
    assert cfg.schedule.b2 == 1.0 and isinstance(cfg.schedule.b2, float)
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.slow
def test_cli_reports_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 4\n")
    proc = subprocess.run([sys.executable, "-m", "cdrl", "train", "--config", str(bad),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown config key train.batch_sise" in proc.stderr
    assert str(bad) in proc.stderr
    assert not (tmp_path / "run").exists()


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/cfg.yaml")
