"""Downstream uses (spec 6): classifier-free guidance, composition, inpainting, OOD sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cdrl.cli import main as cli_main
from cdrl.core.config import config_from_dict
from cdrl.core.guidance import Guide, sample_labels
from cdrl.core.method import CDRL
from cdrl.core.nets.layers import frozen_spectral_norm, power_iteration_
from cdrl.core.sampler import energy_grad_fn
from cdrl.eval.class_accuracy import class_accuracy
from cdrl.tasks.ood import auroc
from cdrl.train.trainer import load_run, train
from tests.conftest import ROOT, TINY_COND_DIGITS, assert_same_checkpoint, merge


def _perturbed_method(cfg_dict: dict, data_shape) -> CDRL:
    """A conditional method whose networks are not at their (input-returning) initialisation."""
    torch.manual_seed(0)
    method = CDRL(config_from_dict(cfg_dict), data_shape, torch.device("cpu"))
    with torch.no_grad():
        for p in method.initializer.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for _ in range(5):
            power_iteration_(method.ebm)
    method.ebm.eval()
    method.initializer.eval()
    return method


# ----------------------------------------------------------------------------- 1. CFG
@pytest.mark.parametrize("kind", ["image", "toy"])
def test_guided_mean_energy_and_tweedie_match_the_hand_computation(kind, tiny_config_dict):
    """Spec 6.1: mean (1+w)G(c) - wG(null); Langevin and Tweedie on (1+w)F(c) - wF(null)."""
    if kind == "image":
        cfg, shape = merge(TINY_COND_DIGITS, {"initializer": {"proposal_noise": False}}), (1, 16, 16)
    else:
        cfg = tiny_config_dict(data={"name": "quadrants", "conditional": True,
                                     "condition_attributes": ["right", "upper"]},
                               initializer={"proposal_noise": False, "dropout": 0.0})
        shape = (2,)
    m, w, n = _perturbed_method(cfg, shape), 1.7, 6
    assert m.ebm.num_classes == m.num_classes == (11 if kind == "image" else 5)
    x = torch.randn(n, *shape)
    k = torch.tensor([0, 1, 2, 3, 4, 5])
    c = torch.tensor([1, 2, 3, 4, 1, 2])
    null = torch.zeros_like(c)
    guide = Guide.cfg(c, w)
    t = m.init_t_level[k + 1]
    with torch.no_grad():
        want = (1 + w) * m.initializer(x, t, c) - w * m.initializer(x, t, null)
        assert (m.initializer(x, t, c) - m.initializer(x, t, null)).abs().max() > 1e-4
        torch.testing.assert_close(m.propose(m.initializer, x, k, guide=guide), want)
    # One noiseless Langevin step from y0 equals y0 + 0.5 grad F_w - pull (y0 - x).
    y0 = torch.randn(n, *shape)
    with frozen_spectral_norm(m.ebm):
        def f_w(y):
            cond_c = m.ebm.condition(m.t_level[k], c)
            cond_0 = m.ebm.condition(m.t_level[k], null)
            return (1 + w) * m.ebm.energy(y, cond_c) - w * m.ebm.energy(y, cond_0)
        g = energy_grad_fn(f_w)(y0)
    assert g.abs().max() > 1e-3
    step = y0 + 0.5 * g - m.per_sample("pull", k) * (y0 - x)
    got = m.refine(m.ebm, y0, x, k, 1, noise_scale=0.0, guide=guide)
    torch.testing.assert_close(got, step, rtol=1e-4, atol=1e-5)
    # Tweedie with the guided energy.
    k0 = torch.zeros(n, dtype=torch.long)
    sqrt_m = m.per_sample("sqrt_m", k0)
    with frozen_spectral_norm(m.ebm):
        def f0(y):
            return ((1 + w) * m.ebm.energy(y, m.ebm.condition(m.t_level[k0], c))
                    - w * m.ebm.energy(y, m.ebm.condition(m.t_level[k0], null)))
        gy = energy_grad_fn(f0)(sqrt_m * x)
    s = m.schedule
    scale = float(s.sigma_bar[0] ** 2 / (m.cfg.sample.tweedie_b2 * s.c[0] * s.beta[0]))
    want_x = (x + scale * sqrt_m * gy) / float(s.alpha_bar[0].sqrt())
    torch.testing.assert_close(m.tweedie(m.ebm, x, guide), want_x, rtol=1e-4, atol=1e-5)
    # w = 0 is the plain conditional model; composition weights sum to one.
    assert Guide.cfg(c, 0.0).labels.shape == (1, n)
    comp = Guide.compose([c, c + 1], 3.0)
    assert comp.weights == (1 - 8.0, 4.0, 4.0) and sum(comp.weights) == 1.0


def test_null_label_dropping_rate_and_shared_label(tmp_path, monkeypatch):
    seen = {}
    original_propose, original_refine = CDRL.propose, CDRL.refine

    def propose(self, init, x_i, k, generator=None, guide=None):
        seen.setdefault("propose", []).append(guide.labels.clone())
        return original_propose(self, init, x_i, k, generator, guide)

    def refine(self, ebm, y0, x_i, k, n_steps, noise_scale=1.0, generator=None, guide=None):
        seen.setdefault("refine", []).append(guide.labels.clone())
        return original_refine(self, ebm, y0, x_i, k, n_steps, noise_scale, generator, guide)

    monkeypatch.setattr(CDRL, "propose", propose)
    monkeypatch.setattr(CDRL, "refine", refine)
    cfg = config_from_dict(merge(TINY_COND_DIGITS, {"train": {
        "iterations": 25, "batch_size": 64, "langevin_steps": 0, "log_every": 25,
        "ckpt_every": 25}}))
    train(cfg, tmp_path, progress=False)
    labels = torch.cat(seen["propose"], dim=1)
    assert torch.equal(labels, torch.cat(seen["refine"], dim=1))  # EBM and G share labels
    null = (labels == 0).float().mean().item()
    assert 0.07 < null < 0.13, null  # 1,600 draws of p = 0.1: sd 0.0075
    assert set(labels[labels > 0].tolist()) == set(range(1, 11))
    stats = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])
    assert stats["null_frac"] == pytest.approx(null, abs=1e-6)


def test_conditional_resume_is_bit_exact_and_labels_are_per_image(
        tmp_path, write_config):
    cfg = config_from_dict(TINY_COND_DIGITS)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", max_iters=2, progress=False)
    train(cfg, tmp_path / "resumed", progress=False)
    assert_same_checkpoint(tmp_path / "straight", tmp_path / "resumed")
    run = tmp_path / "straight"
    whole, shard = tmp_path / "whole.npz", tmp_path / "shard.npz"
    assert cli_main(["sample", "--run-dir", str(run), "--num", "6", "--out", str(whole),
                     "--seed", "3", "--guidance", "2.0", "--labels", "uniform"]) == 0
    assert cli_main(["sample", "--run-dir", str(run), "--start", "3", "--count", "3", "--out",
                     str(shard), "--seed", "3", "--guidance", "2.0", "--batch-size", "2"]) == 0
    a, b = np.load(whole), np.load(shard)
    np.testing.assert_array_equal(a["labels"][3:], b["labels"])
    np.testing.assert_allclose(a["x"][3:], b["x"], atol=1e-5)
    assert a["labels"].min() >= 0 and a["labels"].max() <= 9
    assert json.loads(str(a["meta"]))["guidance"] == 2.0
    data_cfg = cfg.data
    assert torch.equal(sample_labels("uniform", 3, range(6), data_cfg) - 1,
                       torch.from_numpy(a["labels"]))
    assert sample_labels("7", 0, range(3), data_cfg).tolist() == [8, 8, 8]
    # Guidance changes the samples; a fixed class is recorded as such.
    assert cli_main(["sample", "--run-dir", str(run), "--num", "6", "--out",
                     str(tmp_path / "w0.npz"), "--seed", "3", "--guidance", "0"]) == 0
    assert np.abs(np.load(tmp_path / "w0.npz")["x"] - a["x"]).max() > 1e-4
    assert cli_main(["sample", "--run-dir", str(run), "--num", "2", "--out",
                     str(tmp_path / "c7.npz"), "--labels", "7"]) == 0
    assert np.load(tmp_path / "c7.npz")["labels"].tolist() == [7, 7]
    _, method, _ = load_run(run)
    assert method.num_classes == 11


def test_unconditional_runs_refuse_guidance_flags(tmp_path, tiny_config_dict, capsys):
    train(config_from_dict(tiny_config_dict()), tmp_path, progress=False)
    assert cli_main(["sample", "--run-dir", str(tmp_path), "--num", "2", "--out",
                     str(tmp_path / "s.npz"), "--guidance", "1.0"]) == 2
    assert "conditional" in capsys.readouterr().err


def test_class_accuracy_of_real_digits(tmp_path):
    from cdrl.data.images import load_image_dataset

    test = load_image_dataset("digits16", ".", "test")
    x = test.images.permute(0, 2, 3, 1).numpy()
    y = test.labels.numpy()
    good = class_accuracy(x, y)
    assert good["class_accuracy"] > 0.9 and good["num"] == len(y)
    wrong = class_accuracy(x, (y + 1) % 10)
    assert wrong["class_accuracy"] < 0.1
    np.savez(tmp_path / "s.npz", x_uint8=x, labels=np.where(np.arange(len(y)) < 5, -1, y))
    assert cli_main(["class-accuracy", "--samples", str(tmp_path / "s.npz"), "--out",
                     str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["num"] == len(y) - 5


# ----------------------------------------------------------------------------- 4. OOD
TINY_DIGITS = merge(TINY_COND_DIGITS, {"data": {"conditional": False}})


def _write_cifar100(root, rows=4):
    import pickle

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        batch = {b"data": data, b"fine_labels": list(range(rows)), b"coarse_labels": [0] * rows,
                 b"filenames": [b"x.png"] * rows, b"batch_label": split.encode()}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    return data


def test_named_ood_sets_have_the_in_distribution_shape(tmp_path):
    from cdrl.data.images import load_image_dataset
    from cdrl.tasks.ood import load_named_set

    shape = (1, 16, 16)
    digits = load_named_set("digits16:test", shape)
    assert digits.shape == (297, *shape)
    expected = {"lfw16": 200, "digits-interp": 297, "noise": 50, "photos": 50}
    for name, n in expected.items():
        x = load_named_set(name, shape, num=50, seed=1)
        assert x.shape == (n, *shape) and x.min() >= -1 and x.max() <= 1, name
    interp = load_named_set("digits-interp", shape)
    assert (interp - digits).abs().mean() > 0.1  # mixed, not the originals
    torch.testing.assert_close(load_named_set("photos", shape, num=5, seed=3),
                               load_named_set("photos", shape, num=5, seed=3))
    # CIFAR-100 (real pickle format) loads and is fitted to grey 16x16 or kept at 3x32x32.
    test_rows = _write_cifar100(tmp_path)
    c100 = load_image_dataset("cifar100", tmp_path, "test")
    assert c100.shape == (3, 32, 32) and c100.labels.tolist() == [0, 1, 2, 3]
    assert torch.equal(c100.images.reshape(4, -1), torch.from_numpy(test_rows))
    assert load_named_set("cifar100:test", (3, 32, 32), tmp_path).shape == (4, 3, 32, 32)
    assert load_named_set("cifar100-interp", shape, tmp_path).shape == (4, *shape)


def test_ood_table_cli_for_several_named_sets(tmp_path, write_config):
    cfg = merge(TINY_DIGITS, {"train": {"iterations": 30, "batch_size": 32, "ckpt_every": 30,
                                        "log_every": 10}})
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(write_config(cfg)), "--run-dir", str(run),
                     "--no-progress"]) == 0
    out, table = tmp_path / "ood.json", tmp_path / "ood.csv"
    assert cli_main(["ood", "--run-dir", str(run), "--in-dist", "digits16:test", "--ood",
                     "lfw16,digits-interp,noise", "--out", str(out), "--csv", str(table)]) == 0
    result = json.loads(out.read_text())
    assert set(result["sets"]) == {"lfw16", "digits-interp", "noise"}
    assert result["num_in"] == 297 and result["sets"]["lfw16"]["num"] == 200
    assert all(0 <= row["auroc"] <= 1 for row in result["sets"].values())
    assert len(table.read_text().splitlines()) == 4
    # The in-distribution set against itself: AUROC exactly 1/2; single-set keys kept.
    assert cli_main(["ood", "--run-dir", str(run), "--in-dist", "digits16:test", "--ood",
                     "digits16:test", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["auroc"] == 0.5


class QuadraticEBM(torch.nn.Module):
    """``F(y) = -|y - mu|^2 / (2 v)`` at every level: a known-answer energy."""

    def __init__(self, mu: float = 0.0, var: float = 1.0) -> None:
        super().__init__()
        self.mu, self.var = mu, var

    def condition(self, t, labels=None):
        return [t[:, None]]

    def energy(self, y, cond):
        return -((y - self.mu) ** 2).flatten(1).sum(1) / (2 * self.var)


def test_ood_auroc_separates_a_known_energy():
    from cdrl.tasks.ood import energy_scores, ood_table

    method = CDRL(config_from_dict(TINY_DIGITS), (1, 16, 16), torch.device("cpu"))
    method.ebm_ema.model = QuadraticEBM()
    gen = torch.Generator().manual_seed(0)
    near = 0.1 * (torch.rand(100, 1, 16, 16, generator=gen) * 2 - 1)
    far = torch.rand(100, 1, 16, 16, generator=gen) * 2 - 1
    assert auroc(energy_scores(method, near), energy_scores(method, far)) == 1.0
    table = ood_table(method, "digits16:test", ["noise", "digits16:test"], max_num=100)
    assert table["sets"]["digits16:test"]["auroc"] == 0.5 and table["num_in"] == 100


# ----------------------------------------------------------------------------- 3. inpainting
def test_masks():
    from cdrl.tasks.inpaint import make_mask

    shape = (1, 16, 16)
    center = make_mask("center", shape)
    assert center.shape == (1, 1, 16, 16) and center.sum() == 256 - 64
    assert center[0, 0, 4:12, 4:12].sum() == 0 and center[0, 0, :4].all()
    left = make_mask("left", shape)
    assert left[..., :8].sum() == 0 and left[..., 8:].all()
    rnd = make_mask("random", shape, seed=1, indices=range(40))
    assert 0.45 < float(rnd.mean()) < 0.55
    assert torch.equal(rnd[5:6], make_mask("random", shape, seed=1, indices=[5]))
    assert not torch.equal(rnd[5], rnd[6])


def test_inpainting_keeps_known_pixels_and_follows_a_known_energy():
    """With F = -|y - mu|^2 / (2 v) (v = 1/2: one Langevin step lands near mu) the missing
    pixels follow the pattern mu, far better than flat fills; known pixels stay exact."""
    from cdrl.tasks.inpaint import inpaint, inpaint_metrics, make_mask

    cfg = merge(TINY_DIGITS, {"initializer": {"arch": "none"},
                              "sample": {"tweedie": False, "langevin_steps": 3}})
    method = CDRL(config_from_dict(cfg), (1, 16, 16), torch.device("cpu"))
    ramp = torch.linspace(-0.8, 0.8, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    method.ebm_ema.model = QuadraticEBM(mu=ramp, var=0.5)
    gen = torch.Generator().manual_seed(0)
    truth = (ramp + 0.05 * torch.randn(20, 1, 16, 16, generator=gen)).clamp(-1, 1)
    for kind in ("center", "left", "random"):
        mask = make_mask(kind, (1, 16, 16), 0, range(20))
        filled = inpaint(method, truth, mask, generator=torch.Generator().manual_seed(1))
        assert torch.equal(filled * mask, truth * mask), kind
        m = inpaint_metrics(filled, truth, mask, torch.zeros(1, 1, 16, 16))
        assert m["known_pixels_exact"]
        assert m["inpaint"]["mse"] < 0.3 * m["baseline_known_mean"]["mse"], (kind, m)
        assert m["inpaint"]["mse"] < 0.3 * m["baseline_dataset_mean"]["mse"], (kind, m)


def test_inpaint_cli_on_a_trained_tiny_digits_run(tmp_path, write_config):
    cfg = merge(TINY_DIGITS, {"train": {"iterations": 4}})
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(write_config(cfg)), "--run-dir", str(run),
                     "--no-progress"]) == 0
    out, fig = tmp_path / "inpaint.json", tmp_path / "inpaint.png"
    assert cli_main(["inpaint", "--run-dir", str(run), "--dataset", "digits16:test", "--masks",
                     "center,left,random", "--num", "6", "--out-json", str(out), "--figure",
                     str(fig)]) == 0
    result = json.loads(out.read_text())
    assert set(result["masks"]) == {"center", "left", "random"}
    for row in result["masks"].values():
        assert row["known_pixels_exact"] and row["num"] == 6
        assert np.isfinite(row["inpaint"]["psnr"]) and row["baseline_known_mean"]["psnr"] > 0
    assert fig.stat().st_size > 1000


# ----------------------------------------------------------------------------- 2. composition
@pytest.mark.parametrize("kind", ["image", "toy"])
def test_composition_energy_and_mean_formula(kind, tiny_config_dict):
    """Spec 6.2 reconstruction: F(null) + (1+w) sum_k [F(c_k) - F(null)], also on G."""
    if kind == "image":
        cfg, shape = merge(TINY_COND_DIGITS, {"initializer": {"proposal_noise": False}}), (1, 16, 16)
    else:
        cfg = tiny_config_dict(data={"name": "quadrants", "conditional": True,
                                     "condition_attributes": ["right", "upper"]},
                               initializer={"proposal_noise": False, "dropout": 0.0})
        shape = (2,)
    m, w, n = _perturbed_method(cfg, shape), 3.0, 4
    x, y0 = torch.randn(n, *shape), torch.randn(n, *shape)
    k = torch.tensor([0, 2, 4, 5])
    c1, c2 = torch.tensor([1, 2, 3, 4]), torch.tensor([4, 3, 2, 1])
    null = torch.zeros_like(c1)
    guide = Guide.compose([c1, c2], w)
    t = m.init_t_level[k + 1]
    with torch.no_grad():
        g0, g1, g2 = (m.initializer(x, t, c) for c in (null, c1, c2))
        want = g0 + (1 + w) * ((g1 - g0) + (g2 - g0))
        torch.testing.assert_close(m.propose(m.initializer, x, k, guide=guide), want,
                                   rtol=1e-4, atol=1e-5)
    with frozen_spectral_norm(m.ebm):
        def f_comp(y):
            f0, f1, f2 = (m.ebm.energy(y, m.ebm.condition(m.t_level[k], c))
                          for c in (null, c1, c2))
            return f0 + (1 + w) * ((f1 - f0) + (f2 - f0))
        g = energy_grad_fn(f_comp)(y0)
    step = y0 + 0.5 * g - m.per_sample("pull", k) * (y0 - x)
    got = m.refine(m.ebm, y0, x, k, 1, noise_scale=0.0, guide=guide)
    torch.testing.assert_close(got, step, rtol=1e-4, atol=1e-4)


def test_composed_toy_samples_land_in_the_intersection(tmp_path):
    """A short quadrants run: composing right AND upper puts more samples in the upper-right
    quadrant than either condition alone or the unconditional model."""
    import yaml

    cfg = yaml.safe_load((ROOT / "workflow/config/experiments/compose_toy.yaml").read_text())
    cfg = merge(cfg, {"threads": 0, "train": {"iterations": 250, "ckpt_every": 250}})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(run),
                     "--no-progress"]) == 0
    out, fig = tmp_path / "m.json", tmp_path / "c.png"
    assert cli_main(["compose", "--run-dir", str(run), "--conditions", "right,upper",
                     "--num", "400", "--out", str(tmp_path / "c.npz"), "--metrics", str(out),
                     "--figure", str(fig)]) == 0
    frac = {k: v["frac_intersection"] for k, v in json.loads(out.read_text())["settings"].items()}
    assert frac["composed"] > 0.85, frac
    assert frac["composed"] > max(frac["right"], frac["upper"]) + 0.25, frac
    assert frac["unconditional"] < 0.4, frac
    assert np.load(tmp_path / "c.npz")["composed"].shape == (400, 2)
    assert fig.stat().st_size > 1000
