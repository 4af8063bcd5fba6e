"""scripts/bench_toy.py: side-by-side timing against a stand-in for the official toy_example.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_script

SCRIPT = ROOT / "scripts/bench_toy.py"

# A tiny training loop holding every anchor text the patches look for. Unpatched it would fail on
# a CPU-only host (.cuda(), LambdaLR's removed verbose), copy itself onto itself, stop in its
# checkpoint or figure branch at iteration 0, and never print a round.
STAND_IN = """\
import os
import shutil
import torch
from torch_ema import ExponentialMovingAverage

log_path = './toy_example_res'
timestamp = 'stand_in'
n_iteration = 1000
n_save = 100
n_plot = 100
model = torch.nn.Linear(8, 8)
model.to('cuda')
ema = ExponentialMovingAverage(model.parameters(), decay=0.99)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda x: 1.0, verbose=False)
os.makedirs(os.path.join(log_path, timestamp), exist_ok=True)
shutil.copyfile(__file__, os.path.join(log_path, timestamp, __file__))
for counter in range(n_iteration + 1):
    x = torch.randn(32, 8).cuda()
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    ema.update()
    sched.step()
    if counter % n_save == 0:
        raise SystemExit('checkpoint branch reached')
    if counter % n_plot == 0:
        raise SystemExit('figure branch reached')
"""


def _stand_in(folder: Path, text: str = STAND_IN) -> Path:
    """A fake checkout with toy_example.py one folder down, as in an unpacked zip download."""
    path = folder / "CDRL-main/toy_example.py"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return folder


def _bench(tmp_path, write_config, tiny_config_dict, *extra):
    cfg = write_config(tiny_config_dict())
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", str(cfg), "--iters", "2",
                           "--rounds", "1", "--warmup", "1", "--matmul-n", "128", "--json",
                           str(out), *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return proc, out


def _files_named(top: Path, names: set[str]) -> list[Path]:
    hits = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in {".venv", ".git", "results", "resources"}]
        hits += [Path(folder, f) for f in files + dirs if f in names]
    return hits


@pytest.mark.slow
def test_official_stand_in_is_patched_timed_and_never_copied_here(tmp_path, write_config,
                                                                   tiny_config_dict):
    checkout = _stand_in(tmp_path / "checkout")
    proc, out = _bench(tmp_path, write_config, tiny_config_dict, "--official", str(checkout))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["official_sec_per_iter"] > 0 and res["ours_sec_per_iter"] > 0
    assert res["ratio_official_over_ours"] == pytest.approx(
        res["official_sec_per_iter"] / res["ours_sec_per_iter"])
    assert res["flops_per_iter"] > 0 and 0 < res["roofline_fraction"]
    assert res["matmul_gflops"] > 0 and res["threads"] >= 1 and res["torch"]
    assert "ratio official/ours" in proc.stdout
    assert not _files_named(ROOT, {"toy_example.py", "toy_example_res"})
    # The stand-in's checkout is left as it was: patched only in a temporary copy.
    assert sorted(p.name for p in checkout.rglob("*")) == ["CDRL-main", "toy_example.py"]


@pytest.mark.slow
def test_without_official_no_ratio(tmp_path, write_config, tiny_config_dict):
    proc, out = _bench(tmp_path, write_config, tiny_config_dict)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["ratio_official_over_ours"] is None and res["official_sec_per_iter"] is None
    assert res["ours_sec_per_iter"] > 0 and res["flops_per_iter"] > 0
    assert "ratio official/ours" not in proc.stdout
    assert "no ratio printed" in proc.stdout


@pytest.mark.slow
def test_missing_anchor_fails_naming_the_patch(tmp_path, write_config, tiny_config_dict):
    text = STAND_IN.replace("range(n_iteration + 1)", "range(10)")
    proc, out = _bench(tmp_path, write_config, tiny_config_dict, "--official",
                       str(_stand_in(tmp_path / "checkout", text)))
    assert proc.returncode != 0 and not out.exists()
    assert "'training-loop-hook'" in proc.stderr and "anchor" in proc.stderr


def test_every_patch_names_itself_when_its_anchor_is_missing():
    bench = load_script("bench_toy")
    assert bench.patch_source(STAND_IN).count("_cdrl_bench_rounds(") == 2
    for patch in bench.PATCHES:
        with pytest.raises(SystemExit, match=f"patch '{patch.name}'"):
            bench.patch_source(STAND_IN.replace(patch.anchor, ""))


def test_find_official(tmp_path):
    bench = load_script("bench_toy")
    found = _stand_in(tmp_path / "a") / "CDRL-main/toy_example.py"
    assert bench.find_official(tmp_path / "a") == found
    assert bench.find_official(found) == found
    top = tmp_path / "a/toy_example.py"
    top.write_text(STAND_IN)
    assert bench.find_official(tmp_path / "a") == top  # the shallowest wins
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no toy_example.py"):
        bench.find_official(tmp_path / "empty")
    with pytest.raises(SystemExit, match="no such file"):
        bench.find_official(tmp_path / "missing")
