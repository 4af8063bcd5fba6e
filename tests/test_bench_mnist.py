"""scripts/bench_mnist.py: profile shares, FLOPs, roofline and the A/B candidates, in-process with
--quick (tiny networks on digits16, the same 16x16 shape as mnist16)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bm():
    yield load_script("bench_mnist", register=True)  # its dataclasses look their module up
    sys.modules.pop("bench_mnist", None)


def test_quick_run_prints_and_writes_every_number(bm, tmp_path, capsys):
    threads = torch.get_num_threads()
    out_file = tmp_path / "bench.json"
    try:
        out = bm.main(["--quick", "--data", "digits16", "--json", str(out_file)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out_file.read_text())["keep_rule"] == bm.KEEP_RULE
    shares = out["profile"]["shares"]
    assert set(shares) == set(bm.PARTS) and math.isclose(sum(shares.values()), 1.0)
    assert shares["langevin_ebm_grad"] > 0 and shares["initializer"] > 0
    f = out["flops"]
    assert f["langevin"] == out["langevin_steps"] * f["langevin_step"] > 0
    assert f["total"] == sum(v for k, v in f.items() if k not in ("total", "langevin_step"))
    assert out["roofline"]["gflops"] > 0 and 0 < out["roofline_fraction"]
    assert out["achieved_gflops"] == pytest.approx(
        f["total"] / out["baseline"]["sec_per_iter"] / 1e9)
    assert out["baseline_rerun_error"] == 0          # one thread: the iteration is deterministic
    rows = {c["name"]: c for c in out["candidates"]}
    assert list(rows) == ["channels_last", "bf16_autocast", "langevin_inplace", "flush_denormal"]
    for c in rows.values():
        if c["status"] == "skipped":
            assert c["reason"] == "skipped: no native bf16" and c["name"] == "bf16_autocast"
            continue
        assert len(c["base_rounds"]) == len(c["cand_rounds"]) == 2
        assert c["low"] <= c["speedup"] <= c["high"] and c["decision"] in ("keep", "reject")
        assert set(c["rel_errors"]) >= set(bm.KEPT_OUTPUTS)
    # The same floating-point operations: bit for bit.
    assert rows["langevin_inplace"]["max_rel_error"] == 0
    assert rows["channels_last"]["max_rel_error"] < 1e-3
    text = capsys.readouterr().out
    for key in ("profile of one iteration", "EBM gradient calls in the Langevin chain",
                "EMA updates", "FLOPs of one iteration", "fp32 matmul roofline",
                "% of the roofline", "channels_last", "bf16_autocast", "keep rule"):
        assert key in text, key


def test_bf16_is_skipped_without_native_support(bm, monkeypatch):
    monkeypatch.setattr(bm, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert bm.native_bf16() == (False, "skipped: no native bf16")
    row = bm.try_candidate(None, bm.CANDIDATES[1], None, None)
    assert row["status"] == "skipped" and row["reason"] == "skipped: no native bf16"


def test_inplace_langevin_matches_the_sampler_bit_for_bit(bm):
    from cdrl.core.sampler import langevin

    g = torch.Generator().manual_seed(0)
    y0, x = torch.randn(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g)
    step, pull = torch.rand(4, 1, 1, 1, generator=g), torch.rand(4, 1, 1, 1, generator=g)
    w = torch.randn(1, 1, 5, 5, generator=g)

    def grad(y):
        y = y.detach().requires_grad_(True)
        return torch.autograd.grad((w * y).tanh().sum(), y)[0]

    keep = y0.clone()
    runs = []
    for fn in (langevin, bm.inplace_langevin):
        torch.manual_seed(1)
        runs.append(fn(grad, y0, 4, grad_scale=0.5, noise_std=step.sqrt(), pull=pull, anchor=x))
    assert torch.equal(runs[0], runs[1]) and torch.equal(y0, keep)  # y0 left as it was


def test_decide_reads_the_lower_bound_and_the_error(bm):
    assert bm.decide(1.06, 1e-3)[0] == "keep"
    assert bm.decide(1.04, 0.0)[0] == "reject"
    assert bm.decide(1.5, 0.02)[0] == "reject"
    assert bm.decide(None, 0.0)[0] == "reject"
