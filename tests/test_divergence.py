"""Divergence is an outcome: ``--on-divergence record`` ends a run with a final.json that says so,
and sampling, loading and evaluation follow the rule of ``cdrl.train.trainer`` (the last good
snapshot strictly before the divergence, or no value)."""

import contextlib
import io
import json
import types

import numpy as np
import pytest

from cdrl.cli import main as cli_main
from cdrl.core.config import config_from_dict
from cdrl.core.method import CDRL
from cdrl.core.optim import DivergenceError
from cdrl.data.sample_files import merge_samples, write_samples
from cdrl.tasks.generate import generate
from cdrl.train.trainer import RunStateError, load_run, read_divergence, train
from tests.conftest import TINY, TINY_DIGITS, merge


def _poison_from(monkeypatch, iteration: int) -> None:
    """NaN positive pairs from the step after ``iteration`` completed ones: the guard fires
    at ``iteration`` (one positive pair per training step)."""
    original, calls = CDRL.positive_pair, {"n": 0}

    def poisoned(self, x, k):
        calls["n"] += 1
        x_prev, x_i = original(self, x, k)
        return (x_prev * float("nan") if calls["n"] > iteration else x_prev), x_i

    monkeypatch.setattr(CDRL, "positive_pair", poisoned)


def _train_recording(cfg, run):
    """``train(..., on_divergence="record")`` and its warning lines on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = train(cfg, run, progress=False, on_divergence="record")
    return result, [ln for ln in err.getvalue().splitlines() if "warning" in ln]


@pytest.fixture(scope="module")
def diverged_toy(tmp_path_factory):
    """A toy run with snapshots at 2 and 4 that diverges at iteration 4 (record mode), and its
    warning lines. Shared by the tests of this module, which only read it."""
    cfg = config_from_dict(merge(TINY, {"train": {"snapshot_every": 2}}))
    run = tmp_path_factory.mktemp("toy") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _poison_from(monkeypatch, 4)
        result, warned = _train_recording(cfg, run)
    return cfg, run, result, warned


def test_record_ends_the_run_with_its_outcome(diverged_toy):
    cfg, run, result, warned = diverged_toy
    final = json.loads((run / "final.json").read_text())
    assert final == result
    assert {k: final[k] for k in ("iteration", "total", "diverged", "diverged_at",
                                  "last_good_snapshot")} == {
        "iteration": 4, "total": 8, "diverged": True, "diverged_at": 4, "last_good_snapshot": 2}
    assert "non-finite" in final["error"]
    # The snapshot of iteration 4 exists but holds the weights whose values exploded.
    assert (run / "snapshots/iter-00000004.pt").is_file()
    marker = json.loads((run / "DIVERGED.json").read_text())
    assert marker["iteration"] == 4 and marker["last_good_snapshot"] == 2
    assert marker["last_good_checkpoint"]["iteration"] == 4
    assert len(warned) == 1
    assert "run diverged at iteration 4" in warned[0] and "iteration 2" in warned[0]
    # Re-running the same request is a no-op; anything else still refuses to resume.
    assert train(cfg, run, progress=False, on_divergence="record") == result
    with pytest.raises(RunStateError, match="DIVERGED"):
        train(cfg, run, progress=False)
    with pytest.raises(RunStateError, match="DIVERGED"):
        train(cfg, run, max_iters=10, progress=False, on_divergence="record")


def test_load_run_gives_the_last_good_snapshot(diverged_toy):
    run = diverged_toy[1]
    with pytest.warns(UserWarning, match="last good snapshot, iteration 2"):
        _, _, state = load_run(run)
    assert state["iteration"] == 2 and state["diverged_at"] == 4
    assert load_run(run, snapshot=4)[2]["iteration"] == 4  # asked for by name: as it is


def test_sample_a_diverged_run(diverged_toy, tmp_path):
    run = diverged_toy[1]
    with pytest.warns(UserWarning, match="last good snapshot"):
        x, _, meta = generate(run, 0, 5, None, 0)
    assert len(x) == 5 and meta["iteration"] == 2
    assert meta["diverged"] is True and meta["snapshot"] == 2 and meta["diverged_at"] == 4
    for it in (4, 6):  # at or after the divergence: zero images
        with pytest.warns(UserWarning, match="no weights"):
            x, levels, meta = generate(run, 0, 5, None, 0, snapshot=it)
        assert x.shape == (0, 2) and levels.shape == (7, 0, 2)
        assert meta["diverged"] and meta["after_divergence"] and meta["snapshot"] == it
        assert meta["count"] == 5 and meta["iteration"] is None
    with pytest.raises(RunStateError, match="iter-00000003.pt does not exist"):
        generate(run, 0, 5, None, 0, snapshot=3)  # before the divergence: still an error


def test_zero_image_shards_merge(diverged_toy, tmp_path):
    run = diverged_toy[1]
    shards = []
    for start in (0, 3):
        with pytest.warns(UserWarning):
            x, levels, meta = generate(run, start, 3, None, 0, snapshot=6)
        shards.append(tmp_path / f"{start}.npz")
        write_samples(shards[-1], x, levels, meta)
    merged = merge_samples(shards, tmp_path / "all.npz")
    assert merged["count"] == 6 and merged["after_divergence"] is True
    with np.load(tmp_path / "all.npz") as npz:
        assert npz["x"].shape == (0, 2) and npz["index"].shape == (0,)


def test_fail_is_still_an_error(tmp_path, tiny_config_dict, write_config, capsys):
    over = {"train": {"max_abs_energy": 1e-12}}
    with pytest.raises(DivergenceError):
        train(config_from_dict(tiny_config_dict(**over)), tmp_path / "lib", progress=False)
    assert not (tmp_path / "lib/final.json").exists()
    cfg = write_config(tiny_config_dict(**over))
    argv = ["train", "--config", str(cfg), "--no-progress", "--run-dir"]
    assert cli_main([*argv, str(tmp_path / "cli")]) == 2
    assert cli_main([*argv, str(tmp_path / "rec"), "--on-divergence", "record"]) == 0
    assert json.loads((tmp_path / "rec/final.json").read_text())["diverged"] is True


def test_finished_run_says_not_diverged(tmp_path, tiny_config_dict):
    result = train(config_from_dict(tiny_config_dict()), tmp_path, max_iters=2, progress=False,
                   on_divergence="record")
    assert result == {"iteration": 2, "total": 2, "diverged": False}
    assert json.loads((tmp_path / "final.json").read_text()) == result
    assert read_divergence(tmp_path) is None


@pytest.fixture(scope="module")
def digits_without_snapshot(tmp_path_factory):
    """A digits run that diverges at its first step: no snapshot, no checkpoint."""
    cfg = config_from_dict(merge(TINY_DIGITS, {"train": {"max_abs_energy": 1e-12,
                                                         "snapshot_every": 2}}))
    run = tmp_path_factory.mktemp("digits") / "run"
    result, warned = _train_recording(cfg, run)
    assert result["diverged_at"] == 0 and result["last_good_snapshot"] is None
    assert len(warned) == 1 and "no value" in warned[0]
    return run


def test_no_good_snapshot(digits_without_snapshot, tmp_path):
    run = digits_without_snapshot
    with pytest.raises(RunStateError, match="before its first snapshot"):
        load_run(run)
    with pytest.warns(UserWarning, match="before its first snapshot"):
        x, levels, meta = generate(run, 0, 4, None, 0)
    assert x.shape == (0, 1, 16, 16)
    assert meta["diverged"] is True and meta["no_good_snapshot"] is True
    out = tmp_path / "s.npz"
    write_samples(out, x, levels, meta)
    with np.load(out) as npz:
        assert npz["x_uint8"].shape == (0, 16, 16, 1)
    from cdrl.report.figures import sample_grid

    sample_grid(out, tmp_path / "grid.png", "diverged")  # a note instead of a grid
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_evaluation_of_no_images_is_null(digits_without_snapshot, tmp_path):
    from cdrl.eval.class_accuracy import _cmd_class_accuracy
    from cdrl.eval.evaluate import evaluate

    with pytest.warns(UserWarning):
        x, levels, meta = generate(digits_without_snapshot, 0, 4, None, 0)
    samples = tmp_path / "s.npz"
    write_samples(samples, x, levels, meta)
    out = tmp_path / "m.json"
    # No extractor weights or reference are needed: nothing is computed.
    evaluate(samples, "no-such-reference", metrics="fid,kid,isc,prc", extractor="digits",
             out=out, weights_path=tmp_path / "absent.pth")
    result = json.loads(out.read_text())
    for key in ("fid", "kid_mean", "kid_std", "isc_mean", "isc_std", "precision", "recall"):
        assert result[key] is None, key
    assert result["diverged"] is True and "before its first snapshot" in result["reason"]
    assert result["provenance"]["samples_meta"]["no_good_snapshot"] is True
    acc = tmp_path / "acc.json"
    args = types.SimpleNamespace(samples=str(samples), out=str(acc), weights=None,
                                 classifier="digits-cnn")
    assert _cmd_class_accuracy(args) == 0
    result = json.loads(acc.read_text())
    assert result["class_accuracy"] is None and result["num"] == 0 and result["diverged"]
