"""Correctness on CUDA (docs/gpu.md): every check that touches a device, run on ``cuda`` and ``cpu``.

    .venv/bin/pytest tests/test_cuda.py            # no GPU: the cpu cases; cuda cases skip
    python -m pytest -m cuda tests/test_cuda.py    # a GPU machine (scripts/gpu_check.py runs this)

Each ``cuda`` case is marked ``cuda`` and skips, with the reason, where
``torch.cuda.is_available()`` is False. On ``cuda`` the networks are the paper's (cdrl_cifar10,
drl_cifar10, cond_imagenet32: 34.83 M and 35.35 M-parameter EBMs, random weights with converged
spectral norm, as ``cdrl bench`` uses); on ``cpu`` the same configs shrunk (``TINY``), so the logic
is tested on every machine. References are computed on the CPU (in float64 where the network
allows it) and every test runs with TF32 off, so a tolerance bounds the device's float32
arithmetic, not TF32's. Measured differences go into the JUnit XML as properties
(``record_property``), which ``scripts/gpu_check.py`` copies into its results.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

# Deterministic cuBLAS needs this before the first CUDA call of the process (resume check).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cdrl.core.config import config_from_dict  # noqa: E402
from cdrl.core.guidance import Guide  # noqa: E402
from cdrl.core.nets.layers import frozen_spectral_norm  # noqa: E402
from cdrl.core.sampler import PerImageNoise, ebm_grad_fn, energy_grad_fn  # noqa: E402
from cdrl.measure.bench import build_for_bench  # noqa: E402
from cdrl.train.registry import build_method  # noqa: E402
from cdrl.train.trainer import load_run, train  # noqa: E402
from tests.conftest import (  # noqa: E402
    ROOT,
    checkpoint_state,
    staged_inception,
    state_differences,
    state_leaves,
)

EXP = ROOT / "workflow/config/experiments"
HAS_CUDA = torch.cuda.is_available()
NO_CUDA = ("CUDA is not available (torch.cuda.is_available() is False); these checks run on a GPU "
           "machine: python scripts/gpu_check.py --out DIR (docs/gpu.md)")
# The paper configs shrunk for the CPU cases (the same overrides as gpu_check.py --quick).
TINY = ["ebm.width=8", "ebm.ch_mult=[1, 2]", "ebm.blocks_per_level=1", "ebm.temb_dim=32",
        "ebm.emb_in_dim=16", "initializer.width=8", "initializer.num_blocks=1",
        "initializer.dim_mults=[1, 1]", "initializer.attn_resolutions=[16]",
        "initializer.temb_dim=32", "initializer.emb_in_dim=16", "initializer.groups=4"]
REL_TOL = 1e-4        # device float32 (TF32 off) against the CPU reference
FID_REL_TOL = 1e-3    # docs/gpu.md: FID on the GPU within 0.1 % of the CPU's on the same images


def on_devices(*devices: str):
    """Parametrize ``device``; the ``cuda`` case is marked ``cuda`` and skips without a GPU."""
    params = []
    for d in devices or ("cpu", "cuda"):
        marks = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)]
        params.append(pytest.param(d, marks=marks if d == "cuda" else [], id=d))
    return pytest.mark.parametrize("device", params)


@contextmanager
def tf32_off():
    """Full float32 matmuls and convolutions, the previous flags restored after. (Written here,
    not imported from cdrl.eval, so that these checks need no torch-fidelity.)"""
    mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    prev = mm.allow_tf32, cudnn.allow_tf32
    mm.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        mm.allow_tf32, cudnn.allow_tf32 = prev


@pytest.fixture(autouse=True)
def strict_fp32(request):
    """Full float32 matmuls and convolutions (torch's default lets cuDNN use TF32). The CPU
    cases' networks are tiny: one thread (more only add OpenMP overhead on a shared machine)."""
    params = getattr(request.node, "callspec", None)
    threads = torch.get_num_threads()
    if params is not None and params.params.get("device") == "cpu":
        torch.set_num_threads(1)
    try:
        with tf32_off():
            yield
    finally:
        torch.set_num_threads(threads)


def build(name: str, device: str, extra: list[str] = ()):
    """``(cfg, method)`` of an experiment config: paper size on cuda, ``TINY`` on the CPU."""
    overrides = ([] if device == "cuda" else TINY) + list(extra)
    cfg, method, _ = build_for_bench(str(EXP / f"{name}.yaml"), None, overrides, device)
    return cfg, method


def cpu_copy(cfg, method):
    """The same method (weights, spectral-norm vectors, EMAs) rebuilt on the CPU."""
    twin = build_method(cfg, method.data_shape, torch.device("cpu"))
    twin.load_state_dict(method.state_dict())
    return twin


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 on the CPU."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def as64(cond) -> tuple[torch.Tensor, ...]:
    return tuple(c.detach().cpu().double() for c in cond)


def grad64(ebm64, y: torch.Tensor, conds, weights=(1.0,)) -> torch.Tensor:
    """``grad_y sum_j w_j F(y, cond_j)`` of a float64 CPU network."""
    def energy(v):
        return sum(w * ebm64.energy(v, c) for w, c in zip(weights, conds, strict=True))
    with frozen_spectral_norm(ebm64):
        return energy_grad_fn(energy)(y.detach().cpu().double())


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- networks
@on_devices()
@pytest.mark.parametrize("name", ["cdrl_cifar10", "drl_cifar10"])
def test_energy_and_langevin_gradient_match_a_float64_cpu_reference(device, name,
                                                                     record_property):
    cfg, m = build(name, device)
    ebm = m.ebm_ema.model.eval()
    ebm64 = copy.deepcopy(cpu_copy(cfg, m).ebm_ema.model).double().eval()
    k = torch.arange(4) % m.T
    y = torch.randn(4, *m.data_shape, generator=gen(0))
    cond = m.level_condition(ebm, k.to(m.device))
    with frozen_spectral_norm(ebm):
        f = ebm.energy(y.to(m.device), cond)
        g = ebm_grad_fn(ebm, cond)(y.to(m.device))
    with frozen_spectral_norm(ebm64), torch.no_grad():
        f64 = ebm64.energy(y.double(), as64(cond))
    g64 = grad64(ebm64, y, [as64(cond)])
    errs = {"energy_rel_err": rel_err(f, f64), "grad_rel_err": rel_err(g, g64)}
    for key, val in errs.items():
        record_property(key, val)
    assert g64.abs().max() > 0 and torch.isfinite(f).all()
    assert max(errs.values()) < REL_TOL, errs


@on_devices()
@pytest.mark.parametrize("name", ["cdrl_cifar10", "drl_cifar10"])
def test_training_iteration_at_the_papers_batch_per_gpu(device, name, record_property):
    """One iteration at 32 images (8 GPUs x 32 in the official launch); warm-up off, so the
    first Adam step moves the weights."""
    cfg, m = build(name, device, ["train.ebm_optim.warmup_iters=0",
                                  "train.init_optim.warmup_iters=0"])
    batch = 32 if device == "cuda" else 2
    x = torch.rand(batch, *m.data_shape, generator=gen(1)).to(m.device) * 2 - 1
    before = [p.detach().clone() for p in m.ebm.parameters()]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stats = m.train_step(x)
    for key in ("loss_ebm", "grad_norm_ebm") + (("loss_init",) if m.initializer else ()):
        assert torch.isfinite(stats[key]), (key, stats[key])
    assert float(stats["grad_norm_ebm"]) > 0
    moved = sum(not torch.equal(a, p) for a, p in zip(before, m.ebm.parameters(), strict=True))
    # DRL's zero-initialised conv2 blocks the gradient to the rest of its block at first.
    assert moved >= (0.9 if name.startswith("cdrl") else 0.25) * len(before), (moved, len(before))
    assert all(torch.isfinite(p).all() for p in m.ebm.parameters())
    assert m.ebm_ema.num_updates == 1 and len(m.opt_ebm.state) > 0
    record_property("loss_ebm", float(stats["loss_ebm"]))
    if device == "cuda":
        record_property("peak_memory_gib", torch.cuda.max_memory_allocated() / 2**30)


# ----------------------------------------------------------------------------- sampling
@on_devices()
@pytest.mark.parametrize("name", ["cdrl_cifar10", "drl_cifar10"])
def test_per_image_seeds_give_the_same_images_whatever_the_batch(device, name, record_property):
    """Images 0..5 drawn in batches of 6, 2 + 4 and 1 x 6. Each image's noise is its own stream
    (bit for bit on the device too); what batching can change is only the rounding of the
    network's kernels, which the chain then carries along."""
    cfg, m = build(name, device)
    shape = (6, *m.data_shape)
    streams = PerImageNoise(11, range(6), m.device).randn(shape)
    assert torch.equal(streams[2:], PerImageNoise(11, range(2, 6), m.device).randn((4, *shape[1:])))
    chain_grad = ebm_grad_fn(m.ebm_ema.model, m.level_condition(m.ebm_ema.model,
                                                             torch.arange(6, device=m.device)))
    with frozen_spectral_norm(m.ebm_ema.model):
        together = chain_grad(streams)
        alone = torch.cat([ebm_grad_fn(m.ebm_ema.model, m.level_condition(
            m.ebm_ema.model, torch.tensor([i], device=m.device)))(streams[i:i + 1])
            for i in range(6)])
    grad_rel = rel_err(alone, together)

    def draw(batches, seed=11):
        out, lo = [], 0
        for b in batches:
            noise = PerImageNoise(seed, range(lo, lo + b), m.device)
            out.append(m.sample(b, generator=noise).cpu())
            lo += b
        return torch.cat(out)

    whole, split, ones = draw([6]), draw([2, 4]), draw([1] * 6)
    assert torch.isfinite(whole).all()
    rel = max(rel_err(other, whole) for other in (split, ones))
    u8 = [((x.clamp(-1, 1) + 1) * 127.5).round() for x in (whole, split, ones)]
    pixels = max(float((u8[0] != other).float().mean()) for other in u8[1:])
    for key, val in (("grad_rel_diff", grad_rel), ("image_rel_diff", rel),
                     ("uint8_pixels_differing", pixels),
                     ("uint8_max_diff", max(float((u8[0] - o).abs().max()) for o in u8[1:]))):
        record_property(key, val)
    if device == "cpu":
        assert torch.equal(split, whole)  # bit for bit; a batch of 1 takes other CPU kernels
    # One gradient: rounding only. After 91-181 steps through a random-weight EBM that rounding
    # is amplified (2e-5 seen on the CPU); a misaligned noise stream would differ at O(1).
    assert grad_rel < REL_TOL and rel < 1e-2, (grad_rel, rel)
    assert not torch.equal(draw([6], seed=12), whole)
    assert len({tuple(img.flatten()[:64].tolist()) for img in whole}) == 6


@on_devices()
def test_tweedie_step_matches_the_formula_on_a_float64_cpu_copy(device, record_property):
    """Spec 5.1: ``x0 + sigma_bar_0^2 sqrt(m_1) grad F(sqrt(m_1) x0) / (b2' c_1 beta_1)``,
    divided by ``sqrt(alpha_bar_0)``."""
    cfg, m = build("cdrl_cifar10", device)
    ebm = m.ebm_ema.model.eval()
    twin = cpu_copy(cfg, m)
    ebm64 = copy.deepcopy(twin.ebm_ema.model).double().eval()
    x0 = 0.5 * torch.randn(4, *m.data_shape, generator=gen(2))
    got = m.tweedie(ebm, x0.to(m.device)).cpu()
    k0 = torch.zeros(4, dtype=torch.long)
    cond = as64(twin.level_condition(twin.ebm_ema.model, k0))
    s = m.schedule
    sqrt_m = float(s.m[0].sqrt())
    scale = float(s.sigma_bar[0] ** 2 / (cfg.sample.tweedie_b2 * s.c[0] * s.beta[0]))
    shift = scale * sqrt_m * grad64(ebm64, sqrt_m * x0.double(), [cond])
    want = (x0.double() + shift) / float(s.alpha_bar[0].sqrt())
    moved = got.double() * float(s.alpha_bar[0].sqrt()) - x0.double()
    err = rel_err(moved, shift)
    record_property("displacement_rel_err", err)
    assert shift.abs().max() > 0 and err < REL_TOL, err
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@on_devices()
def test_class_conditional_guidance_matches_the_hand_computation(device, record_property):
    """Spec 6.1 on the device: proposal mean ``(1+w) G(c) - w G(null)``, one noiseless Langevin
    step and the Tweedie step on ``(1+w) F(c) - w F(null)``, against CPU references."""
    cfg, m = build("cond_imagenet32", device, ["initializer.proposal_noise=false"])
    with torch.no_grad():  # a fresh U-Net returns its input: perturb it so the labels matter
        for p in m.initializer.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(3)).to(p))
    m.initializer.eval()
    ebm = m.ebm.eval()
    twin = cpu_copy(cfg, m)
    twin.initializer.eval()
    twin.ebm.eval()  # train-mode spectral norm would run a power iteration in every call
    ebm64 = copy.deepcopy(twin.ebm).double().eval()
    n, w = 4, 0.7
    k = torch.tensor([0, 2, 4, 5])
    c = torch.tensor([1, 10, 500, 1000])
    null = torch.zeros_like(c)
    guide, dev = Guide.cfg(c, w), m.device
    x = torch.randn(n, *m.data_shape, generator=gen(4))
    y0 = x + 0.1 * torch.randn(n, *m.data_shape, generator=gen(5))
    errs = {}
    with torch.no_grad():
        t = twin.init_t_level[k + 1]
        want = (1 + w) * twin.initializer(x, t, c) - w * twin.initializer(x, t, null)
        got = m.propose(m.initializer, x.to(dev), k.to(dev), guide=guide.to(dev))
    errs["proposal_mean_rel_err"] = rel_err(got, want)
    conds = [as64(twin.level_condition(twin.ebm, k, lab)) for lab in (c, null)]
    g64 = grad64(ebm64, y0, conds, (1 + w, -w))
    step = m.refine(ebm, y0.to(dev), x.to(dev), k.to(dev), 1, noise_scale=0.0,
                    guide=guide.to(dev)).cpu()
    pull = twin.per_sample("pull", k).double()
    errs["langevin_step_rel_err"] = rel_err(step.double() - y0.double(),
                                            0.5 * g64 - pull * (y0.double() - x.double()))
    k0 = torch.zeros(n, dtype=torch.long)
    s = m.schedule
    sqrt_m = float(s.m[0].sqrt())
    scale = float(s.sigma_bar[0] ** 2 / (cfg.sample.tweedie_b2 * s.c[0] * s.beta[0]))
    conds0 = [as64(twin.level_condition(twin.ebm, k0, lab)) for lab in (c, null)]
    shift = scale * sqrt_m * grad64(ebm64, sqrt_m * x.double(), conds0, (1 + w, -w))
    got_x = m.tweedie(ebm, x.to(dev), guide.to(dev)).cpu().double()
    errs["tweedie_rel_err"] = rel_err(got_x * float(s.alpha_bar[0].sqrt()) - x.double(), shift)
    for key, val in errs.items():
        record_property(key, val)
    assert max(errs.values()) < REL_TOL, errs
    noise = [PerImageNoise(5, range(n), dev) for _ in range(2)]
    guided = m.sample(n, steps=2, generator=noise[0], guide=guide.to(dev))
    plain = m.sample(n, steps=2, generator=noise[1], guide=Guide.cfg(c, 0.0).to(dev))
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-6


# ----------------------------------------------------------------------------- checkpoints
@contextmanager
def deterministic(device: str):
    """Deterministic kernels where CUDA has them (warnings, not errors, where it has not)."""
    if device != "cuda":
        yield
        return
    prev = (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


def checkpoint_difference(dir_a: Path, dir_b: Path) -> tuple[bool, float]:
    """(bit for bit?, largest relative difference of a float tensor) between the newest
    checkpoints of two runs; integer tensors (RNG states) and other values must be equal."""
    a, b = checkpoint_state(dir_a), checkpoint_state(dir_b)
    leaves_a, leaves_b = state_leaves(a), state_leaves(b)
    assert leaves_a.keys() == leaves_b.keys() and len(leaves_a) > 50
    worst = 0.0
    differences = state_differences(a, b)
    for key in differences:
        va, vb = leaves_a.get(key), leaves_b.get(key)
        assert isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor), key
        assert va.is_floating_point() and va.shape == vb.shape, f"{key}: integer state differs"
        worst = max(worst, rel_err(va, vb))
    return not differences, worst


@on_devices()
def test_checkpoint_written_on_the_device_resumes_and_loads_on_the_cpu(
        device, tmp_path, tiny_config_dict, record_property):
    cfg = config_from_dict(tiny_config_dict(device=device))
    with deterministic(device):
        train(cfg, tmp_path / "straight", progress=False)
        train(cfg, tmp_path / "resumed", max_iters=4, progress=False)
        train(cfg, tmp_path / "resumed", progress=False)
    exact, worst = checkpoint_difference(tmp_path / "straight", tmp_path / "resumed")
    record_property("bit_exact", exact)
    record_property("max_rel_diff", worst)
    if device == "cpu":
        assert exact
    else:  # a wrong RNG state or step would differ at O(1), not at rounding level
        assert worst < 1e-5, worst
    _, method, state = load_run(tmp_path / "straight", "cpu")
    assert state["iteration"] == 8 and method.device.type == "cpu"
    assert torch.isfinite(method.sample(16, generator=gen(6))).all()


# ----------------------------------------------------------------------------- FID
def _blocky_images(n: int, cells: int, seed: int) -> np.ndarray:
    """uint8 NHWC 32x32 images: random colour blocks of ``32 / cells`` pixels plus noise."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, cells, cells, 3))
    img = np.kron(low, np.ones((1, 32 // cells, 32 // cells, 1), dtype=np.int64))
    return np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)


def cli_evaluate(samples: Path, reference: Path, weights: Path, work: Path, on_cpu: bool) -> dict:
    """``cdrl evaluate`` (Inception FID) in a fresh process; ``on_cpu`` hides every GPU."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    if on_cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if os.cpu_count() <= 4:  # a small shared machine: one thread, no OpenMP contention
        env["OMP_NUM_THREADS"] = "1"
    out = work / "metrics.json"
    cmd = [sys.executable, "-m", "cdrl", "evaluate", "--samples", str(samples), "--reference",
           str(reference), "--metrics", "fid", "--extractor", "inception", "--weights",
           str(weights), "--cache-root", str(work / "cache"), "--out", str(out),
           "--batch-size", "100"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def fid_relative_difference(fid: float, reference_fid: float) -> float:
    return abs(fid - reference_fid) / abs(reference_fid)


@pytest.mark.slow
@on_devices()
def test_evaluate_inception_fid_on_the_device_matches_the_cpu(device, tmp_path,
                                                              record_property):
    """The same images through ``cdrl evaluate`` on the device and on the CPU (separate caches):
    FID within 0.1 %. The cpu case compares two CPU runs, which tests the comparison."""
    pytest.importorskip("torch_fidelity")
    weights = staged_inception()
    if weights is None:
        pytest.skip("Inception FID weights not staged: make stage (python scripts/"
                    "stage_inception.py --dest resources/weights) or set CDRL_INCEPTION_WEIGHTS")
    n = 500 if device == "cuda" else 10
    samples, reference = tmp_path / "samples.npz", tmp_path / "reference.npz"
    np.savez(samples, x=_blocky_images(n, 4, seed=0))
    np.savez(reference, x=_blocky_images(n, 8, seed=1))
    runs = {}
    for name, on_cpu in (("device", device == "cpu"), ("cpu", True)):
        (tmp_path / name).mkdir()
        runs[name] = cli_evaluate(samples, reference, weights, tmp_path / name, on_cpu)
    assert runs["cpu"]["provenance"]["device"] == "cpu"
    if device == "cuda":
        assert runs["device"]["provenance"]["device"] == torch.cuda.get_device_name()
    fids = {name: r["fid"] for name, r in runs.items()}
    diff = fid_relative_difference(fids["device"], fids["cpu"])
    record_property("fid_device", fids["device"])
    record_property("fid_cpu", fids["cpu"])
    record_property("fid_rel_diff", diff)
    assert fids["cpu"] > 1.0 and diff <= FID_REL_TOL, fids
    assert fid_relative_difference(fids["cpu"] * (1 + 2 * FID_REL_TOL), fids["cpu"]) > FID_REL_TOL
