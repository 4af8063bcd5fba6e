"""Image runs end to end on shipped data (digits): train, resume, sample PNG folders."""

import json

import numpy as np
from PIL import Image

from cdrl.cli import main as cli_main
from tests.conftest import TINY_DIGITS


def test_digits_run_trains_and_writes_png_samples(tmp_path, write_config):
    cfg = write_config(TINY_DIGITS)
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(cfg), "--run-dir", str(run), "--max-iters", "2",
                     "--no-progress"]) == 0
    assert cli_main(["train", "--config", str(cfg), "--run-dir", str(run), "--no-progress"]) == 0
    assert json.loads((run / "final.json").read_text())["iteration"] == 4
    whole, shard = tmp_path / "whole", tmp_path / "shard"
    assert cli_main(["sample", "--run-dir", str(run), "--num", "5", "--out", str(whole),
                     "--seed", "3"]) == 0
    assert cli_main(["sample", "--run-dir", str(run), "--start", "2", "--count", "3", "--out",
                     str(shard), "--seed", "3", "--batch-size", "2"]) == 0
    names = sorted(p.name for p in whole.glob("*.png"))
    assert names == [f"{i:06d}.png" for i in range(5)]
    for i in range(2, 5):
        a = np.asarray(Image.open(whole / f"{i:06d}.png"))
        b = np.asarray(Image.open(shard / f"{i:06d}.png"))
        assert a.shape == (16, 16) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    meta = json.loads((whole / "meta-000000.json").read_text())
    assert meta["count"] == 5 and meta["tweedie"] is True and meta["iteration"] == 4
    npz_out = tmp_path / "s.npz"
    assert cli_main(["sample", "--run-dir", str(run), "--num", "5", "--out", str(npz_out),
                     "--seed", "3"]) == 0
    with np.load(npz_out) as npz:
        assert npz["x"].shape == (5, 1, 16, 16) and npz["x_uint8"].shape == (5, 16, 16, 1)
        np.testing.assert_array_equal(npz["x_uint8"][3, ..., 0],
                                      np.asarray(Image.open(whole / "000003.png")))
    # Evaluate the PNG folder: the shard metadata of `cdrl sample` lands in the provenance.
    metrics = tmp_path / "metrics.json"
    assert cli_main(["evaluate", "--samples", str(whole), "--reference", "digits16:test",
                     "--metrics", "fid", "--extractor", "digits", "--out", str(metrics),
                     "--cache-root", str(tmp_path / "cache"),
                     "--weights", str(tmp_path / "digits.pth")]) == 0
    result = json.loads(metrics.read_text())
    assert result["fid"] > 0
    shard = result["provenance"]["samples_meta"]["shards"][0]
    assert shard["iteration"] == 4 and shard["seed"] == 3 and shard["use_ema"] is True
