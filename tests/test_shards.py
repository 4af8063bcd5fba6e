"""Sharded sampling: ``cdrl sample --start S --count N`` shards merged by ``cdrl merge-samples``
(the workflow's ``sample_shard_size``) give the file one unsharded job writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdrl.cli import main as cli_main
from cdrl.data.sample_files import ShardError, merge_samples
from tests.conftest import TINY_COND_DIGITS, merge

# Two iterations suffice: the merge is checked, not the model.
COND_DIGITS = merge(TINY_COND_DIGITS, {"train": {"iterations": 2, "log_every": 1},
                                       "sample": {"batch_size": 2}})


def _sample(run, out, *args):
    assert cli_main(["sample", "--run-dir", str(run), "--seed", "5", "--out", str(out),
                     *args]) == 0
    return out


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    import yaml

    tmp = tmp_path_factory.mktemp("cond")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(COND_DIGITS))
    assert cli_main(["train", "--config", str(cfg), "--run-dir", str(tmp / "run"),
                     "--no-progress"]) == 0
    return tmp / "run"


def test_merged_shards_are_the_unsharded_sample_bit_for_bit(cond_run, tmp_path):
    """Guided, with per-image labels: shards of whole batches are the same batches, so the
    merge equals one job's file in every array, and its metadata sums the shards' seconds."""
    guided = ("--guidance", "1.5", "--labels", "uniform", "--steps", "1")
    whole = _sample(cond_run, tmp_path / "whole.npz", "--num", "6", *guided)
    shards = [_sample(cond_run, tmp_path / f"s{a}.npz", "--start", str(a), "--count", str(n),
                      *guided) for a, n in ((0, 4), (4, 2))]
    merged = tmp_path / "merged.npz"
    assert cli_main(["merge-samples", *map(str, shards), "--out", str(merged)]) == 0

    want, got = _arrays(whole), _arrays(merged)
    assert sorted(got) == sorted(want) == ["index", "labels", "meta", "x", "x_uint8"]
    for key in ("x", "x_uint8", "index", "labels"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert got["index"].tolist() == list(range(6))
    meta, one = json.loads(str(got["meta"])), json.loads(str(want["meta"]))
    shard_metas = [json.loads(str(_arrays(s)["meta"])) for s in shards]
    assert {k: v for k, v in meta.items() if k not in ("seconds", "seconds_per_image", "shards")} \
        == {k: v for k, v in one.items() if k not in ("seconds", "seconds_per_image")}
    assert meta["seconds"] == pytest.approx(sum(m["seconds"] for m in shard_metas))
    assert [(s["start"], s["count"]) for s in meta["shards"]] == [(0, 4), (4, 2)]


def test_merge_refuses_a_gap_an_overlap_and_shards_of_another_sample(cond_run, tmp_path):
    a = _sample(cond_run, tmp_path / "a.npz", "--start", "0", "--count", "2", "--steps", "1")
    b = _sample(cond_run, tmp_path / "b.npz", "--start", "2", "--count", "2", "--steps", "1")
    gap = _sample(cond_run, tmp_path / "gap.npz", "--start", "3", "--count", "1", "--steps", "1")
    other = _sample(cond_run, tmp_path / "k2.npz", "--start", "2", "--count", "2", "--steps", "2")
    out = tmp_path / "out.npz"
    with pytest.raises(ShardError, match="starts at image 3, expected 2"):
        merge_samples([a, gap], out)
    with pytest.raises(ShardError, match="starts at image 0, expected 2"):
        merge_samples([a, a], out)
    with pytest.raises(ShardError, match="steps differ"):
        merge_samples([a, other], out)
    assert not out.exists()  # nothing half-written
    merge_samples([a, b], out)
    assert _arrays(out)["index"].tolist() == [0, 1, 2, 3]


def test_merge_keeps_every_level_of_vector_samples(tmp_path, tiny_config_dict, write_config):
    cfg = write_config(tiny_config_dict(train={"iterations": 2, "ckpt_every": 2}))
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(cfg), "--run-dir", str(run), "--no-progress"]) == 0
    whole = _sample(run, tmp_path / "whole.npz", "--num", "5", "--batch-size", "5")
    shards = [_sample(run, tmp_path / f"s{a}.npz", "--start", str(a), "--count", str(n),
                      "--batch-size", "5") for a, n in ((0, 3), (3, 2))]
    merge_samples(shards, tmp_path / "merged.npz")
    want, got = _arrays(whole), _arrays(tmp_path / "merged.npz")
    assert got["levels"].shape == want["levels"].shape == (7, 5, 2)
    np.testing.assert_allclose(got["levels"], want["levels"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["x"], want["x"], rtol=0, atol=1e-6)


def test_merge_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["merge-samples", str(tmp_path / "none.npz"), "--out",
                     str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cdrl merge-samples: error:") and "\n" not in err, err
