"""`cdrl bench` (NFE counting, tables), the fast paths against float32 references.

scripts/gpu_check.py is tested in tests/test_gpu_check.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cdrl.cli import main
from cdrl.report.bench import COLUMNS, build_for_bench, count_sampling_nfe, nfe_formula

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "workflow/config/experiments"
# Digits layout, shrunk further so that a sampling call takes milliseconds.
TINY = ["ebm.width=8", "ebm.temb_dim=32", "initializer.width=8", "initializer.temb_dim=32",
        "train.batch_size=4"]


@pytest.mark.parametrize("name,steps,tweedie", [("cdrl_digits", 15, True),
                                                ("drl_digits", 30, False)])
def test_counted_nfe_equals_formula(name, steps, tweedie):
    cfg, method, _ = build_for_bench(str(EXP / f"{name}.yaml"), None, TINY, "cpu")
    assert (cfg.sample.langevin_steps, cfg.sample.tweedie) == (steps, tweedie)
    grads, inits = count_sampling_nfe(method, 3)
    T = method.T
    assert grads == T * steps + int(tweedie)
    assert inits == (T if name.startswith("cdrl") else 0)
    assert (grads, inits) == nfe_formula(cfg, method)
    # The instrumentation is removed afterwards.
    assert "energy" not in method.ebm_ema.model.__dict__


def test_counts_follow_the_configured_steps():
    cfg, method, _ = build_for_bench(str(EXP / "cdrl_digits.yaml"), None,
                                     TINY + ["sample.langevin_steps=2", "sample.tweedie=false"],
                                     "cpu")
    assert count_sampling_nfe(method, 2) == (method.T * 2, method.T) == nfe_formula(cfg, method)


def test_bench_cli_writes_csv_and_markdown(tmp_path, capsys):
    out = tmp_path / "tables/speed.csv"
    args = ["bench", "--cdrl", str(EXP / "cdrl_digits.yaml"), "--drl", str(EXP / "drl_digits.yaml"),
            "--batch", "2", "--train-batch", "2", "--repeats", "1", "--device", "cpu",
            "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    by = {r["quantity"]: r for r in rows}
    grads = by["EBM gradient evaluations per image"]
    assert (float(grads["cdrl"]), float(grads["drl"])) == (91, 180)
    assert grads["cdrl_formula"] == "T*K+1" and float(grads["claimed"]) == 2
    assert float(by["initializer forwards per image"]["cdrl"]) == 6
    assert float(by["EBM gradient evaluations per training example"]["drl_over_cdrl"]) == 2
    for q in ("sampling time per image", "training time per iteration"):
        assert float(by[q]["cdrl"]) > 0 and float(by[q]["drl"]) > 0
        assert float(by[q]["drl_over_cdrl"]) == pytest.approx(
            float(by[q]["drl"]) / float(by[q]["cdrl"]), rel=1e-3)
    # For people: the methods as rows, the quantities as columns, the paper's claim cited.
    md = out.with_suffix(".md").read_text()
    header, _, *body = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert [c.strip() for c in header.strip("|").split("|")][:4] == [
        "method", "EBM params (M)", "initializer params (M)", "EBM gradients / image"]
    assert [r.split("|")[1].strip() for r in body] == [
        "CDRL", "DRL", "DRL / CDRL", "DRL / CDRL, paper's claim"]
    assert "91 (T*K+1)" in body[0] and "180 (T*K)" in body[1]
    assert "arXiv 2309.05153v1, abstract" in md
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["csv"] == str(out)


def test_bad_override_names_the_key():
    from cdrl.core.config import ConfigError

    with pytest.raises(ConfigError, match="ebm.widht"):
        build_for_bench(str(EXP / "cdrl_digits.yaml"), None, ["ebm.widht=3"], "cpu")
