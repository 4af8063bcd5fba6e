"""Metrics through torch-fidelity, offline: the digits extractor, caching, inputs, provenance.

    .venv/bin/pytest tests/test_evaluate.py

The real Inception test runs only where staged weights exist (resources/weights or
$CDRL_INCEPTION_WEIGHTS); CI stages them first with scripts/stage_inception.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdrl.eval import evaluate as ev
from cdrl.eval.inception_weights import FID_PORT_FILE
from cdrl.eval.small_cnn import DigitsFeatureExtractor, digits_uint8, ensure_digits_weights
from tests.conftest import staged_inception

PROVENANCE_KEYS = {"versions", "extractor", "feature_extractor", "weights_file", "weights_sha256",
                   "sample_count", "samples_sha256", "reference_count", "reference_name",
                   "reference_sha256", "reference_cache_name", "rng_seed", "tf32"}


@pytest.fixture(scope="session")
def digits_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "digits-cnn.pth"
    info = ensure_digits_weights(path)
    assert info["test_accuracy"] >= 0.95
    return path


@pytest.fixture(scope="session")
def digits():
    return digits_uint8()[0]  # [1797, 1, 8, 8] uint8


def _npz(path: Path, x: np.ndarray, **extra) -> Path:
    np.savez(path, x=x, **extra)
    return path


def _run(samples, reference, weights, cache_root, **kw):
    return ev.evaluate(samples, reference, extractor="digits", weights_path=weights,
                       cache_root=cache_root, **kw)


def test_uint8_conversion_and_layouts():
    x = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], dtype=np.float32).reshape(1, 2, 3)
    assert ev.to_uint8_nchw(x).ravel().tolist() == [0, 0, 128, 255, 255, 255]
    nhwc = np.arange(2 * 5 * 4 * 3, dtype=np.uint8).reshape(2, 5, 4, 3)
    assert np.array_equal(ev.to_uint8_nchw(nhwc), nhwc.transpose(0, 3, 1, 2))
    assert ev.to_uint8_nchw(nhwc[..., 0]).shape == (2, 1, 5, 4)
    with pytest.raises(ev.EvaluationError, match="channel axis"):
        ev.to_uint8_nchw(np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(ev.EvaluationError, match="uint8 or float"):
        ev.to_uint8_nchw(np.zeros((2, 4, 4), np.int64))


def test_digits_weights_are_reused(digits_weights):
    before = digits_weights.stat().st_mtime_ns
    info = ensure_digits_weights(digits_weights)
    assert digits_weights.stat().st_mtime_ns == before and len(info["sha256"]) == 64


def test_one_small_cnn_module_serves_every_extractor_and_classifier(digits_weights):
    """`cdrl evaluate --extractor` and `cdrl class-accuracy --classifier` name the same three
    configurations of cdrl.eval.small_cnn, with the same weights files."""
    from cdrl.eval.class_accuracy import CLASSIFIERS
    from cdrl.eval.small_cnn import CNN_CONFIGS, DIGITS

    assert list(CNN_CONFIGS) == ["digits", "mnist", "mnist16"] == ev.EXTRACTORS[1:]
    assert {c.name: str(c.weights) for c in CNN_CONFIGS.values()} == {
        name: weights for name, (_, weights) in CLASSIFIERS.items()} == {
        "digits-cnn": "resources/weights/digits-cnn.pth",
        "mnist-cnn": "resources/weights/mnist-cnn.pth",
        "mnist16-cnn": "resources/weights/mnist16-cnn.pth"}
    assert ev.CONF_EXTRACTORS == ("mnist", "mnist16")
    info = ensure_digits_weights(digits_weights)
    assert info["extractor"] == "digits-cnn" and info["size"] == 16 and info["threads"] == 1
    assert (info["epochs"], info["batch"], info["lr"], info["lr_decay"]) == (15, 64, 3e-3, "none")
    # Digits inputs of any size are resized bilinearly to 16x16 (MNIST16 area-resizes instead).
    x8 = torch.from_numpy(digits_uint8()[0][:4])
    assert DIGITS.preprocess(x8).shape == (4, 1, 16, 16)
    assert torch.equal(DIGITS.preprocess(x8.repeat(1, 3, 1, 1)), DIGITS.preprocess(x8))


def test_fid_zero_on_itself_and_grows_with_noise(digits_weights, digits, tmp_path):
    ref = _npz(tmp_path / "ref.npz", digits[:400].transpose(0, 2, 3, 1))  # NHWC uint8
    same = _run(ref, ref, digits_weights, tmp_path / "cache")["fid"]
    x = digits[:400].astype(np.float32) / 127.5 - 1.0
    rng = np.random.default_rng(0)
    fids = []
    for i, std in enumerate([0.1, 0.3, 0.6]):
        noisy = _npz(tmp_path / f"noisy{i}.npz", x + std * rng.standard_normal(x.shape))
        fids.append(_run(noisy, ref, digits_weights, tmp_path / "cache")["fid"])
    assert abs(same) < 1e-3 * fids[0], (same, fids)
    assert fids[0] < fids[1] < fids[2], fids


def test_all_metrics_keys_json_and_provenance(digits_weights, digits, tmp_path):
    a = _npz(tmp_path / "a.npz", digits[:300], meta=np.array(json.dumps({"use_ema": True})))
    b = _npz(tmp_path / "b.npz", digits[300:600])
    out = tmp_path / "m" / "metrics.json"
    res = _run(a, b, digits_weights, tmp_path / "cache", metrics=("fid", "kid", "isc", "prc"),
               out=out, extra_provenance={"ema": True, "sampler_steps": 15, "iteration": 7})
    assert list(res) == ["fid", "kid_mean", "kid_std", "isc_mean", "isc_std", "precision",
                         "recall", "provenance"]
    assert json.loads(out.read_text()) == res
    assert 5.0 < res["isc_mean"] <= 10.0  # 10 well-separated classes, confidently classified
    assert 0.0 <= res["precision"] <= 1.0 and 0.0 <= res["recall"] <= 1.0
    assert res["fid"] > 0 and np.isfinite(res["kid_mean"])
    prov = res["provenance"]
    assert PROVENANCE_KEYS <= set(prov)
    assert prov["sample_count"] == prov["reference_count"] == 300 and prov["rng_seed"] == 2020
    assert prov["kid_subset_size"] == 300 and prov["samples_meta"] == {"use_ema": True}
    assert prov["tf32"]["matmul_allow_tf32"] is False and prov["tf32"]["cudnn_allow_tf32"] is False
    assert prov["ema"] is True and prov["sampler_steps"] == 15 and prov["iteration"] == 7
    assert set(prov["versions"]) >= {"torch", "torchvision", "torch_fidelity", "numpy", "cdrl"}
    with pytest.raises(ev.EvaluationError, match="overwrite"):
        _run(a, b, digits_weights, tmp_path / "cache", extra_provenance={"rng_seed": 1})


def test_npz_and_png_folder_give_identical_results(digits_weights, digits, tmp_path):
    x = digits[:200].astype(np.float32) / 127.5 - 1.0 + 0.05  # floats, converted on load
    npz = _npz(tmp_path / "s.npz", x)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(ev.to_uint8_nchw(x)):
        Image.fromarray(img[0]).save(folder / f"{i:06d}.png")
    ref = _npz(tmp_path / "ref.npz", digits[200:400])
    kw = {"metrics": ("fid", "kid", "prc"), "cache_root": tmp_path / "cache"}
    r1 = ev.evaluate(npz, ref, extractor="digits", weights_path=digits_weights, **kw)
    r2 = ev.evaluate(folder, ref, extractor="digits", weights_path=digits_weights, **kw)
    metrics = [k for k in r1 if k != "provenance"]
    assert {k: r1[k] for k in metrics} == {k: r2[k] for k in metrics} and list(r1) == list(r2)
    assert r1["provenance"]["samples_sha256"] == r2["provenance"]["samples_sha256"]


def test_reference_cache_is_reused_and_keyed_by_content(digits_weights, digits, tmp_path,
                                                        monkeypatch):
    seen = []
    forward = DigitsFeatureExtractor.forward
    monkeypatch.setattr(DigitsFeatureExtractor, "forward",
                        lambda self, x: seen.append(len(x)) or forward(self, x))
    cache = tmp_path / "cache"
    s = _npz(tmp_path / "s.npz", digits[:100])
    ref_x = digits[100:250].copy()
    ref = _npz(tmp_path / "ref.npz", ref_x)
    first = _run(s, ref, digits_weights, cache)
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    name = first["provenance"]["reference_cache_name"]
    assert sum(seen) == 250 and files and all(f.startswith(name) for f in files)
    seen.clear()
    second = _run(s, ref, digits_weights, cache)
    assert sum(seen) == 100  # only the samples: the reference came from the cache
    assert second["fid"] == first["fid"]
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == files
    ref_x[0, 0, 4, 4] = 255 - ref_x[0, 0, 4, 4]  # one pixel of one reference image
    _npz(ref, ref_x)
    seen.clear()
    third = _run(s, ref, digits_weights, cache)
    assert sum(seen) == 250 and third["provenance"]["reference_cache_name"] != name
    assert third["fid"] != first["fid"] and len(list(cache.iterdir())) == 2 * len(files)


def test_isc_with_fid_port_is_null_not_faked(digits, tmp_path):
    fake = tmp_path / FID_PORT_FILE  # only the missing fc matters: no features are extracted
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, fake)
    s = _npz(tmp_path / "s.npz", digits[:20])
    res = ev.evaluate(s, None, metrics=("isc",), extractor="inception", weights_path=fake,
                      cache_root=tmp_path / "cache")
    assert res["isc_mean"] is None and res["isc_std"] is None
    assert "classifier" in res["unavailable"]["isc"]
    assert res["provenance"]["feature_extractor"] == "inception-v3-fidport"


def test_missing_inception_weights_say_how_to_stage(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ev.INCEPTION_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # the default resources/weights path does not exist here
    s = _npz(tmp_path / "s.npz", digits[:10])
    with pytest.raises(ev.MissingWeightsError, match="stage_inception.py --dest resources/weights"):
        ev.evaluate(s, s)
    import argparse

    parser = argparse.ArgumentParser()
    ev.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--samples", str(s), "--reference", str(s),
                              "--out", str(tmp_path / "m.json"), "--weights", "nope.pth"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "nope.pth" in err and "scripts/stage_inception.py" in err


@pytest.mark.slow
@pytest.mark.skipif(staged_inception() is None,
                    reason="Inception FID weights not staged: run python "
                           "scripts/stage_inception.py --dest resources/weights "
                           "(or set CDRL_INCEPTION_WEIGHTS)")
def test_real_inception_digits_halves_far_below_noise(digits, tmp_path):
    weights = staged_inception()
    rng = np.random.default_rng(0)
    a = _npz(tmp_path / "a.npz", digits[:100])
    b = _npz(tmp_path / "b.npz", digits[100:200])
    noise = _npz(tmp_path / "noise.npz", rng.integers(0, 256, (100, 1, 8, 8), dtype=np.uint8))
    kw = {"extractor": "inception", "weights_path": weights, "cache_root": tmp_path / "cache"}
    halves = ev.evaluate(b, a, **kw)["fid"]
    vs_noise = ev.evaluate(noise, a, **kw)["fid"]
    assert 0 < halves < 0.3 * vs_noise, (halves, vs_noise)


def test_reference_by_dataset_name_and_cli(digits_weights, digits, tmp_path, capsys):
    class Digits(torch.utils.data.Dataset):  # what the lead's dataset registry will hand over
        def __len__(self):
            return 150

        def __getitem__(self, i):
            return torch.from_numpy(digits[100 + i]), int(i % 10)

    s = _npz(tmp_path / "s.npz", digits[:100])
    by_name = _run(s, "digits-train", digits_weights, tmp_path / "c",
                   reference_loader=lambda name: Digits())
    by_file = _run(s, _npz(tmp_path / "ref.npz", digits[100:250]), digits_weights, tmp_path / "c")
    assert by_name["fid"] == by_file["fid"]
    assert by_name["provenance"]["reference_cache_name"].startswith("digits-train-digits-w")
    with pytest.raises(ev.EvaluationError, match="no dataset loader"):
        _run(s, "digits-train", digits_weights, tmp_path / "c")
    import argparse

    parser = argparse.ArgumentParser()
    ev.add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "m.json"
    args = parser.parse_args(["evaluate", "--samples", str(s), "--reference", str(s),
                              "--metrics", "fid,isc", "--extractor", "digits", "--weights",
                              str(digits_weights), "--cache-root", str(tmp_path / "c"),
                              "--out", str(out)])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {k: v for k, v in json.loads(out.read_text()).items() if k != "provenance"}
    assert abs(printed["fid"]) < 1e-6 and printed["isc_mean"] > 1


def test_tf32_flags_restored_even_on_error():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with pytest.raises(RuntimeError), ev.tf32_disabled() as state:
        assert not torch.backends.cudnn.allow_tf32 and state["cudnn_allow_tf32"] is False
        raise RuntimeError
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_cli_evaluate_against_a_dataset_name(tmp_path):
    """`cdrl evaluate --reference digits16:test` resolves the dataset registry (digits extractor)."""
    import json as _json

    import numpy as _np

    from cdrl.cli import main as cli_main
    from cdrl.data.images import load_image_dataset

    test_set = load_image_dataset("digits16", "unused", "test")
    npz = tmp_path / "self.npz"
    _np.savez(npz, x=test_set.to_float().numpy())
    out = tmp_path / "m.json"
    rc = cli_main(["evaluate", "--samples", str(npz), "--reference", "digits16:test",
                   "--metrics", "fid,kid", "--extractor", "digits", "--out", str(out),
                   "--cache-root", str(tmp_path / "cache"),
                   "--weights", str(tmp_path / "digits.pth")])
    assert rc == 0
    result = _json.loads(out.read_text())
    assert abs(result["fid"]) < 1e-3 and "kid_mean" in result
    assert result["provenance"]["reference"] == "digits16:test"
    assert result["provenance"]["reference_count"] == len(test_set)
