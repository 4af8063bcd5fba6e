"""OOD scoring: AUROC known answers and energy scores of a trained toy model."""

import json

import numpy as np
import pytest
import torch

from cdrl.cli import main as cli_main
from cdrl.core.config import config_from_dict
from cdrl.data import in_checkerboard
from cdrl.tasks.ood import auroc, energy_scores
from cdrl.train.trainer import build_data, load_run, train


def test_auroc_known_answers():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0])) == 0.5
    torch.manual_seed(0)
    a, b = torch.randn(4000) + 1.0, torch.randn(4000)
    # For two unit Gaussians one apart, AUROC = Phi(1 / sqrt(2)) = 0.7602.
    assert abs(auroc(a, b) - 0.7602) < 0.015


def test_auroc_counts_ties_as_half_like_the_pairwise_definition():
    """P(in > ood) + P(in = ood) / 2 over all pairs, on scores with many ties."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (60,), generator=gen).float()
    half = (torch.rand(40, generator=gen) > 0.5).float() / 2
    b = torch.randint(0, 5, (40,), generator=gen).float() - half
    pairs = (a[:, None] > b[None]).double() + 0.5 * (a[:, None] == b[None]).double()
    assert auroc(a, b) == pytest.approx(float(pairs.mean()), abs=1e-12)
    assert auroc(torch.tensor([2.0, 2.0, 1.0]), torch.tensor([2.0, 0.0])) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.tensor([1.0]), torch.tensor([]))


def test_trained_toy_energy_separates_support_from_holes(tmp_path, learning_config_dict):
    cfg = config_from_dict(learning_config_dict(200))
    train(cfg, tmp_path, progress=False)
    _, method, _ = load_run(tmp_path)
    gen = torch.Generator().manual_seed(1)
    grid = torch.rand(20000, 2, generator=gen) * 16 - 8
    inside = in_checkerboard(grid)
    in_pts, out_pts = grid[inside][:2000], grid[~inside][:2000]
    score = auroc(energy_scores(method, in_pts), energy_scores(method, out_pts))
    assert score > 0.65, score  # an untrained energy gives about 0.5
    data = build_data(cfg).points[:500]
    assert energy_scores(method, data, level=2, noise=True).shape == (500,)
    # The CLI gives the same number from .npz inputs.
    for name, pts in (("in", in_pts), ("out", out_pts)):
        np.savez(tmp_path / f"{name}.npz", x=pts.numpy())
    out = tmp_path / "ood.json"
    assert cli_main(["ood", "--run-dir", str(tmp_path), "--in-dist", str(tmp_path / "in.npz"),
                     "--ood", str(tmp_path / "out.npz"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["auroc"] == pytest.approx(score, abs=1e-6)
