"""The `slurm` profile and the submitit executor plugin against a real SLURM cluster.

    .venv/bin/python -m pytest tests/test_slurm.py        # as root on Linux; CI runs it

``scripts/slurm_cluster.sh start`` brings up a single-node cluster on this machine (installing the
Debian packages the first time); a cluster this session started is stopped at the end. Every call
that waits on the cluster runs under a timeout, so a hang fails the test instead of CI.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cdrl.train.checkpoint import load_latest
from tests.conftest import ROOT, SNAKEMAKE, float_leaves, state_differences, subprocess_env

CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
PROFILE = ROOT / "slurm"
# Fast status checks for tests; everything else comes from slurm/config.yaml.
FAST = ["--seconds-between-status-checks", "2", "--latency-wait", "5"]
# Job-name prefix of this session: test sessions sharing a cluster do not see each other's jobs.
TAG = f"t{os.getpid()}-"

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="a SLURM cluster needs Linux"),
    pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0,
                       reason="starting a SLURM cluster needs root (apt-get, daemons)"),
]


def _run(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def cluster():
    started = _run([str(CLUSTER), "status"], timeout=30).returncode != 0
    if started:
        proc = _run([str(CLUSTER), "start"], timeout=1500)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    yield
    if started:
        _run([str(CLUSTER), "stop"], timeout=120)


def _snakemake_cmd(workdir: Path, *args) -> list[str]:
    return [*SNAKEMAKE, "-d", str(workdir), "--profile", str(PROFILE), *FAST, *args]


def _workflow(tmp_path: Path, snakefile: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Snakefile").write_text(snakefile)
    (tmp_path / "none.yaml").write_text("{}\n")
    return tmp_path


def _smk(workdir: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    cmd = _snakemake_cmd(workdir, "-s", str(workdir / "Snakefile"), "--configfile",
                         str(workdir / "none.yaml"), *args)
    return _run(cmd, timeout=timeout, env=subprocess_env(threads=1), cwd=workdir)


def _squeue(prefix: str) -> dict[str, tuple[str, str]]:
    """Jobs in the queue whose name starts with ``prefix``: id -> (name, state)."""
    out = _run(["squeue", "-h", "-o", "%i|%j|%T"], timeout=30).stdout
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {i: (n, s) for i, n, s in rows if n.startswith(prefix)}


def _sacct(ids) -> dict[str, str]:
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", *[f"-j{i}" for i in ids]],
               timeout=30).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


def _wait(what: str, predicate, timeout: float, every: float = 1.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _release(jobid: str) -> None:
    """Let a requeued job start in 2 s instead of after AuthInfo's cred_expire (30 s here).
    Not at once: slurmd refuses a job credential made in the same second as the requeue revoked
    the old one, and the job then fails at launch (FAILED, no log)."""
    _run(["scontrol", "update", f"JobId={jobid}", "StartTime=now+2"], timeout=30)


@pytest.mark.slow
def test_a_job_started_before_submitit_moves_its_files_runs(cluster, tmp_path, monkeypatch):
    """submitit moves a job's files into place only after sbatch has returned, and SLURM may
    start the job first (on a busy submitting host a CI run lost a job so: FAILED, no log). Each
    move is held here until the job has left PENDING. In the plugin's folder the job waits for
    its pickle and completes; in submitit's usual per-job ``%j`` folder, which does not exist
    yet, SLURM cannot open the job's output file and the job fails at launch."""
    import submitit
    from snakemake_executor_plugin_submitit import job_folder
    from submitit.core.utils import JobPaths

    move = JobPaths.move_temporary_file

    def late_move(self, *args, **kwargs):
        _wait(f"job {self.job_id} to leave PENDING", lambda: _run(
            ["squeue", "-h", "--states=all", "-j", self.job_id, "-o", "%T"],
            timeout=30).stdout.strip() not in ("", "PENDING"), 120, every=0.2)
        return move(self, *args, **kwargs)

    monkeypatch.setattr(JobPaths, "move_temporary_file", late_move)

    def run(folder: Path) -> str:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(slurm_partition="main", cpus_per_task=1, mem_gb=0.2,
                             timeout_min=5, name=TAG + "launch")
        jobid = ex.submit(abs, -7).job_id

        def ended() -> str | None:
            state = (_sacct([jobid]).get(jobid) or "PENDING").split()[0]
            return state if state in ("COMPLETED", "FAILED", "CANCELLED") else None

        return _wait(f"job {jobid} to end", ended, 180)

    flat = job_folder(str(tmp_path / "flat"))
    assert run(flat) == "COMPLETED"
    assert "%j" not in str(flat)
    assert run(tmp_path / "per-job" / "%j") == "FAILED"


# ---- (b) time limit: signalled, checkpointed, requeued, same result ------------------------------

def _iterations_for(seconds: float, tmp_path: Path, tiny_config_dict, floor: int) -> int:
    """Iterations of the long test config that take about ``seconds`` on this machine now.

    The requeue tests need work that outlasts a signal; a fixed count finishes early on an idle
    machine and takes ages on a loaded one, so it is calibrated by a short run first.
    """
    cal = tmp_path / "calibrate"
    cal.mkdir(exist_ok=True)
    cfg = tiny_config_dict(threads=1, train={"iterations": 40, "batch_size": 256,
                                             "langevin_steps": 15, "ckpt_every": 40,
                                             "log_every": 20})
    (cal / "c.yaml").write_text(yaml.safe_dump(cfg))
    _run([sys.executable, "-m", "cdrl", "train", "--config", str(cal / "c.yaml"), "--run-dir",
          str(cal / "run"), "--no-progress"], timeout=300, env=subprocess_env(threads=1))
    lines = (cal / "run" / "stats.jsonl").read_text().splitlines()
    sec_per_iter = json.loads(lines[-1])["sec_per_iter"]  # the second window: warm
    return max(floor, min(20_000, int(seconds / sec_per_iter)))


class _PreemptibleRun:
    """A calibrated training job under Snakemake on the cluster, beside the same training run
    uninterrupted (the reference); ``finish`` waits for both."""

    def __init__(self, tmp_path: Path, tiny_config_dict, name: str, seconds: float, floor: int,
                 partition: str | None) -> None:
        self.name, self.ref_dir = name, tmp_path / "ref"
        self.iters = _iterations_for(seconds, tmp_path, tiny_config_dict, floor=floor)
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(tiny_config_dict(threads=1, train={
            "iterations": self.iters, "batch_size": 256, "langevin_steps": 15,
            "ckpt_every": 25, "log_every": 25})))
        where = f', slurm_partition="{partition}"' if partition else ""
        self.work = _workflow(tmp_path / "wf", f"""
rule train:
    output: "runs/{name}/final.json"
    resources: runtime=30, mem_mb=1000, cpus_per_task=1{where}
    shell: "python -m cdrl train --config {cfg} --run-dir runs/{name} --no-progress"
""")
        self.ref = subprocess.Popen([sys.executable, "-m", "cdrl", "train", "--config", str(cfg),
                                     "--run-dir", str(self.ref_dir), "--no-progress"],
                                    env=subprocess_env(threads=1), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        self.smk = subprocess.Popen(
            _snakemake_cmd(self.work, "-s", str(self.work / "Snakefile"), "--configfile",
                           str(self.work / "none.yaml"), "--submitit-max-requeue", "0",
                           "--submitit-jobname-prefix", f"{TAG}{name}-"),
            env=subprocess_env(threads=1), cwd=self.work, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def finish(self) -> str:
        """Snakemake's output once it and the reference ended, both successfully."""
        out, _ = self.smk.communicate(timeout=600)
        assert self.smk.returncode == 0, out[-4000:]
        assert self.ref.wait(timeout=300) == 0
        return out

    def kill(self) -> None:
        if self.smk.poll() is None:
            os.killpg(self.smk.pid, signal.SIGKILL)
        if self.ref.poll() is None:
            self.ref.kill()

    def assert_resumed_like_reference(self) -> None:
        got = load_latest(self.work / "runs" / self.name, map_location="cpu")
        want = load_latest(self.ref_dir, map_location="cpu")
        assert got["iteration"] == want["iteration"] == self.iters
        assert not state_differences(want["method"], got["method"])


@contextlib.contextmanager
def _preemptible_training(tmp_path, tiny_config_dict, name, seconds, floor, partition=None):
    run = _PreemptibleRun(tmp_path, tiny_config_dict, name, seconds, floor, partition)
    try:
        yield run
    finally:
        run.kill()


def _attempts(jobid: str) -> list[str]:
    """The states of every attempt of a job, oldest first."""
    return _run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", f"-j{jobid}"],
                timeout=30).stdout.split()


def _job_logs(work: Path, jobid: str) -> str:
    logs = work / "logs/submitit"
    return (logs / f"{jobid}_0_log.out").read_text() + (logs / f"{jobid}_0_log.err").read_text()


def _long_config(tmp_path: Path, tiny_config_dict, iters: int) -> Path:
    cfg = tiny_config_dict(threads=1, train={
        "iterations": iters, "batch_size": 256, "langevin_steps": 15,
        "ckpt_every": 50, "log_every": 50})
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_time_limit_checkpoints_requeues_and_resumes(cluster, tmp_path, tiny_config_dict):
    """A 1-minute job with more work than that: USR2 before the limit, checkpoint, requeue,
    resume; the final weights equal an uninterrupted run's bit for bit."""
    # About 60 s of work against a 1-minute limit signalled 30 s early, which leaves an attempt
    # at most 25 s of training after its start-up: two or more requeues. A loaded machine trains
    # less per attempt, hence the generous max-requeue.
    iters = _iterations_for(60.0, tmp_path, tiny_config_dict, floor=300)
    cfg = _long_config(tmp_path, tiny_config_dict, iters)
    work = _workflow(tmp_path / "wf", f"""
rule train:
    output: "runs/long/final.json"
    log: "logs/train.log"
    resources: runtime=1, mem_mb=1000, cpus_per_task=1
    shell: "python -m cdrl train --config {cfg} --run-dir runs/long --no-progress >> {{log}} 2>&1"
""")
    # The uninterrupted reference trains alongside, on the other core.
    ref = subprocess.Popen([sys.executable, "-m", "cdrl", "train", "--config", str(cfg),
                            "--run-dir", str(tmp_path / "ref"), "--no-progress"],
                           env=subprocess_env(threads=1), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        proc = _smk(work, "--submitit-signal-delay-s", "30", "--submitit-checkpoint-grace-s",
                    "20", "--submitit-max-requeue", "25", "--submitit-jobname-prefix",
                    TAG + "requeue-", timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()[-2000:]
    finally:
        if ref.poll() is None:
            ref.kill()
    jobid = re.search(r"submitted as SLURM job (\d+)", proc.stderr).group(1)
    attempts = _attempts(jobid)
    assert "REQUEUED" in attempts and attempts[-1] == "COMPLETED", attempts
    # Every attempt's log is kept: the signal, the checkpoint request and the requeue.
    text = _job_logs(work, jobid)
    for expected in ("this job is timed-out", "forwarding SIGUSR2", "Requeued job",
                     "SLURM restart count 1", "Job completed successfully"):
        assert expected in text, f"{expected!r} not in the job's logs:\n{text[-3000:]}"
    # The final state equals the reference's.
    got = load_latest(work / "runs/long", map_location="cpu")
    want = load_latest(tmp_path / "ref", map_location="cpu")
    assert got["iteration"] == want["iteration"] == iters
    assert not state_differences(want["method"], got["method"])


@pytest.mark.slow
def test_preempted_job_checkpoints_requeues_and_resumes(cluster, tmp_path, tiny_config_dict):
    """USR2 long before the time limit is a preemption for submitit: checkpoint, requeue
    (not counted against max-requeue), resume, same result."""
    # About a minute of work, so the preemption signal arrives while it trains.
    with _preemptible_training(tmp_path, tiny_config_dict, "pre", 60.0, floor=300) as run:
        _wait("a first checkpoint", (run.work / "runs/pre/latest.json").exists, 240, every=0.5)
        (jobid,) = _squeue(TAG + "pre-")
        assert _run(["scancel", "--signal=USR2", jobid], timeout=30).returncode == 0
        run.finish()
    attempts = _attempts(jobid)
    assert attempts[0] == "REQUEUED" and attempts[-1] == "COMPLETED", attempts
    text = _job_logs(run.work, jobid)
    assert "this job is preempted" in text and "Requeued job" in text, text[-3000:]
    run.assert_resumed_like_reference()


def _node_cpus() -> int:
    """CPUs of the node, as the `urgent` partition sees it (all of them)."""
    out = _run(["sinfo", "-h", "-p", "urgent", "-o", "%c"], timeout=30).stdout.split()
    if not out:
        pytest.fail("the running cluster has no `urgent` partition: it was started by an older "
                    "scripts/slurm_cluster.sh; run `scripts/slurm_cluster.sh stop` and retry")
    return int(out[0])


@pytest.mark.slow
def test_sigterm_preemption_requeues_and_resumes(cluster, tmp_path, tiny_config_dict):
    """SLURM's default preemption: a job in the `urgent` partition needs the node, so the job in
    `preemptible` gets SIGTERM (no user signal) and is requeued by SLURM. The step checkpoints,
    the plugin waits instead of reporting a failure, and the resumed run ends bit for bit where
    an uninterrupted one does."""
    cpus = _node_cpus()
    # About 25 s of work: the preemption (a few seconds after the first checkpoint) lands
    # while it trains, and the requeued attempt has most of it left.
    with _preemptible_training(tmp_path, tiny_config_dict, "term", 25.0, floor=150,
                               partition="preemptible") as run:
        _wait("a first checkpoint", (run.work / "runs/term/latest.json").exists, 240,
              every=0.5)
        (jobid,) = _squeue(TAG + "term-")
        urgent = _run(["sbatch", "--parsable", "-p", "urgent", "-c", str(cpus),
                       "--mem=100", "-J", TAG + "urgent", "-o", "/dev/null", "--wrap", "sleep 2"],
                      timeout=30)
        assert urgent.returncode == 0, urgent.stderr
        _wait("the preemption", lambda: "PREEMPTED" in _attempts(jobid), 120)
        _wait("the urgent job to end", lambda: not _squeue(TAG + "urgent"), 120)
        _release(jobid)
        out = run.finish()
    attempts = _attempts(jobid)
    assert attempts[0] == "PREEMPTED" and attempts[-1] == "COMPLETED", attempts
    assert "submitted as SLURM job" in out and "Error" not in out, out[-4000:]
    text = _job_logs(run.work, jobid)
    for expected in ("DUE TO PREEMPTION", "SIGTERM (preemption", "exiting without a result",
                     "SLURM restart count 1", "Job completed successfully"):
        assert expected in text, f"{expected!r} not in the job's logs:\n{text[-3000:]}"
    assert "this job is preempted" not in text  # no USR2: this was SIGTERM alone
    run.assert_resumed_like_reference()


# ---- (c) Ctrl-C cancels; a re-run attaches instead of submitting twice ---------------------------

WAITER = """
rule all:
    input: expand("out/{{i}}.txt", i=[1, 2])

rule wait:
    output: "out/{{i}}.txt"
    params: tag=config.get("tag", 1)
    resources: runtime=10, mem_mb=300, cpus_per_task=1
    shell: "timeout 600 bash -c 'until [ -e {go} ]; do sleep 1; done' && "
           "echo $SLURM_JOB_ID {{params.tag}} > {{output}}"
"""


def _start(work: Path, *args) -> subprocess.Popen:
    cmd = _snakemake_cmd(work, "-s", str(work / "Snakefile"), "--configfile",
                         str(work / "none.yaml"), "--submitit-jobname-prefix", TAG + "cancel-",
                         *args)
    log = open(work / f"snakemake-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen(cmd, env=subprocess_env(threads=1), cwd=work, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """A shell that runs CI in the background starts it with SIGINT ignored, and Python keeps an
    ignored SIGINT ignored: Snakemake would never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _settled(work: Path) -> None:
    """Wait until the newest Snakemake log shows both submissions, then a little more.

    On an idle cluster squeue reports the jobs running before Snakemake has finished its own
    bookkeeping of the second submission; an interrupt inside that window is not what this
    test is about.
    """
    log = sorted(work.glob("snakemake-*.log"))[-1]
    _wait("both submissions in the log",
          lambda: log.read_text().count("submitted as SLURM job") == 2, 60, every=0.5)
    time.sleep(3)


def _running(n: int, besides=()):
    """``n`` jobs of this test, all running and none of ``besides``; else None."""
    jobs = _squeue(TAG + "cancel-")
    if len(jobs) != n or set(jobs) & set(besides):
        return None
    return jobs if all(s == "RUNNING" for _, s in jobs.values()) else None


@pytest.mark.slow
def test_interrupt_cancels_and_rerun_attaches(cluster, tmp_path):
    go = tmp_path / "go"
    work = _workflow(tmp_path / "wf", WAITER.format(go=go))
    assert not _squeue(TAG + "cancel-"), "leftover jobs from an earlier run"

    # Ctrl-C: Snakemake cancels what it submitted.
    smk = _start(work, "all")
    first = _wait("two running jobs", lambda: _running(2), 120)
    _settled(work)
    smk.send_signal(signal.SIGINT)
    assert smk.wait(timeout=120) != 0
    _wait("the queue to empty", lambda: not _squeue(TAG + "cancel-"), 60)
    assert all(s.startswith("CANCELLED") for s in _sacct(first).values()), _sacct(first)

    # A Snakemake killed outright leaves its jobs running...
    smk = _start(work, "all")
    second = _wait("two running jobs", lambda: _running(2), 120)
    _settled(work)
    assert not set(second) & set(first)
    os.killpg(smk.pid, signal.SIGKILL)
    smk.wait(timeout=30)
    assert _running(2)
    # ...a re-run whose command changed (another tag) cancels them and submits its own...
    assert _smk(work, "--unlock", timeout=120).returncode == 0
    smk = _start(work, "all", "--config", "tag=2")
    third = _wait("two new running jobs", lambda: _running(2, besides=second), 120)
    _settled(work)
    text = sorted(work.glob("snakemake-*.log"))[-1].read_text()
    assert f"Cancelling SLURM jobs {' '.join(sorted(second))}" in text, text[-4000:]
    assert all(s.startswith("CANCELLED") for s in _sacct(second).values()), _sacct(second)
    os.killpg(smk.pid, signal.SIGKILL)
    smk.wait(timeout=30)
    # ...and a re-run with the same command attaches to its jobs instead of submitting again.
    unlock = _smk(work, "--unlock", timeout=120)
    assert unlock.returncode == 0, unlock.stderr
    smk = _start(work, "all", "--config", "tag=2")
    log = sorted(work.glob("snakemake-*.log"))[-1]
    _wait("the re-run to attach", lambda: log.read_text().count("attached to") == 2, 120)
    go.touch()
    assert smk.wait(timeout=300) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "submitted as SLURM job" not in text and "Cancelling" not in text, text[-4000:]
    made = {(work / f"out/{i}.txt").read_text().split()[0] for i in (1, 2)}
    assert made == set(third)
    # Every output was submitted three times in all: cancelled twice, then the one that ran.
    states = _sacct([*first, *second, *third])
    assert len(states) == 6 and sum(s == "COMPLETED" for s in states.values()) == 2, states


FAILING = """
rule all:
    input: "out/slow.txt", "out/bad.txt", "out/after.txt"

rule bad:
    output: "out/bad.txt"
    resources: runtime=10, mem_mb=300, cpus_per_task=1
    shell: "timeout 300 bash -c 'until [ -e {started} ]; do sleep 0.5; done'; exit 3"

rule slow:
    output: "out/slow.txt"
    resources: runtime=10, mem_mb=300, cpus_per_task=1
    shell: "touch {started}; timeout 300 bash -c 'until [ -e {failed} ]; do sleep 0.5; done'; "
           "sleep 4; echo $SLURM_JOB_ID > {{output}}"

rule after:
    input: "out/slow.txt"
    output: "out/after.txt"
    resources: runtime=10, mem_mb=300, cpus_per_task=1
    shell: "touch {{output}}"
"""


@pytest.mark.slow
def test_failed_job_lets_running_jobs_finish_and_names_its_logs(cluster, tmp_path):
    """Without --keep-going a failure stops new submissions (`after`), but the job already
    running (`slow`, still running when Snakemake reports `bad`) is not cancelled: it completes
    and keeps its output."""
    started, failed = tmp_path / "slow-started", tmp_path / "bad-reported"
    work = _workflow(tmp_path / "wf", FAILING.format(started=started, failed=failed))
    log = work / "snakemake.log"
    with open(log, "w") as out:
        smk = subprocess.Popen(_snakemake_cmd(work, "-s", str(work / "Snakefile"),
                                              "--configfile", str(work / "none.yaml"),
                                              "--submitit-jobname-prefix", TAG + "fail-"),
                               env=subprocess_env(threads=1), cwd=work, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait("Snakemake to report the failed job",
              lambda: "Error in rule bad" in log.read_text(), 240, every=0.5)
        ids = dict(re.findall(r"\((\S+)\) submitted as SLURM job (\d+)", log.read_text()))
        slow = next(i for name, i in ids.items() if "slow" in name)
        assert _squeue(TAG + "fail-").get(slow, ("", ""))[1] == "RUNNING", log.read_text()
        failed.touch()
        assert smk.wait(timeout=240) != 0
    finally:
        if smk.poll() is None:
            os.killpg(smk.pid, signal.SIGKILL)
    text = log.read_text()
    assert (work / "out/slow.txt").read_text().strip() == slow, text[-3000:]
    assert _sacct([slow])[slow] == "COMPLETED", text[-3000:]
    assert "Cancelling" not in text, text[-3000:]
    assert not any("after" in name for name in ids) and "rule after" not in text, text[-3000:]
    bad = next(i for name, i in ids.items() if "bad" in name)
    assert f"logs/submitit/{bad}_0_log.err" in text, text[-3000:]
    assert not _squeue(TAG + "fail-")


# ---- slurmdbd lagging: sacct does not know the jobs for a while ----------------------------------

LAGGING_SACCT = """#!/bin/bash
# sacct of a cluster whose slurmdbd lags: no rows for the first {lag} s (from its first call).
[ -e {start} ] || date +%s > {start}
if (( $(date +%s) - $(cat {start}) < {lag} )); then exit 0; fi
exec {real} "$@"
"""


@pytest.mark.slow
def test_late_sacct_does_not_fail_the_run(cluster, tmp_path):
    """sacct reports nothing for 60 s, far past a grace of 8 s: squeue still lists the job, so
    the plugin warns and waits, and the run succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sacct"
    fake.write_text(LAGGING_SACCT.format(lag=60, start=tmp_path / "sacct-start",
                                         real=shutil.which("sacct")))
    fake.chmod(0o755)
    work = _workflow(tmp_path / "wf", """
rule late:
    output: "out/late.txt"
    resources: runtime=10, mem_mb=300, cpus_per_task=1
    shell: "sleep 20; echo $SLURM_JOB_ID > {output}"
""")
    env = subprocess_env(threads=1)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    cmd = _snakemake_cmd(work, "-s", str(work / "Snakefile"), "--configfile",
                         str(work / "none.yaml"), "--submitit-jobname-prefix", TAG + "late-",
                         "--submitit-sacct-grace-s", "8")
    proc = _run(cmd, timeout=300, env=env, cwd=work)
    ended = time.time()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    jobid = re.search(r"submitted as SLURM job (\d+)", log).group(1)
    assert (work / "out/late.txt").read_text().strip() == jobid
    assert f"sacct has not reported SLURM job {jobid}" in log, log[-4000:]
    assert "squeue lists it as" in log, log[-4000:]
    # sacct was silent far longer than the grace while the job ran (20 s of it sleeping).
    assert min(ended - int((tmp_path / "sacct-start").read_text()), 60) > 8 + 10


# ---- multi-GPU: a rule with gpu: 2 runs two data-parallel processes ------------------------------

@pytest.mark.slow
def test_two_gpu_rule_trains_with_two_processes(cluster, tmp_path, tiny_config_dict):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(
        threads=1, initializer={"dropout": 0.0},
        train={"iterations": 6, "batch_size": 64, "ckpt_every": 3})))
    work = _workflow(tmp_path / "wf", f"""
rule train:
    output: "runs/ddp/final.json"
    resources: runtime=10, mem_mb=2000, gpu=2, cpus_per_task=1
    shell: "python -m cdrl train --config {cfg} --run-dir runs/ddp --no-progress"
""")
    proc = _smk(work, "--submitit-jobname-prefix", TAG + "ddp-", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert json.loads((work / "runs/ddp/final.json").read_text())["world_size"] == 2
    ref = _run([sys.executable, "-m", "cdrl", "train", "--config", str(cfg), "--run-dir",
                str(tmp_path / "ref"), "--no-progress"], timeout=300,
               env=subprocess_env(threads=1, CDRL_NPROC="1"))
    assert ref.returncode == 0, ref.stderr[-2000:]
    got = float_leaves(load_latest(work / "runs/ddp", map_location="cpu")["method"])
    want = float_leaves(load_latest(tmp_path / "ref", map_location="cpu")["method"])
    assert got.keys() == want.keys()
    for key, val in want.items():
        torch.testing.assert_close(got[key], val, rtol=1e-3, atol=1e-4, msg=key)


# ---- helpers of the rehearsal below: GPU jobs and tables ------------------------------------------

def _gpu_jobs(work: Path) -> list[str]:
    ids = re.findall(r"submitted as SLURM job (\d+)",
                     "".join(p.read_text() for p in (work / ".snakemake/log").glob("*.log")))
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,Partition,AllocTRES",
                *[f"-j{i}" for i in ids]], timeout=30).stdout
    return [line for line in out.splitlines() if "gres/gpu" in line]


# Measured, not computed: wall-clock time and peak memory differ between any two runs, and so
# does a claims row about time ("at equal sampling time" pairs configurations by measured speed).
MEASURED = re.compile(r"sec|seconds|hours|time|mem", re.IGNORECASE)


def _table(path: Path) -> list[dict]:
    """A CSV table without its measured columns and rows (time, memory)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not MEASURED.search(k or "")}
                for row in csv.DictReader(f)
                if not MEASURED.search((row.get("quantity") or "") + (row.get("statement") or ""))]


# ---- the paper preset rehearsed on the cluster, with faults injected -----------------------------

PAPER = ROOT / "workflow" / "config" / "paper.yaml"
REHEARSAL = ROOT / "workflow" / "config" / "overrides" / "rehearsal.yaml"
# The training jobs (seed 0) the faults hit, one fault each.
SIGTERM_RUN, USR2_RUN, FAIL_RUN = "cifar10_cdrl_k30", "celeba64_drl", "imagenet32_cdrl"
SACCT_LAG_S = 90   # sacct answers nothing for the first 90 s: most of the training phase


def _rehearse(work: Path, data: Path, label: str | None, *args, env=None) -> subprocess.Popen:
    """The paper preset with the rehearsal override in ``work`` (fake datasets from ``data``):
    through the slurm profile with job names ``TAG<label>-``, or with ``label`` None on this
    machine (``--cores 2``, no cluster). Snakemake's output goes to ``work/snakemake.log``."""
    (work / "resources").mkdir(parents=True)
    (work / "resources" / "datasets").symlink_to(data)
    cmd = ([*SNAKEMAKE, "-d", str(work), "--cores", "2"] if label is None else
           _snakemake_cmd(work, "--submitit-jobname-prefix", f"{TAG}{label}-"))
    cmd += [*args, "-s", str(ROOT / "Snakefile"), "all", "--configfile", str(PAPER),
            str(REHEARSAL)]
    with open(work / "snakemake.log", "w") as log:
        return subprocess.Popen(cmd, env=env or subprocess_env(threads=1), cwd=work, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _trainings(work: Path) -> dict[str, tuple[int, str]]:
    """The `cdrl train` processes of the workflow in ``work``: run -> (pid, SLURM job id), for
    seed 0. Read from /proc: the cluster runs on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[1:4] != [b"-m", b"cdrl", b"train"] or os.readlink(entry / "cwd") != str(work):
                continue
            env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0")
                       if b"=" in kv)
        except (OSError, ValueError):  # not a process, or one that just ended
            continue
        run, seed = Path(argv[argv.index(b"--run-dir") + 1].decode()).parts[-2:]
        if seed == "seed0" and b"SLURM_JOB_ID" in env:
            found[run] = (int(entry.name), env[b"SLURM_JOB_ID"].decode())
    return found


def _release_requeued(prefix: str) -> None:
    """Requeued jobs of this workflow still held for cred_expire start 2 s from now (``_release``);
    a job already released is left alone (its start is under 5 s away)."""
    out = _run(["squeue", "-h", "-t", "PENDING", "-o", "%i|%j|%r|%S"], timeout=30).stdout
    soon = datetime.datetime.now() + datetime.timedelta(seconds=5)
    for line in out.splitlines():
        jobid, name, reason, start = line.split("|", 3)
        try:
            held = datetime.datetime.fromisoformat(start) > soon
        except ValueError:  # N/A: no start time (for a moment after an update)
            held = False
        if name.startswith(prefix) and "BeginTime" in reason and held:
            _release(jobid)


class _Faults:
    """Injects the rehearsal's faults into a running workflow, each once, when the training step
    of its run is seen running; ``poll`` is called every half second until the workflow ends.

    - fail: the step is killed (SIGKILL, like the kernel's out-of-memory killer) once its first
      checkpoint is on disk; the train rule's retry (``retries: 1``, honoured by the Snakemake
      that runs inside the SLURM job) resumes from that checkpoint in the same job;
    - usr2: ``scancel --signal=USR2``, a preemption as submitit sees one: requeued;
    - sigterm: its train job alone runs on the `preemptible` partition; a job on `urgent` needing
      the node preempts it (PreemptMode=REQUEUE: SIGCONT, SIGTERM) and SLURM requeues it. The
      step is stopped (SIGSTOP) until then, so a step of a few seconds cannot end first; SLURM's
      SIGCONT (or ours, once preempted) lets it take the SIGTERM.
    """

    def __init__(self, work: Path, prefix: str) -> None:
        self.work, self.prefix = work.resolve(), prefix
        self.jobs: dict[str, list[str]] = {}       # run -> SLURM job ids seen, oldest first
        self.done: set[str] = set()
        self.stopped: tuple[int, str] | None = None  # the sigterm target, held until preempted
        self.urgent: str | None = None

    def poll(self) -> None:
        for run, (pid, jobid) in _trainings(self.work).items():
            if jobid not in self.jobs.setdefault(run, []):
                self.jobs[run].append(jobid)
            if run == FAIL_RUN and "fail" not in self.done:
                self._once_written(pid, run, "latest.json")  # the first checkpoint
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.done.add("fail")
            elif run == USR2_RUN and "usr2" not in self.done:
                self._once_written(pid, run, "stats.jsonl")  # training: the step's handler is on
                assert _run(["scancel", "--signal=USR2", jobid], timeout=30).returncode == 0
                self.done.add("usr2")
            elif run == SIGTERM_RUN and "sigterm" not in self.done:
                self._once_written(pid, run, "stats.jsonl")
                os.kill(pid, signal.SIGSTOP)
                self.stopped = (pid, jobid)
                urgent = _run(["sbatch", "--parsable", "-p", "urgent", "-c", str(_node_cpus()),
                               "--mem=100", "-J", self.prefix + "urgent", "-o", "/dev/null",
                               "--wrap", "sleep 2"], timeout=30)
                assert urgent.returncode == 0, urgent.stderr
                self.urgent = urgent.stdout.strip()
                self.done.add("sigterm")
        if self.stopped and "PREEMPTED" in _attempts(self.stopped[1]):
            self.resume()
        _release_requeued(self.prefix)

    def _once_written(self, pid: int, run: str, name: str) -> None:
        """Wait until the run directory has ``name`` (or the step ended). Polled fast: a few
        iterations of a second or less are left then."""
        path = self.work / "results" / "runs" / run / "seed0" / name
        end = time.monotonic() + 120
        while not path.exists() and Path(f"/proc/{pid}").exists() and time.monotonic() < end:
            time.sleep(0.01)

    def resume(self) -> None:
        if self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.stopped[0], signal.SIGCONT)
            self.stopped = None


def _sacct_lagging(tmp_path: Path) -> dict:
    """The environment of a Snakemake whose sacct prints nothing for SACCT_LAG_S."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sacct"
    fake.write_text(LAGGING_SACCT.format(lag=SACCT_LAG_S, start=tmp_path / "sacct-start",
                                         real=shutil.which("sacct")))
    fake.chmod(0o755)
    env = subprocess_env(threads=1)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def _finish(smk: subprocess.Popen, work: Path, timeout: float, faults: _Faults | None = None):
    """Wait for a rehearsal (polling ``faults``); its log. Killed (with its jobs) on failure."""
    end = time.monotonic() + timeout
    try:
        while smk.poll() is None:
            assert time.monotonic() < end, f"rehearsal in {work} took over {timeout:.0f} s"
            if faults:
                faults.poll()
            time.sleep(0.5)
    finally:
        if faults:
            faults.resume()
        if smk.poll() is None:
            smk.send_signal(signal.SIGINT)  # Snakemake cancels its jobs
            with contextlib.suppress(subprocess.TimeoutExpired):
                smk.wait(timeout=60)
        if smk.poll() is None:
            os.killpg(smk.pid, signal.SIGKILL)
    text = (work / "snakemake.log").read_text()
    assert smk.returncode == 0, text[-6000:]
    return text


@pytest.mark.slow
def test_paper_preset_rehearsal_survives_faults(cluster, tmp_path):
    """The paper preset's DAG (the rehearsal override: tiny sizes, every rule and run, sharded
    sampling, shorter sweeps; its plan is checked against the paper preset's in
    tests/test_rehearsal.py) run twice: on this machine without a cluster, and on the cluster
    with a SIGTERM preemption, a USR2 preemption, a failed step that is retried, and sacct
    answering late. Every result comes out, and every table equals the local run's: neither
    the faults nor SLURM change a number. (The local run is the clean reference: it costs
    two-thirds of a clean cluster run here, and the plugin's clean path is the faulted run's
    too, less the faults.)"""
    from cdrl.data.fake_formats import write_all

    data = write_all(tmp_path / "datasets", per_file=8)
    clean = tmp_path / "clean"
    started = time.monotonic()
    _finish(_rehearse(clean, data, None), clean, timeout=2400)
    clean_s = time.monotonic() - started

    work = tmp_path / "faults"
    prefix = f"{TAG}faults-"
    # Only the sigterm target may be preempted: the other faults stay one each.
    preemptible = (f"train:slurm_partition='preemptible' if (wildcards.run, wildcards.seed) == "
                   f"('{SIGTERM_RUN}', '0') else 'gpu'")
    smk = _rehearse(work, data, "faults", "--set-resources", preemptible,
                    "--submitit-sacct-grace-s", "30", env=_sacct_lagging(tmp_path))
    faults = _Faults(work, prefix)
    log = _finish(smk, work, timeout=max(2400, 2 * clean_s), faults=faults)
    assert faults.done == {"fail", "usr2", "sigterm"}, (faults.done, faults.jobs)
    assert _sacct([faults.urgent]) == {faults.urgent: "COMPLETED"}
    assert not _squeue(prefix)
    # GPU rules went to the gpu partition with a GPU, the others (merges) stayed local.
    gpu = _gpu_jobs(work)
    assert len(gpu) >= 21 + 58 and all("|gpu|" in j or "|preemptible|" in j for j in gpu), gpu
    assert "localrule merge_samples:" in log and "rule sample_shard:" in log

    # sigterm: preempted by the urgent job, requeued by SLURM, completed; the step saw SIGTERM.
    (term,) = faults.jobs[SIGTERM_RUN]
    attempts = _attempts(term)
    assert attempts[0] == "PREEMPTED" and attempts[-1] == "COMPLETED", attempts
    text = _job_logs(work, term)
    for expected in ("DUE TO PREEMPTION", "SIGTERM (preemption", "SLURM restart count 1"):
        assert expected in text, f"{expected!r} not in the job's logs:\n{text[-3000:]}"
    # usr2: submitit took it for a preemption (not a time-out) and requeued the job.
    (usr2,) = faults.jobs[USR2_RUN]
    attempts = _attempts(usr2)
    assert "REQUEUED" in attempts and attempts[-1] == "COMPLETED", attempts
    text = _job_logs(work, usr2)
    assert "this job is preempted" in text and "Requeued job" in text, text[-3000:]
    # fail: the killed step failed, the rule's retry resumed from the checkpoint and completed.
    (failed,) = faults.jobs[FAIL_RUN]
    assert _sacct([failed])[failed] == "COMPLETED", faults.jobs[FAIL_RUN]
    text = _job_logs(work, failed)
    assert "Error in rule train" in text and "Trying to restart job" in text, text[-3000:]
    attempts = (work / "logs" / "train" / FAIL_RUN / "seed0.attempts.log").read_text()
    first, retry = attempts.split(f"cdrl train {FAIL_RUN} seed0")[1:]
    assert "iteration 2/4" in first and "iteration 4/4" not in first, attempts
    assert "iteration 4/4" in retry and "iteration 1/4" not in retry, attempts
    # sacct late: the plugin waited on squeue's word.
    assert "sacct has not reported SLURM job" in log and "squeue lists it as" in log, log[-6000:]

    # Nothing lost: every result of the clean run (checkpoints aside), and equal tables.
    def results(root):
        return {p.relative_to(root) for p in (root / "results").rglob("*")
                if "runs" not in p.relative_to(root).parts[:2]}

    assert results(clean) == results(work)
    # C9 on CelebA: the attribute classifier trained on the fake labels scored every setting.
    compose = clean / "results/downstream/compose/celeba64_compose-seed0.json"
    res = json.loads(compose.read_text())
    assert list(res["settings"]) == ["composed", "Male", "Smiling", "Young", "unconditional"]
    keys = {"frac_Male", "frac_Smiling", "frac_Young", "frac_intersection"}
    assert all(set(v) == keys for v in res["settings"].values()), res
    side = json.loads((clean / "results/classifiers/celeba64-attributes.pth.json").read_text())
    assert res["classifier"]["sha256"] == side["sha256"]
    assert set(res["classifier"]["heldout"]["per_attribute"]) == {"Male", "Smiling", "Young"}
    tables = sorted(p.relative_to(clean) for p in (clean / "results" / "tables").glob("*.csv"))
    assert len(tables) >= 8, tables
    for rel in tables:
        assert _table(work / rel) == _table(clean / rel), rel
    # The interrupted runs ended where the clean ones did, bit for bit.
    for run in (SIGTERM_RUN, USR2_RUN, FAIL_RUN):
        got = load_latest(work / "results" / "runs" / run / "seed0", map_location="cpu")
        want = load_latest(clean / "results" / "runs" / run / "seed0", map_location="cpu")
        assert got["iteration"] == want["iteration"] == 4, run
        assert not state_differences(want["method"], got["method"]), run
