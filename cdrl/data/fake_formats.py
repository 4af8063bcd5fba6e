"""Tiny stand-ins for the paper's datasets, written byte for byte in their real on-disk formats.

The paper preset reads CIFAR-10, CIFAR-100 (an OOD set), ImageNet 32 and CelebA from a datasets
root. A rehearsal of that preset (``workflow/config/overrides/rehearsal.yaml``, docs/cluster.md)
must exercise the same loaders on the same layouts without the real files, so this writes a few
seeded random images per file in each format ``cdrl.data.images`` reads:

- ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta`` and
  ``cifar-100-python/train``, ``test``, ``meta``: Python 2 pickles (protocol 2, byte strings,
  ``numpy.core`` names) of ``{data: uint8 [N, 3072], labels | fine_labels: [...], ...}``;
- ``imagenet32/train_data_batch_1..10.npz``, ``val_data.npz``: ``data`` uint8 [N, 3072] and
  ``labels`` 1..1000 (plus the train files' ``mean``);
- ``celeba/img_align_celeba/NNNNNN.jpg`` (178x218 JPEGs), ``list_attr_celeba.txt`` (the 40 real
  attribute names, values -1/1) and ``list_eval_partition.txt`` (0 train, 1 val, 2 test).

The md5 sums the loaders know are those of the real files; they are only checked with
``verify=True``, which nothing in the workflow passes. Every class or attribute value the runs
condition on occurs, and every split has images of at least two labels (``-interp`` OOD sets
pair images of different labels). The same arguments give the same bytes.

    python scripts/make_rehearsal_data.py --root <workdir>/resources/datasets
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CELEBA_ATTRIBUTES", "MARKER", "write_all", "write_celeba", "write_cifar10",
           "write_cifar100", "write_imagenet32"]

# Left in the root, so a second call knows the folder holds fake data it may overwrite.
MARKER = "REHEARSAL_FAKE_DATA"
# list_attr_celeba.txt's header, in the real file's order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young").split()


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with every str written as a Python 2 byte string, as the 2009 files are."""

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def _py2_pickle(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 2 pickles name numpy._core; the real files (numpy 1) name numpy.core.
    path.write_bytes(buf.getvalue().replace(b"numpy._core.", b"numpy.core."))


def _labels(rng: np.random.Generator, n: int, high: int) -> np.ndarray:
    """``n`` labels in ``0..high-1`` with at least two distinct values (when n > 1)."""
    labels = rng.integers(0, high, n)
    if n > 1 and (labels == labels[0]).all():
        labels[1] = (labels[0] + 1) % high
    return labels


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_file: int, seed: int = 0) -> None:
    rng = np.random.default_rng([seed, 10])
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = _labels(rng, per_file, 10)
        _py2_pickle({"batch_label": f"{name} (rehearsal)", "labels": labels.tolist(),
                     "data": _rows(rng, per_file),
                     "filenames": [f"fake_{name}_{i}.png" for i in range(per_file)]},
                    folder / name)
    _py2_pickle({"num_cases_per_batch": per_file, "num_vis": 3072,
                 "label_names": [f"class{k}" for k in range(10)]}, folder / "batches.meta")


def write_cifar100(root: Path, per_file: int, seed: int = 0) -> None:
    rng = np.random.default_rng([seed, 100])
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        fine = _labels(rng, per_file, 100)
        _py2_pickle({"filenames": [f"fake_{name}_{i}.png" for i in range(per_file)],
                     "batch_label": f"{name} (rehearsal)", "fine_labels": fine.tolist(),
                     "coarse_labels": (fine // 5).tolist(), "data": _rows(rng, per_file)},
                    folder / name)
    _py2_pickle({"fine_label_names": [f"fine{k}" for k in range(100)],
                 "coarse_label_names": [f"coarse{k}" for k in range(20)]}, folder / "meta")


def write_imagenet32(root: Path, per_file: int, seed: int = 0) -> None:
    rng = np.random.default_rng([seed, 32])
    folder = root / "imagenet32"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 11):
        data = _rows(rng, per_file)
        np.savez(folder / f"train_data_batch_{i}.npz", data=data,
                 labels=(_labels(rng, per_file, 1000) + 1).tolist(), mean=data.mean(0))
    np.savez(folder / "val_data.npz", data=_rows(rng, per_file),
             labels=(_labels(rng, per_file, 1000) + 1).tolist())


def write_celeba(root: Path, per_split: int, seed: int = 0) -> None:
    rng = np.random.default_rng([seed, 64])
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    n = 3 * per_split
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "img_align_celeba" / name, quality=95)
    # Both values of every attribute in every split (conditioning and composition need them).
    values = rng.choice([-1, 1], (n, len(CELEBA_ATTRIBUTES)))
    values[0::per_split], values[1::per_split] = 1, -1
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row)
              for name, row in zip(names, values, strict=True)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{name} {i // per_split}\n" for i, name in enumerate(names)))


def write_all(root: str | Path, per_file: int = 8, seed: int = 0) -> Path:
    """Every dataset of the paper preset under ``root``: ``per_file`` images per CIFAR pickle and
    ImageNet npz (CIFAR-10 train 5x, ImageNet 32 train 10x that), ``per_file`` CelebA images per
    split. Refuses a non-empty root it did not write, so real data is never overwritten."""
    root = Path(root)
    if per_file < 2:
        raise ValueError(f"per_file must be at least 2 (two labels per split), got {per_file}")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise FileExistsError(f"{root} holds files this did not write (real datasets?); pick an "
                              "empty folder")
    root.mkdir(parents=True, exist_ok=True)
    write_cifar10(root, per_file, seed)
    write_cifar100(root, per_file, seed)
    write_imagenet32(root, per_file, seed)
    write_celeba(root, per_file, seed)
    (root / MARKER).write_text(f"fake datasets for rehearsals: per_file={per_file} seed={seed}\n"
                               "written by cdrl.data.fake_formats; not for numbers\n")
    return root
