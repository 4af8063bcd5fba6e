"""Image datasets (spec 8): tiny files written in each real on-disk format, plus the shipped sets.

Run: ``.venv/bin/python -m pytest -q tests/test_datasets.py``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from cdrl.core.config import DataConfig
from cdrl.data.images import (
    IMAGE_DATASETS,
    DatasetError,
    ImageSet,
    content_sha256,
    float_to_uint8,
    load_image_dataset,
    make_data,
    uint8_to_float,
)
from cdrl.data.toy import ToyData

RNG = np.random.default_rng(0)


# Writers of the real formats.
class Py2Pickler(pickle._Pickler):
    """Writes every string as a Python 2 byte string and numpy as numpy.core: the 2009 format."""

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def write_cifar(root, rows=3, modern=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, rows).tolist()
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * rows}
        if modern:  # a Python 3 re-save: bytes keys, protocol 5, numpy._core names
            raw = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=5)
        else:
            buf = io.BytesIO()
            Py2Pickler(buf, protocol=2).dump(batch)
            raw = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)
        out[name] = (data, labels)
    return out


def write_imagenet_npz(root, rows=2):
    folder = root / "imagenet32"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"train_data_batch_{i}.npz" for i in range(1, 11)] + ["val_data.npz"]:
        data = RNG.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = RNG.integers(1, 1001, rows)
        np.savez(folder / name, data=data, labels=labels.tolist(), mean=data.mean(0))
        out[name] = (data, labels)
    return out


def write_i64(root):
    base = root / "i64"
    index = {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], "2": ["n015", "shark"]}
    (base / "train_64" / "n01443537").mkdir(parents=True)
    (base / "train_64" / "n015").mkdir()
    (base / "val_64").mkdir()
    (base / "imagenet_class_index.json").write_text(json.dumps(index))
    (base / "ILSVRC2012_val_labels.json").write_text(json.dumps(
        {"ILSVRC2012_val_00000001.png": "n015", "ILSVRC2012_val_00000002.png": "n01440764"}))
    pics = {"train_64/n01443537/a.png": (64, 64), "train_64/n015/b.png": (64, 80),
            "val_64/ILSVRC2012_val_00000001.png": (64, 64),
            "val_64/ILSVRC2012_val_00000002.png": (70, 64)}
    for rel, (w, h) in pics.items():
        Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / rel)
    return base


def write_celeba(root):
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"00000{i}.jpg" for i in range(1, 5)]
    for name in names:
        Image.fromarray(RNG.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(
            base / "img_align_celeba" / name, quality=95)
    attrs = RNG.choice([-1, 1], (4, 40))
    lines = ["4", " ".join(f"attr{k}" for k in range(40))]
    lines += [f"{n} " + " ".join(f"{v:2d}" for v in row)
              for n, row in zip(names, attrs, strict=True)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = ["0", "0", "1", "2"]
    (base / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in
                                                          zip(names, parts, strict=True)))
    return base, names, attrs


def check_float(x, shape):
    assert x.dtype == torch.float32 and tuple(x.shape[1:]) == shape
    assert x.min() >= -1 and x.max() <= 1


# CIFAR-10.
def test_cifar_round_trips_pixels_labels_and_channel_order(tmp_path):
    written = write_cifar(tmp_path)
    train = load_image_dataset("cifar10", tmp_path, "train")
    assert len(train) == 15 and train.shape == (3, 32, 32) and train.num_classes == 10
    data, labels = written["data_batch_2"]
    # Row = 1024 R values, then G, then B (each 32x32 row-major).
    assert torch.equal(train.images[3, 0, 1, 2], torch.tensor(data[0, 32 + 2]))
    assert torch.equal(train.images[3, 2, 0, 0], torch.tensor(data[0, 2048]))
    assert train.labels[3:6].tolist() == labels and train.labels.dtype == torch.long
    test = load_image_dataset("cifar10", tmp_path, "test")
    assert np.array_equal(test.images.reshape(3, -1).numpy(), written["test_batch"][0])
    assert load_image_dataset("cifar10", tmp_path, "val").split == "test"  # alias
    x = test.to_float()
    check_float(x, (3, 32, 32))
    assert torch.allclose((x + 1) * 127.5, test.images.float(), atol=1e-4)


def test_cifar_reads_python3_resaved_pickles(tmp_path):
    write_cifar(tmp_path, modern=True)
    assert len(load_image_dataset("cifar10", tmp_path, "test")) == 3


def test_cifar_verify_reports_checksum_mismatch(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DatasetError, match="expected 40351d587109b95175f43aff81a1287e"):
        load_image_dataset("cifar10", tmp_path, "test", verify=True)


def test_cifar_garbage_and_foreign_pickles_are_clear_errors(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(os.urandom(500))
    with pytest.raises(DatasetError, match="cannot parse .*data_batch_3.*corrupt") as err:
        load_image_dataset("cifar10", tmp_path, "train")
    assert "c58f30108f718f92721af3b95e74349a" in str(err.value)
    bad.write_bytes(pickle.dumps({b"data": os.getcwd}, protocol=2))  # a global
    with pytest.raises(DatasetError, match="refusing global"):
        load_image_dataset("cifar10", tmp_path, "train")


def test_missing_batch_names_its_path(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match="data_batch_4 not found"):
        load_image_dataset("cifar10", tmp_path, "train")


# ImageNet 32x32.
def test_imagenet_npz_round_trip_and_labels_minus_one(tmp_path):
    written = write_imagenet_npz(tmp_path)
    train = load_image_dataset("imagenet32", tmp_path, "train")
    assert len(train) == 20 and train.shape == (3, 32, 32) and train.num_classes == 1000
    data, labels = written["train_data_batch_10.npz"]
    assert np.array_equal(train.images[18:].reshape(2, -1).numpy(), data)
    assert torch.equal(train.images[18, 1, 0, 5], torch.tensor(data[0, 1024 + 5]))  # G plane
    assert train.labels[18:].tolist() == (labels - 1).tolist()
    val = load_image_dataset("imagenet32", tmp_path, "test")  # alias of val
    assert val.split == "val" and len(val) == 2
    assert val.labels.tolist() == (written["val_data.npz"][1] - 1).tolist()


def test_imagenet_npz_is_preferred_over_folder(tmp_path):
    write_imagenet_npz(tmp_path)
    write_i64(tmp_path)
    assert load_image_dataset("imagenet32", tmp_path, "val").source.endswith("imagenet32")


def test_imagenet_npz_corrupt(tmp_path):
    write_imagenet_npz(tmp_path)
    (tmp_path / "imagenet32" / "val_data.npz").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(DatasetError, match="cannot parse .*val_data.npz"):
        load_image_dataset("imagenet32", tmp_path, "val")


def test_imagenet_folder_matches_official_transform(tmp_path):
    base = write_i64(tmp_path)
    official = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32),
                                   transforms.PILToTensor()])
    train = load_image_dataset("imagenet32", tmp_path, "train")
    assert train.shape == (3, 32, 32) and train.labels.tolist() == [1, 2]  # sorted wnid folders
    assert torch.equal(train.images[1], official(Image.open(base / "train_64/n015/b.png")))
    val = load_image_dataset("imagenet32", tmp_path, "val")
    assert val.labels.tolist() == [2, 0]
    ref = official(Image.open(base / "val_64/ILSVRC2012_val_00000002.png"))
    assert torch.equal(val.images[1], ref)


def test_imagenet_folder_unlabelled_and_broken_files(tmp_path):
    base = write_i64(tmp_path)
    Image.new("RGB", (64, 64)).save(base / "val_64" / "stray.png")
    with pytest.raises(DatasetError, match="no class for 'stray.png'"):
        load_image_dataset("imagenet32", tmp_path, "val")
    (base / "val_64" / "stray.png").write_bytes(b"garbage")
    labels = json.loads((base / "ILSVRC2012_val_labels.json").read_text())
    (base / "ILSVRC2012_val_labels.json").write_text(json.dumps({**labels, "stray.png": "n015"}))
    with pytest.raises(DatasetError, match="cannot parse .*stray.png"):
        load_image_dataset("imagenet32", tmp_path, "val")


# CelebA 64x64.
def test_celeba_layout_attributes_and_transform(tmp_path):
    base, names, attrs = write_celeba(tmp_path)
    train = load_image_dataset("celeba64", tmp_path, "train")
    assert len(train) == 2 and train.shape == (3, 64, 64) and train.num_classes == 0
    assert train.labels.tolist() == [0, 0] and len(train.attribute_names) == 40
    assert torch.equal(train.attributes, torch.as_tensor((attrs[:2] > 0).astype(np.int64)))
    ref = transforms.Compose([transforms.CenterCrop(140), transforms.Resize(64),
                              transforms.PILToTensor()])
    with Image.open(base / "img_align_celeba" / names[1]) as img:
        assert torch.equal(train.images[1], ref(img.convert("RGB")))
    assert len(load_image_dataset("celeba64", tmp_path, "val")) == 1
    assert len(load_image_dataset("celeba64", tmp_path, "test")) == 1
    with pytest.raises(ValueError, match="no class labels"):
        make_data(DataConfig(name="celeba64", root=str(tmp_path), conditional=True))


def test_celeba_corrupt_attribute_file(tmp_path):
    base, _, _ = write_celeba(tmp_path)
    (base / "list_attr_celeba.txt").write_text("4\nonly three names\n")
    with pytest.raises(DatasetError, match="cannot parse .*list_attr_celeba.txt"):
        load_image_dataset("celeba64", tmp_path, "train")


# Shipped sets.
def test_digits16_real_data():
    train = load_image_dataset("digits16", "unused", "train")
    test = load_image_dataset("digits16", "unused", "test")
    assert (len(train), len(test)) == (1500, 297) and train.shape == (1, 16, 16)
    assert set(train.labels.tolist()) == set(range(10)) and train.num_classes == 10
    from sklearn.datasets import load_digits
    raw = load_digits().images[0] * 255 / 16
    # Bilinear x2 keeps the mean of the 8x8 image up to border effects.
    assert abs(train.images[0].float().mean() - raw.mean()) < 6
    check_float(train.batch(32, torch.device("cpu"), flip=False)[0], (1, 16, 16))


def test_lfw25_real_data():
    train = load_image_dataset("lfw25", "unused", "train")
    test = load_image_dataset("lfw25", "unused", "test")
    assert (len(train), len(test)) == (160, 40) and test.shape == (1, 16, 16)
    assert train.labels.sum() == 80 and test.labels.sum() == 20 and test.num_classes == 2


# The ImageSet interface.
def small_set(n=4, channels=1):
    images = torch.arange(n * channels * 4 * 4, dtype=torch.uint8).reshape(n, channels, 4, 4)
    return ImageSet(images, torch.arange(n) % 2, 2, "tiny")


def test_batch_flips_only_when_asked_and_follows_global_rng():
    data = small_set()
    torch.manual_seed(0)
    x, _ = data.batch(256, torch.device("cpu"), flip=False)
    originals = data.to_float()
    match = (x[:, None] == originals[None]).flatten(2).all(-1)
    assert match.any(1).all()  # every item is an unflipped dataset image
    torch.manual_seed(1)
    xf, _ = data.batch(256, torch.device("cpu"), flip=True)
    flipped = (xf[:, None] == originals.flip(-1)[None]).flatten(2).all(-1).any(1)
    plain = (xf[:, None] == originals[None]).flatten(2).all(-1).any(1)
    assert (flipped | plain).all() and 60 < flipped.sum() < 196
    torch.manual_seed(1)
    xf2, _ = data.batch(256, torch.device("cpu"), flip=True)
    assert torch.equal(xf, xf2)


def test_batch_labels_match_images():
    data = small_set()
    x, y = data.batch(64, torch.device("cpu"), flip=False)
    idx = ((x + 1) * 127.5).round()[:, 0, 0, 0].long() // 16
    assert torch.equal(y, data.labels[idx])


def test_uint8_dataset_items():
    grey = small_set().uint8_dataset(limit=3)
    assert len(grey) == 3 and grey[1].dtype == torch.uint8 and grey[1].shape == (3, 4, 4)
    assert torch.equal(grey[1][0], grey[1][2])
    rgb = small_set(channels=3).uint8_dataset()
    assert len(rgb) == 4 and rgb[2].shape == (3, 4, 4)


def _set_hash(data: ImageSet) -> str:
    return content_sha256(data.images, data.labels, data.attributes)


def test_content_sha256_tracks_content():
    a, b = small_set(), small_set()
    assert _set_hash(a) == _set_hash(b) and len(_set_hash(a)) == 64
    b.images[2, 0, 1, 1] += 1
    assert _set_hash(a) != _set_hash(b)
    c = small_set()
    c.labels[0] = 1
    assert _set_hash(a) != _set_hash(c)
    # The pixels alone: tensor or numpy, the same key; the shape counts, not just the bytes.
    assert content_sha256(a.images) == content_sha256(a.images.numpy()) != _set_hash(a)
    assert content_sha256(a.images) != content_sha256(a.images.reshape(2, 2, 4, 4))


def test_float_to_uint8_clamps_and_rounds_half_to_even_in_the_input_precision():
    x = np.array([-3.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32).reshape(1, 1, 2, 3)
    want = [0, 0, 128, 255, 255, 255]                      # 0.0 -> 127.5 -> 128 (even)
    assert float_to_uint8(x).ravel().tolist() == want and float_to_uint8(x).dtype == np.uint8
    t = torch.from_numpy(x)
    assert float_to_uint8(t).dtype == torch.uint8 and float_to_uint8(t).ravel().tolist() == want
    # Near every halfway point k + 0.5, numpy's rint of the same float32 arithmetic agrees.
    near = (np.arange(256) + 0.5) / 127.5 - 1
    x32 = np.concatenate([near, np.nextafter(near, 2), np.nextafter(near, -2),
                          RNG.uniform(-1.2, 1.2, 1000)]).astype(np.float32).reshape(-1, 1, 1, 1)
    ref = np.rint((np.clip(x32, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    assert np.array_equal(float_to_uint8(x32), ref)
    assert np.array_equal(float_to_uint8(torch.from_numpy(x32)).numpy(), ref)
    assert np.array_equal(float_to_uint8(x32.transpose(0, 2, 3, 1)),       # any layout
                          float_to_uint8(x32).transpose(0, 2, 3, 1))
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(float_to_uint8(uint8_to_float(u8)), u8)             # the inverse


# Errors and dispatch.
@pytest.mark.parametrize("name, needles", [
    ("cifar10", ["cifar-10-batches-py", "data_batch_1", "test_batch",
                 "c58f30108f718f92721af3b95e74349a", "c99cafc152244af753f735de768cd75f"]),
    ("imagenet32", ["imagenet32", "train_data_batch_1.npz", "val_data.npz", "i64",
                    "imagenet_class_index.json", "ILSVRC2012_val_labels.json"]),
    ("celeba64", ["celeba", "img_align_celeba", "list_attr_celeba.txt",
                  "list_eval_partition.txt", "00d2c5bc6d35e252742224ab0c1e8fcb"]),
])
def test_missing_dataset_message(tmp_path, name, needles):
    with pytest.raises(DatasetError) as err:
        load_image_dataset(name, tmp_path / "data", "train")
    msg = str(err.value)
    assert str(tmp_path / "data") in msg and "How to obtain" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_unknown_names_and_splits(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*") as err:
        load_image_dataset("svhn", tmp_path)
    assert "checkerboard" in str(err.value) and "lfw25" in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset data.name='svhn'"):
        make_data(DataConfig(name="svhn"))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_image_dataset("digits16", tmp_path, "dev")


def test_make_data_dispatch():
    assert isinstance(make_data(DataConfig(name="checkerboard", num_points=100)), ToyData)
    data = make_data(DataConfig(name="digits16", split="test"))
    assert isinstance(data, ImageSet) and len(data) == 297


def test_registry_specs_match_loaded_shapes():
    for name in ("digits16", "lfw25"):
        spec, data = IMAGE_DATASETS[name], load_image_dataset(name, ".", "train")
        assert data.shape == (spec.channels, spec.size, spec.size)
        assert data.num_classes == spec.num_classes
