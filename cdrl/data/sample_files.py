"""The sample file that ``cdrl sample`` writes and every later step reads: an ``.npz`` with the
images ``x`` (data coordinates, float32), ``x_uint8`` (NHWC, for images), ``index`` (each image's
number), ``labels`` (conditional runs), ``levels`` (2-D data: the chain at every level) and
``meta`` (the settings as JSON), or a folder of ``<index>.png`` images with ``meta-<start>.json``.
Shards of one sample (``--start``/``--count``) merge into the file one job would write."""

from __future__ import annotations

import io
import json
from pathlib import Path

from cdrl.io import atomic_savez, atomic_write_bytes, atomic_write_text

__all__ = ["write_samples", "merge_samples", "ShardError"]


def write_samples(out: Path, x, levels, meta: dict) -> None:
    """``.npz`` (any data; 2-D data keeps every level) or a folder of ``<index>.png`` images."""
    import numpy as np

    from cdrl.data.images import float_to_uint8

    if out.suffix == ".npz":
        # len(x), not meta["count"]: a diverged run's file has zero images
        # (``cdrl.tasks.generate``).
        arrays = {"x": x.numpy().astype(np.float32), "meta": np.array(json.dumps(meta)),
                  "index": np.arange(meta["start"], meta["start"] + len(x))}
        if "labels" in meta:  # conditional runs: condition index per image (-1: null)
            arrays["labels"] = np.array(meta["labels"], dtype=np.int64)
        if x.dim() == 2:  # vector data: keep every level for the toy figure (small)
            arrays["levels"] = levels.numpy().astype(np.float32)
        else:
            arrays["x_uint8"] = float_to_uint8(x).permute(0, 2, 3, 1).contiguous().numpy()
        atomic_savez(out, **arrays)
        return
    if x.dim() != 4:
        raise SystemExit(f"--out {str(out)!r}: vector samples need an .npz output")
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    nhwc = float_to_uint8(x).permute(0, 2, 3, 1).contiguous().numpy()
    for i, img in zip(range(meta["start"], meta["start"] + len(x)), nhwc, strict=True):
        png = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(png, format="PNG")
        atomic_write_bytes(out / f"{i:06d}.png", png.getvalue())
    atomic_write_text(out / f"meta-{meta['start']:06d}.json", json.dumps(meta, indent=1))


# Per-shard facts a merged file sums or lists; every other metadata key must agree across shards.
_SHARD_OWN = ("start", "count", "seconds", "seconds_per_image", "labels", "device", "threads")


class ShardError(ValueError):
    """Shards that do not make one sample file: a gap, an overlap or a different setting."""


def merge_samples(shards, out: Path) -> dict:
    """Concatenate ``.npz`` shards written by ``cdrl sample --start S --count N`` into the one
    file ``cdrl sample`` would write for all their images (the workflow's ``sample_shard_size``).

    The shards must follow each other without gap or overlap and share every setting (run,
    checkpoint iteration, seed, steps, ...). Image ``i`` depends only on ``(seed, i)``, so the
    merged images are those of one unsharded job (bit for bit when each shard's size is a
    multiple of the batch size, as then the batches are the same too). The merged ``meta`` has
    ``start``/``count`` of the whole, ``seconds`` summed over shards (device-seconds), and a
    ``shards`` list of each shard's ``start``, ``count``, ``seconds`` and ``device``.
    Returns the merged metadata."""
    import numpy as np

    if not shards:
        raise ShardError("no shards to merge")
    parts, metas = [], []
    for path in shards:
        with np.load(path, allow_pickle=False) as f:
            parts.append({k: f[k] for k in f.files})
        metas.append(json.loads(str(parts[-1].pop("meta"))))
    first = metas[0]
    same = {k: v for k, v in first.items() if k not in _SHARD_OWN}
    expected = first["start"]
    for path, meta, arrays in zip(shards, metas, parts, strict=True):
        if meta["start"] != expected:
            raise ShardError(f"{path}: starts at image {meta['start']}, expected {expected} "
                             "(shards must be given in order, without gap or overlap)")
        expected += meta["count"]
        if diff := sorted(k for k in set(same) | set(meta)
                          if k not in _SHARD_OWN and meta.get(k) != same.get(k)):
            raise ShardError(f"{path}: {', '.join(diff)} differ from {shards[0]}'s: these shards "
                             "are not of one sample")
        if sorted(arrays) != sorted(parts[0]):
            raise ShardError(f"{path}: arrays {sorted(arrays)}, expected {sorted(parts[0])}")
    count = expected - first["start"]
    seconds = sum(m["seconds"] for m in metas)
    meta = {**first, "count": count, "seconds": seconds,
            "seconds_per_image": seconds / max(count, 1),
            "shards": [{k: m[k] for k in ("start", "count", "seconds", "device")}
                       for m in metas]}
    if "labels" in first:
        meta["labels"] = [label for m in metas for label in m["labels"]]
    arrays = {"meta": np.array(json.dumps(meta))}
    for key in parts[0]:
        axis = 1 if key == "levels" else 0  # levels: [T+1, N, ...]
        arrays[key] = np.concatenate([a[key] for a in parts], axis=axis)
    atomic_savez(Path(out), **arrays)
    return meta
