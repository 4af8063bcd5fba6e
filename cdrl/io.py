"""Atomic file writes: a temporary file in the same folder, flushed, fsynced and renamed over the
final name, so a reader (or a crash) never sees half a file. Every file the package writes for
another step to read goes through here: checkpoints, sample files, metrics, tables, figures and
caches (``atomic_savefig``, ``atomic_savez`` for writers that take a file). The fake datasets
of ``cdrl.data.fake_formats`` are the exception: they imitate other projects' files, and are
made once, before any step runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "atomic_savefig",
           "atomic_savez", "csv_text", "sha256_file"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would, so
        # results on a shared cluster filesystem stay readable by the group as the umask allows.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: Path) -> None:
    import torch  # here, not at the top: `cdrl merge-samples` and the CLI start without it

    _atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_savefig(fig, path: Path, **kwargs) -> None:
    """A matplotlib figure to ``path``, in the format its suffix names (``.png``, ``.pdf``);
    ``kwargs`` go to ``savefig`` (``dpi``, ``bbox_inches``)."""
    path = Path(path)
    _atomic_write(path, lambda fh: fig.savefig(fh, format=path.suffix.lstrip("."), **kwargs))


def atomic_savez(path: Path, **arrays) -> None:
    """``numpy.savez`` of ``arrays`` to ``path`` (a ``.npz``)."""
    import numpy as np

    _atomic_write(path, lambda fh: np.savez(fh, **arrays))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (staged data and weights are checked by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def csv_text(rows, columns: list[str], cell=lambda v: "" if v is None else v) -> str:
    """``rows`` (dicts) as CSV text with a header of ``columns``, each value through ``cell``
    (default: None as an empty cell), ``\n`` line ends; for ``atomic_write_text``."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows({k: cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()
