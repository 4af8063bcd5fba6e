"""`cdrl bench` (NFE counting, interleaved rounds, tables) and the workflow rule that runs it
alone, the fast paths against float32 references.

scripts/gpu_check.py is tested in tests/test_gpu_check.py."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from cdrl.cli import main
from cdrl.measure.bench import (
    COLUMNS,
    RATIO_COLUMNS,
    ROUND_COLUMNS,
    build_for_bench,
    count_sampling_nfe,
    nfe_formula,
    round_order,
)
from tests.conftest import ROOT, SNAKEMAKE, subprocess_env

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


def _bench_args(out: Path, *extra: str) -> list[str]:
    args = ["bench", "--cdrl", str(EXP / "cdrl_digits.yaml"), "--drl", str(EXP / "drl_digits.yaml"),
            "--batch", "2", "--train-batch", "2", "--device", "cpu", "--out", str(out), *extra]
    for item in TINY:
        args += ["--set", item]
    return args


def test_bench_cli_writes_csv_rounds_and_markdown(tmp_path, capsys):
    out = tmp_path / "tables/speed.csv"
    assert main(_bench_args(out, "--rounds", "3")) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS + RATIO_COLUMNS
    by = {r["quantity"]: r for r in rows}
    grads = by["EBM gradient evaluations per image"]
    assert (float(grads["cdrl"]), float(grads["drl"])) == (91, 180)
    assert grads["cdrl_formula"] == "T*K+1" and float(grads["claimed"]) == 2
    assert grads["drl_over_cdrl_low"] == grads["drl_over_cdrl_high"] == ""  # exact counts
    assert float(by["initializer forwards per image"]["cdrl"]) == 6
    assert float(by["EBM gradient evaluations per training example"]["drl_over_cdrl"]) == 2
    # Every timed call beside it; the summary's ratio is the paired one over those rounds.
    rounds_csv = tmp_path / "tables/speed.rounds.csv"
    with rounds_csv.open() as f:
        calls = list(csv.DictReader(f))
    assert list(calls[0]) == ROUND_COLUMNS and len(calls) == 3 * 2 * 2
    assert [(c["round"], c["method"], c["position"]) for c in calls[:4]] == [
        ("1", "cdrl", "1"), ("1", "drl", "2"), ("1", "cdrl", "1"), ("1", "drl", "2")]
    assert [(c["method"], c["position"]) for c in calls[4:6]] == [("drl", "1"), ("cdrl", "2")]
    for q in ("sampling time per image", "training time per iteration"):
        sec = {(c["round"], c["method"]): float(c["seconds"]) for c in calls
               if c["quantity"] == q}
        ratios = [sec[(r, "drl")] / sec[(r, "cdrl")] for r in ("1", "2", "3")]
        row = by[q]
        assert float(row["cdrl"]) == pytest.approx(
            statistics.median(sec[(r, "cdrl")] for r in "123"), rel=1e-3)
        assert float(row["drl_over_cdrl"]) == pytest.approx(statistics.geometric_mean(ratios),
                                                            rel=1e-3)
        logs = [math.log(x) for x in ratios]
        half = 4.302653 * statistics.stdev(logs) / math.sqrt(3)   # t(0.975, 2 df)
        assert float(row["drl_over_cdrl_low"]) == pytest.approx(
            math.exp(statistics.mean(logs) - half), rel=1e-3)
        assert float(row["drl_over_cdrl_high"]) == pytest.approx(
            math.exp(statistics.mean(logs) + half), rel=1e-3)
        assert float(row["repeats"]) == 3
    # For people: the methods as rows, the quantities as columns, the paper's claim cited.
    md = out.with_suffix(".md").read_text()
    header, _, *body = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert [c.strip() for c in header.strip("|").split("|")][:4] == [
        "method", "EBM params (M)", "initializer params (M)", "EBM gradients / image"]
    assert [r.split("|")[1].strip() for r in body] == [
        "CDRL", "DRL", "DRL / CDRL", "DRL / CDRL, paper's claim"]
    assert "91 (T*K+1)" in body[0] and "180 (T*K)" in body[1]
    assert body[2].count(" [") == 2                     # the two times' paired intervals
    assert "arXiv 2309.05153v1, abstract" in md and "interleaved round" in md
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["csv"] == str(out) and printed["rounds"] == str(rounds_csv)


def test_rounds_alternate_which_method_goes_first():
    assert [round_order(["cdrl", "drl"], r) for r in range(3)] == [
        ["cdrl", "drl"], ["drl", "cdrl"], ["cdrl", "drl"]]


def test_bench_cli_refuses_fewer_than_two_rounds(tmp_path, capsys):
    out = tmp_path / "speed.csv"
    for flag in ("--rounds", "--repeats"):                 # --repeats: the old name
        with pytest.raises(SystemExit) as err:
            main(_bench_args(out, flag, "1"))
        assert err.value.code == 2
        assert "at least 2 are needed" in capsys.readouterr().err
    assert not out.exists()


def test_bad_override_names_the_key():
    from cdrl.core.config import ConfigError

    with pytest.raises(ConfigError, match="ebm.widht"):
        build_for_bench(str(EXP / "cdrl_digits.yaml"), None, ["ebm.widht=3"], "cpu")


# ----------------------------------------------------------------------------- the workflow rule
def _dry_run(tmp_path: Path, *args: str) -> str:
    """Dry run of the tiny preset in a scratch working directory."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "workflow").symlink_to(ROOT / "workflow")
    cfg = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
    cfg["experiments_dir"] = str(EXP)
    (work / "test.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "-n",
         "-p", "--configfile", str(work / "test.yaml"), *args],
        capture_output=True, text=True, timeout=300, env=subprocess_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_bench_rule_claims_every_local_core_and_the_bench_resource(tmp_path):
    out = _dry_run(tmp_path, "--cores", "3", "results/speed/digits.csv")
    job = out[out.index("rule bench:"):]
    job = job[: job.index("Shell command")] + job[job.index("Shell command"):].split("\n")[0]
    assert "threads: 3" in job                      # all of --cores: nothing runs beside it
    assert "speed_bench=1" in job and "slurm_extra=--exclusive" in job
    assert "results/speed/digits.rounds.csv" in job
    # The bench itself runs on the case's threads (tiny: 1), at least 2 rounds (tiny: 1).
    assert "OMP_NUM_THREADS=1 " in job and "--threads 1 " in job and "--rounds 2 " in job


SCHEDULING = """\
if "speed_bench" not in workflow.global_resources:
    workflow.global_resources["speed_bench"] = 1


def bench_threads(wildcards):
    return workflow.cores if workflow.local_exec else 1


rule all:
    input:
        expand("o/{i}.txt", i=range(6)),
        expand("b/{j}.txt", j=range(2)),


rule other:
    output:
        "o/{i}.txt",
    shell:
        "date +%s.%N > {output}; sleep 0.5; date +%s.%N >> {output}"


rule bench:
    output:
        "b/{j}.txt",
    threads: bench_threads
    resources:
        speed_bench=1,
    shell:
        "date +%s.%N > {output}; sleep 0.5; date +%s.%N >> {output}"
"""


def _overlaps(work: Path) -> tuple[set, int]:
    """Pairs of (bench job, any job) that ran at the same time, and the number of pairs of other
    jobs that did."""
    spans = {f"{p.parent.name}/{p.stem}": tuple(map(float, p.read_text().split()))
             for p in work.glob("[ob]/*.txt")}

    def meet(a, b):
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    bench = {(a, b) for a in spans if a.startswith("b/") for b in spans if b != a and meet(a, b)}
    other = sorted(a for a in spans if a.startswith("o/"))
    others = sum(meet(a, b) for i, a in enumerate(other) for b in other[i + 1:])
    return bench, others


@pytest.mark.slow
@pytest.mark.parametrize("extra, alone", [((), True), (("--set-threads", "bench=1"), False)])
def test_snakemake_runs_the_bench_alone(tmp_path, extra, alone):
    """What rule bench relies on, on this Snakemake: with threads = workflow.cores no other job
    overlaps a bench job (others run 4 at a time); the resource alone (threads forced to 1)
    keeps only the bench jobs apart."""
    (tmp_path / "Snakefile").write_text(SCHEDULING)
    proc = subprocess.run([*SNAKEMAKE, "-d", str(tmp_path), "-s",
                           str(tmp_path / "Snakefile"), "--cores", "4", "-q", *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench, others = _overlaps(tmp_path)
    assert others > 0                                  # the other jobs did run side by side
    assert not {p for p in bench if p[1].startswith("b/")}    # never two bench jobs at once
    assert (not bench) == alone, bench
