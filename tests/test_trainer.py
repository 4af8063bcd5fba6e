"""Trainer: exact resume, atomic checkpoints, divergence guard, logs, config protection."""

import json
import math

import numpy as np
import pytest
import torch
import yaml

from cdrl.core.config import config_from_dict
from cdrl.core.method import CDRL
from cdrl.train import checkpoint as ckpt_mod
from cdrl.train.checkpoint import CheckpointError, latest_info, load_latest, save_checkpoint
from cdrl.train.trainer import RunStateError, load_run, train
from tests.conftest import (
    DRL_TINY,
    SINGLE_EBM_BASELINES,
    assert_same_checkpoint,
    single_ebm_tiny,
    state_differences,
)

# method: (its override of the tiny toy, leaves its state has more than, levels it samples)
RESUME_CASES = {
    "cdrl": ({}, 50, 7),
    "drl": (DRL_TINY, 20, 7),
    **{name: (single_ebm_tiny(name), 20, 2) for name in SINGLE_EBM_BASELINES},
}


@pytest.mark.parametrize("method", list(RESUME_CASES))
def test_resume_is_bit_exact(tmp_path, tiny_config_dict, method):
    """8 iterations straight equal 4, a checkpoint, a reload and 4 more, bit for bit: every
    tensor and value of the state (method, RNG, iteration) and the logged losses; for CDRL, DRL
    and each single-EBM baseline. The trained run then samples."""
    over, min_entries, n_levels = RESUME_CASES[method]
    cfg = config_from_dict(tiny_config_dict(**over))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(cfg, straight, progress=False)
    train(cfg, resumed, max_iters=4, progress=False)
    assert latest_info(resumed)["iteration"] == 4
    train(cfg, resumed, progress=False)
    assert_same_checkpoint(straight, resumed, min_entries=min_entries)
    stats = [[json.loads(ln) for ln in (d / "stats.jsonl").read_text().splitlines() if ln]
             for d in (straight, resumed)]
    losses = [[row["loss_ebm"] for row in rows] for rows in stats]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    assert all(math.isfinite(loss) for loss in losses[0])
    last = stats[0][-1]
    if method in SINGLE_EBM_BASELINES:
        assert last["level_count"] == [2 * 64]
    if method == "coopnets":
        assert "loss_gen" in last and last["level_init_err"][0] > 0
    _, trained, _ = load_run(straight)
    x, levels = trained.sample(50, generator=torch.Generator().manual_seed(0),
                               return_levels=True)
    assert x.shape == (50, 2) and len(levels) == n_levels and torch.isfinite(x).all()


def test_state_differences_cover_both_sides_and_every_kind_of_leaf():
    a = {"w": torch.zeros(3), "n": {"k": 1, "v": [1, 2]}, "rng": np.arange(3), "only_a": 0}
    b = {"w": torch.zeros(3), "n": {"k": 1, "v": [1, 2]}, "rng": np.arange(3), "only_b": 0}
    assert state_differences(a, a) == []
    assert state_differences(a, b) == ["only_a (only in the first)", "only_b (only in the second)"]
    c = {**a, "w": torch.tensor([0.0, 0.0, 1e-30]), "n": {"k": 2, "v": [1, 2, 3]},
         "rng": np.arange(1, 4)}
    assert state_differences(a, c) == ["w", "n/k", "n/v (length 2 against 3)", "rng"]
    assert state_differences({"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.int64)}) \
        == ["w"]
    assert state_differences({"n": {"k": 1}}, {"n": 1}) == ["n (dict against int)"]


def test_resume_continues_where_it_stopped(tmp_path, tiny_config_dict):
    cfg = config_from_dict(tiny_config_dict())
    train(cfg, tmp_path / "r", max_iters=4, progress=False)
    result = train(cfg, tmp_path / "r", max_iters=6, progress=False)
    assert result == {"iteration": 6, "total": 6, "diverged": False}
    its = [json.loads(ln)["iteration"]
           for ln in (tmp_path / "r/stats.jsonl").read_text().splitlines()]
    assert its == [2, 4, 6]


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    state4 = {"iteration": 4, "w": torch.arange(10.0)}
    save_checkpoint(tmp_path, 4, state4)

    def crash(obj, fh):
        fh.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 8, {"iteration": 8, "w": torch.zeros(10)})
    monkeypatch.undo()
    assert latest_info(tmp_path)["iteration"] == 4
    assert torch.equal(load_latest(tmp_path)["w"], torch.arange(10.0))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-00000004.pt"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path, 2, {"w": torch.ones(3)})
    (tmp_path / "checkpoints" / "ckpt-00000002.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="ckpt-00000002.pt"):
        load_latest(tmp_path)


def test_keep_last_checkpoints(tmp_path):
    for it in range(1, 6):
        save_checkpoint(tmp_path, it, {"it": it}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt-00000004.pt", "ckpt-00000005.pt"]


def test_divergence_guard(tmp_path, tiny_config_dict, monkeypatch):
    cfg = config_from_dict(tiny_config_dict())
    run = tmp_path / "run"
    train(cfg, run, max_iters=4, progress=False)
    original = CDRL.positive_pair

    def poisoned(self, x, k):
        x_prev, x_i = original(self, x, k)
        return x_prev * float("nan"), x_i

    monkeypatch.setattr(CDRL, "positive_pair", poisoned)
    with pytest.raises(Exception, match="non-finite"):
        train(cfg, run, progress=False)
    marker = json.loads((run / "DIVERGED.json").read_text())
    assert marker["iteration"] == 4 and marker["last_good_checkpoint"]["iteration"] == 4
    assert latest_info(run)["iteration"] == 4
    load_latest(run)  # the last good checkpoint still loads
    monkeypatch.undo()
    with pytest.raises(RunStateError, match="DIVERGED"):
        train(cfg, run, progress=False)


def test_run_dir_refuses_other_config(tmp_path, tiny_config_dict):
    train(config_from_dict(tiny_config_dict()), tmp_path, max_iters=2, progress=False)
    other = config_from_dict(tiny_config_dict(train={"batch_size": 32}))
    with pytest.raises(RunStateError, match="train.batch_size"):
        train(other, tmp_path, progress=False)
    longer = config_from_dict(tiny_config_dict(train={"iterations": 10}))
    train(longer, tmp_path, max_iters=4, progress=False)  # only the length changed: allowed


def test_a_run_started_before_a_key_existed_resumes_with_its_default(tmp_path,
                                                                     tiny_config_dict):
    """A run directory whose config.yaml predates a key (here data.order, added later with the
    old behaviour as its default) resumes; the same key set otherwise is still a change."""
    from tests.conftest import TINY_DIGITS

    cfg = config_from_dict(TINY_DIGITS)
    train(cfg, tmp_path, max_iters=2, progress=False)
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert stored["data"].pop("order") == "iid"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    train(cfg, tmp_path, progress=False)  # resumes: the missing key takes its default
    assert json.loads((tmp_path / "latest.json").read_text())["iteration"] == 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    epoch = config_from_dict({**TINY_DIGITS, "data": {**TINY_DIGITS["data"], "order": "epoch"}})
    with pytest.raises(RunStateError, match="data.order"):
        train(epoch, tmp_path, progress=False)


def test_stats_and_resolved_config(tmp_path, tiny_config_dict):
    train(config_from_dict(tiny_config_dict()), tmp_path, progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "stats.jsonl").read_text().splitlines()]
    last = lines[-1]
    for key in ("loss_ebm", "loss_init", "grad_norm_ebm", "grad_norm_init", "sec_per_iter",
                "peak_mem_mb", "lr_ebm", "lr_init", "level_f_pos", "level_f_neg",
                "level_loss_ebm", "level_init_err"):
        assert key in last, key
    assert len(last["level_f_pos"]) == 6 and sum(last["level_count"]) == 2 * 64
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["train"]["langevin_steps"] == 3 and resolved["sample"]["tweedie"] is False
    assert resolved["schedule"]["logsnr_max"] == 9.8  # defaults are filled in
    assert json.loads((tmp_path / "final.json").read_text())["iteration"] == 8
    cfg, method, state = load_run(tmp_path)
    assert state["iteration"] == 8 and method.cfg == cfg
    # the warm-up reached its end: lr factor min(1, it / 4)
    assert last["lr_ebm"] == pytest.approx(1e-4)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resumes(tmp_path, tiny_config_dict, write_config):
    import signal
    import subprocess
    import sys
    import time

    cfg_path = write_config(tiny_config_dict(train={"iterations": 100_000, "log_every": 1,
                                                    "ckpt_every": 100_000}))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cdrl", "train", "--config", str(cfg_path),
                             "--run-dir", str(run), "--no-progress"], stderr=subprocess.PIPE,
                            text=True)
    stats = run / "stats.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not stats.exists() or
                                      len(stats.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "checkpoint saved" in err
    stopped = latest_info(run)["iteration"]
    assert stopped >= 3
    result = train(config_from_dict(tiny_config_dict(train={
        "iterations": 100_000, "log_every": 1, "ckpt_every": 100_000})), run,
        max_iters=stopped + 2, progress=False)
    assert result["iteration"] == stopped + 2


def test_learning_rate_factors():
    from cdrl.core.optim import WarmUp

    ebm, init = WarmUp(10_000), WarmUp(10_000, offset=500)  # spec 3.5
    assert [ebm(0), ebm(5000), ebm(10_000), ebm(20_000)] == [0.0, 0.5, 1.0, 1.0]
    assert init(0) == pytest.approx(0.05) and init(9500) == 1.0
    cos = WarmUp(10, decay="cosine", decay_iters=100, final=0.1)
    assert cos(5) == pytest.approx(0.5 * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(
        torch.pi * 0.05)).item())))
    assert cos(100) == pytest.approx(0.1) and cos(1000) == pytest.approx(0.1)
    assert WarmUp(0, decay="linear", decay_iters=4)(2) == pytest.approx(0.5)


# ---- data.order: epoch (the official code's per-epoch shuffling) ---------------------------------

def test_epoch_rows_read_every_image_once_per_epoch_in_a_new_order():
    from cdrl.data.images import epoch_rows

    n, b = 10, 4
    seq = torch.cat([epoch_rows(n, b, step, seed=3) for step in range(5)])  # 20 rows: 2 epochs
    first, second = seq[:n], seq[n:2 * n]
    assert sorted(first.tolist()) == list(range(n)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    # Step 2 crosses the first epoch's end: the last 2 of epoch 0 then the first 2 of epoch 1.
    assert epoch_rows(n, b, 2, seed=3).tolist() == seq[8:12].tolist()
    # A function of the step alone: a fresh cache (a resumed run) reads the same rows.
    cache = {}
    assert [epoch_rows(n, b, s, 3, cache).tolist() for s in range(5)] == \
        seq.view(5, b).tolist()
    assert len(cache) <= 2
    assert not torch.equal(seq, torch.cat([epoch_rows(n, b, s, seed=4) for s in range(5)]))
    with pytest.raises(ValueError, match="batch >= 1"):
        epoch_rows(n, 0, 0, 3)


def test_epoch_order_resumes_bit_exact_and_differs_from_iid(tmp_path):
    from tests.conftest import TINY_DIGITS, merge

    cfg = config_from_dict(merge(TINY_DIGITS, {"data": {"order": "epoch"}}))
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", max_iters=2, progress=False)
    train(cfg, tmp_path / "resumed", progress=False)
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "resumed", min_entries=20)
    iid = config_from_dict(TINY_DIGITS)
    train(iid, tmp_path / "iid", progress=False)
    losses = [[json.loads(ln)["loss_ebm"] for ln in (tmp_path / d / "stats.jsonl").read_text()
               .splitlines()] for d in ("straight", "iid")]
    assert losses[0] != losses[1]  # other rows, so another run


def test_an_unknown_batch_order_is_a_config_error():
    from tests.conftest import TINY_DIGITS, merge

    with pytest.raises(Exception, match="order"):
        config_from_dict(merge(TINY_DIGITS, {"data": {"order": "shuffled"}}))
