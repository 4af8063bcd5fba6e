"""Learning curves: snapshots kept by the trainer, sampling from them, and the curve table."""

import json
from pathlib import Path

import numpy as np
import pytest

from cdrl.core.config import ConfigError, config_from_dict
from cdrl.report.curves import curve_rows, curve_table, learning_curves_figure, train_seconds
from cdrl.tasks.generate import generate
from cdrl.train.trainer import RunStateError, load_run, train
from tests.conftest import assert_same_checkpoint, float_leaves, state_differences


def _cfg(tiny_config_dict, **train_over):
    return config_from_dict(tiny_config_dict(train={"iterations": 6, "ckpt_every": 3,
                                                    "log_every": 2, **train_over}))


def test_snapshots_are_kept_and_sampled_from(tiny_config_dict, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_config_dict, snapshot_every=2, keep_checkpoints=1), run, progress=False)
    assert sorted(p.name for p in (run / "snapshots").glob("*.pt")) == [
        "iter-00000002.pt", "iter-00000004.pt", "iter-00000006.pt"]
    assert len(list((run / "checkpoints").glob("*.pt"))) == 1  # checkpoints still rotate
    # The last snapshot holds the same weights as the final checkpoint; an earlier one does not.
    _, final, _ = load_run(run)
    _, last, state = load_run(run, snapshot=6)
    _, early, _ = load_run(run, snapshot=2)
    assert state["iteration"] == 6
    ema = {name: m.state_dict()["ebm_ema"] for name, m in
           (("final", final), ("last", last), ("early", early))}
    assert len(float_leaves(ema["final"])) > 5
    assert not state_differences(ema["final"], ema["last"])
    assert state_differences(ema["final"], ema["early"])
    x, _, meta = generate(run, 0, 4, None, 0, snapshot=2)
    assert meta["iteration"] == 2 and x.shape[0] == 4
    with pytest.raises(RunStateError, match="iter-00000005.pt does not exist.*iter-00000002"):
        load_run(run, snapshot=5)


def test_snapshots_change_nothing_else_and_may_be_added_on_resume(tiny_config_dict, tmp_path):
    """Asking for snapshots later resumes the same run (no config-change refusal), and the
    weights are bit-identical to a run that never kept any."""
    train(_cfg(tiny_config_dict), tmp_path / "plain", progress=False)
    train(_cfg(tiny_config_dict), tmp_path / "snap", max_iters=3, progress=False)
    train(_cfg(tiny_config_dict, snapshot_every=3), tmp_path / "snap", progress=False)
    assert_same_checkpoint(tmp_path / "plain", tmp_path / "snap")
    assert (tmp_path / "snap" / "snapshots" / "iter-00000006.pt").is_file()


def test_snapshot_every_must_not_be_negative(tiny_config_dict):
    with pytest.raises(ConfigError, match="train.snapshot_every: must be >= 0, got -1"):
        _cfg(tiny_config_dict, snapshot_every=-1)


def test_train_seconds_sums_and_interpolates(tmp_path):
    stats = tmp_path / "stats.jsonl"
    stats.write_text("".join(json.dumps({"iteration": i, "sec_per_iter": s}) + "\n"
                             for i, s in ((10, 1.0), (20, 2.0), (30, 0.5))))
    assert train_seconds(stats, [10, 15, 20, 30]) == [10.0, 20.0, 30.0, 35.0]
    with pytest.raises(ValueError, match="ends at iteration 30, before 40"):
        train_seconds(stats, [40])


def _point(root: Path, run, seed, it, fid):
    path = root / f"results/metrics/{run}/seed{seed}/it{it}-n50-mnist.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fid": fid, "kid_mean": fid / 100}))
    return path


def test_curve_table_and_figure(tmp_path):
    files, dirs = [], {}
    for seed in (0, 1):
        d = tmp_path / f"results/runs/a/seed{seed}"
        d.mkdir(parents=True)
        (d / "stats.jsonl").write_text("".join(
            json.dumps({"iteration": i, "sec_per_iter": 0.5 + seed}) + "\n" for i in (50, 100)))
        dirs[f"a/seed{seed}"] = d
        files += [_point(tmp_path, "a", seed, 50, 40.0 + seed),
                  _point(tmp_path, "a", seed, 100, 20.0 + 2 * seed)]
    rows = curve_rows(files, dirs, {"a": "CDRL"})
    assert [(r["seed"], r["iteration"], r["train_seconds"], r["fid"]) for r in rows] == [
        (0, 50, 25.0, 40.0), (0, 100, 50.0, 20.0), (1, 50, 75.0, 41.0), (1, 100, 150.0, 22.0)]
    table = curve_table(rows)
    last = table[table["iteration"] == 100].iloc[0]
    assert (last["fid_mean"], last["fid_min"], last["fid_max"], last["seeds"]) == (21.0, 20, 22, 2)
    assert last["train_seconds"] == pytest.approx(100.0)
    assert last["delta_last"] == pytest.approx(21.0 - 40.5)
    assert np.isnan(table[table["iteration"] == 50].iloc[0]["delta_last"])
    learning_curves_figure(rows, tmp_path / "fig.png")  # per-seed points, mean and interval
    assert (tmp_path / "fig.png").stat().st_size > 1000 and (tmp_path / "fig.pdf").is_file()
    with pytest.raises(ValueError, match="not a snapshot metric file"):
        curve_rows([tmp_path / "k15-n50-mnist.json"], dirs, {})


def test_a_diverged_runs_curve_stops_at_its_last_good_snapshot(tmp_path):
    d = tmp_path / "results/runs/b/seed0"
    d.mkdir(parents=True)
    (d / "stats.jsonl").write_text("".join(
        json.dumps({"iteration": i, "sec_per_iter": 1.0}) + "\n" for i in (50, 100, 150)))
    files = [_point(tmp_path, "b", 0, 100, 30.0)]
    dead = tmp_path / "results/metrics/b/seed0/it200-n50-mnist.json"
    dead.write_text(json.dumps({"fid": None, "kid_mean": None, "diverged": True}))
    rows = curve_rows(files + [dead], {"b/seed0": d}, {"b": "DRL"})
    assert [(r["iteration"], r["fid"]) for r in rows] == [(100, 30.0)]
