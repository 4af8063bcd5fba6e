"""The submitit executor plugin without a cluster: resource mapping, extra sbatch options, job
names and attaching, job states, the job wrapper's SIGTERM, the profile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
from snakemake_executor_plugin_submitit import ExecutorSettings
from snakemake_executor_plugin_submitit.names import (
    command_key,
    command_text,
    job_key,
    job_name,
    match_queue,
)
from snakemake_executor_plugin_submitit.resources import parse_sbatch_extra, submitit_parameters
from snakemake_executor_plugin_submitit.status import (
    PREEMPTED_LIMIT_S,
    RESULT_WAIT_S,
    JobStatus,
    parse_states,
)

from tests.conftest import ROOT, SNAKEMAKE, subprocess_env


def _settings(**over):
    return SimpleNamespace(**{**vars(ExecutorSettings()), **over})


def test_gpu_rule_goes_to_the_gpu_partition_with_its_resources():
    p = submitit_parameters({"gpu": 2, "runtime": 2880, "mem_mb": 64000}, 8, "smk-train-x",
                            _settings(account="lab"))
    assert p["gpus_per_node"] == 2 and p["slurm_partition"] == "gpu"
    assert p["timeout_min"] == 2880 and p["slurm_mem"] == "64000M"
    assert p["cpus_per_task"] == 8 and p["tasks_per_node"] == 1 and p["slurm_account"] == "lab"
    typed = submitit_parameters({"gpu": 2, "gpu_model": "h100"}, 1, "n", _settings())
    assert typed["slurm_gres"] == "gpu:h100:2" and "gpus_per_node" not in typed


def test_cpu_rule_and_overrides():
    p = submitit_parameters({"mem_mb": 1000, "cpus_per_task": 3}, 1, "n",
                            _settings(cpu_partition="short", default_runtime=30))
    assert p["slurm_partition"] == "short" and p["timeout_min"] == 30 and p["cpus_per_task"] == 3
    assert "gpus_per_node" not in p and "slurm_gres" not in p
    q = submitit_parameters({"slurm_partition": "debug", "gpu": 1}, 1, "n", _settings())
    assert q["slurm_partition"] == "debug"


def test_every_job_is_requeueable():
    p = submitit_parameters({}, 1, "n", _settings())
    assert p["slurm_additional_parameters"] == {"requeue": True}


# ---- per-job requeue budget: the resource max_requeue over submitit-max-requeue -------------------

def test_max_requeue_resource_overrides_the_profile():
    from snakemake_executor_plugin_submitit import max_requeue

    assert max_requeue({"max_requeue": 14}, 3) == 14
    assert max_requeue({"max_requeue": "0"}, 3) == 0
    assert max_requeue({}, 3) == 3 == max_requeue({"max_requeue": None}, 3)
    for bad in (-1, "many", 2.5):
        with pytest.raises(ValueError, match="max_requeue"):
            max_requeue({"max_requeue": bad}, 3)


def test_submission_passes_the_jobs_requeue_budget_to_submitit(tmp_path, monkeypatch):
    import snakemake_executor_plugin_submitit as plugin

    made = []

    class FakeExecutor:
        def __init__(self, **kwargs):
            self.kwargs, self.params = kwargs, {}
            made.append(self)

        def update_parameters(self, **params):
            self.params.update(params)

        def submit(self, task):
            return SimpleNamespace(job_id=str(100 + len(made)))

    monkeypatch.setattr(plugin.submitit, "AutoExecutor", FakeExecutor)
    ex = plugin.Executor.__new__(plugin.Executor)  # no workflow: only _sbatch is exercised
    ex.settings, ex.folder, ex.workdir = _settings(max_requeue=3), tmp_path, str(tmp_path)
    ex.format_job_exec = lambda job: "true"
    train = SimpleNamespace(resources={"gpu": 8, "runtime": 2880, "max_requeue": 14},
                            threads=32, jobid=1)
    other = SimpleNamespace(resources={"gpu": 1, "runtime": 180}, threads=8, jobid=2)
    assert ex._sbatch(train, "smk-train-x") == "101"
    assert ex._sbatch(other, "smk-sample_shard-x") == "102"
    assert [m.kwargs["slurm_max_num_timeout"] for m in made] == [14, 3]
    assert made[0].params["timeout_min"] == 2880
    broken = SimpleNamespace(resources={"max_requeue": -2}, threads=1, jobid=3)
    with pytest.raises(plugin.WorkflowError, match="max_requeue"):
        ex._sbatch(broken, "smk-train-y")


# ---- extra sbatch options ------------------------------------------------------------------------

def test_sbatch_extra_forms_and_quoting():
    got = parse_sbatch_extra('--mail-type=END,FAIL --comment "two words" --exclusive '
                             "--begin=now+1hour --nice='5'", "x")
    assert got == {"mail-type": "END,FAIL", "comment": "two words", "exclusive": True,
                   "begin": "now+1hour", "nice": "5"}
    assert parse_sbatch_extra(None, "x") == {} == parse_sbatch_extra("  ", "x")
    # A flag followed by an option stays a flag.
    assert parse_sbatch_extra("--exclusive --time-min=30", "x") == {
        "exclusive": True, "time-min": "30"}


@pytest.mark.parametrize("text", [
    "--partition=gpu", "--time 10", "--mem=4G", "--gres=gpu:1", "--gpus=2", "--job-name=x",
    "--output=o.txt", "--cpus-per-task=4", "--export=NONE", "--signal=USR1@60", "--no-requeue",
    "--part=gpu",            # sbatch would expand the abbreviation to --partition
    "--m=1G",                # ambiguous abbreviation of reserved options
])
def test_sbatch_extra_refuses_what_the_plugin_sets(text):
    with pytest.raises(ValueError, match="set by the plugin"):
        parse_sbatch_extra(text, "submitit-sbatch-extra")


@pytest.mark.parametrize("text", ["-p gpu", "--comment=x stray", "--comment='unclosed", "--"])
def test_sbatch_extra_refuses_short_options_stray_words_and_bad_quoting(text):
    with pytest.raises(ValueError, match="slurm_extra of smk-train"):
        parse_sbatch_extra(text, "slurm_extra of smk-train")


def test_rule_slurm_extra_adds_to_the_profile_and_wins():
    p = submitit_parameters({"slurm_extra": "--comment=rule --hold"}, 1, "n",
                            _settings(sbatch_extra="--comment=profile --mail-type=END"))
    assert p["slurm_additional_parameters"] == {
        "requeue": True, "comment": "rule", "mail-type": "END", "hold": True}
    with pytest.raises(ValueError, match="slurm_extra of n"):
        submitit_parameters({"slurm_extra": "--qos=high"}, 1, "n", _settings())


# ---- names: where (outputs) and what (command and inputs) ----------------------------------------

def _job(shellcmd=None, inputs=(), rule="train", params=None, script=None):
    return SimpleNamespace(shellcmd=shellcmd, input=list(inputs), is_group=lambda: False,
                           rule=SimpleNamespace(name=rule, script=script),
                           params=params if params is not None else [])


def _what(job) -> str:
    return command_key(command_text(job), job.input)


def test_job_names_are_stable_and_distinct(tmp_path):
    a = job_key(str(tmp_path), ["b.txt", "a.txt"])
    assert a == job_key(str(tmp_path), ["a.txt", "b.txt"])
    assert a != job_key(str(tmp_path), ["a.txt"]) != job_key("/elsewhere", ["a.txt"])
    what = _what(_job("cdrl train --config c.yaml"))
    assert job_name("smk-", "train", a, what) == f"smk-train-{a}-{what}"


def test_attach_key_includes_the_command_and_its_inputs(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-4\n")
    base = _what(_job("cdrl train --config c.yaml --seed 0", [cfg]))
    assert base == _what(_job("cdrl train --config c.yaml --seed 0", [cfg]))
    # Another command: another name, so a re-run never attaches to the old job.
    assert base != _what(_job("cdrl train --config c.yaml --seed 1", [cfg]))
    # The same command reading a changed config (the train rule's case) is other work too...
    cfg.write_text("lr: 2e-4\n")
    changed = _what(_job("cdrl train --config c.yaml --seed 0", [cfg]))
    assert changed != base
    # ...but rewriting the same content is not: small inputs count by content, not time.
    cfg.write_text("lr: 2e-4\n")
    os.utime(cfg, ns=(1, 1))
    assert _what(_job("cdrl train --config c.yaml --seed 0", [cfg])) == changed


def test_script_rules_are_named_by_script_and_params():
    from snakemake.iocontainers import Namedlist

    def what(script, cfg):
        return _what(_job(script=script, params=Namedlist(fromdict={"cfg": cfg, "f": print})))

    p1 = what("../scripts/t.py", {"lr": 1})
    assert p1 == what("../scripts/t.py", {"lr": 1})   # objects (print) count by type only
    assert p1 != what("../scripts/t.py", {"lr": 2}) != what("../scripts/u.py", {"lr": 2})
    assert "params:" in command_text(_job(rule="tables"))


def test_large_inputs_count_by_size_and_time(tmp_path, monkeypatch):
    import snakemake_executor_plugin_submitit.names as names

    monkeypatch.setattr(names, "SMALL_INPUT", 4)
    big = tmp_path / "samples.npz"
    big.write_bytes(b"0123456789")
    os.utime(big, ns=(10**18, 10**18))
    a = _what(_job("cdrl evaluate", [big]))
    os.utime(big, ns=(2 * 10**18, 2 * 10**18))
    assert _what(_job("cdrl evaluate", [big])) != a
    assert _what(_job("cdrl evaluate", [tmp_path / "missing"])) != a


def test_group_jobs_hash_every_member_in_a_stable_order():
    one, two = _job("step one"), _job("step two")
    group = SimpleNamespace(jobs=[one, two], is_group=lambda: True)
    swapped = SimpleNamespace(jobs=[two, one], is_group=lambda: True)
    assert command_text(group) == command_text(swapped) == "shell: step one\nshell: step two"


def test_queue_matching_attaches_same_names_and_cancels_other_commands():
    want = ["smk-train-aaaaaaaaaaaa-11111111", "smk-eval-bbbbbbbbbbbb-22222222"]
    rows = [("100", "smk-train-aaaaaaaaaaaa-11111111"),   # same work: attach
            ("101", "smk-train-aaaaaaaaaaaa-99999999"),   # same outputs, old command: cancel
            ("102", "smk-eval-cccccccccccc-22222222"),    # other outputs: leave alone
            ("103_1", "smk-eval-bbbbbbbbbbbb-22222222"),  # array task: ignored
            ("104", "smk-eval-bbbbbbbbbbbb-22222222"),    # ended earlier in this run: skipped
            ("105", "other-job")]
    got = match_queue(rows, want, skip={"104"})
    assert got["smk-train-aaaaaaaaaaaa-11111111"].attach == "100"
    assert got["smk-train-aaaaaaaaaaaa-11111111"].stale == ["101"]
    assert "smk-eval-bbbbbbbbbbbb-22222222" not in got
    # Two live jobs of one name (an old duplicate): attach to the newest, cancel the other.
    dup = match_queue([("7", want[0]), ("9", want[0]), ("8", want[0])], want)[want[0]]
    assert dup.attach == "9" and sorted(dup.stale) == ["7", "8"]


# ---- job states -----------------------------------------------------------------------------------

def test_parse_states():
    text = "123|RUNNING\n124|CANCELLED by 0\n125|\n\nnoise\n126|completed\n"
    assert parse_states(text) == {"123": "RUNNING", "124": "CANCELLED", "126": "COMPLETED"}


def test_late_sacct_is_waited_for_and_squeue_keeps_a_job_alive():
    st = JobStatus("7", since=0.0)
    assert st.verdict(None, None, "PENDING", 5.0, grace_s=100) == (None, None)
    # sacct silent for a minute: one warning, still waiting, however long squeue lists it.
    verdict, warning = st.verdict(None, None, "RUNNING", 61.0, grace_s=100)
    assert verdict is None and "sacct has not reported SLURM job 7" in warning
    assert "squeue lists it as RUNNING" in warning
    assert st.verdict(None, None, "RUNNING", 1000.0, grace_s=100) == (None, None)
    # Neither lists it: waited for up to the grace after squeue last did, then failed.
    assert st.verdict(None, None, None, 1090.0, grace_s=100) == (None, None)
    verdict, _ = st.verdict(None, None, None, 1101.0, grace_s=100)
    assert "neither sacct nor squeue has reported SLURM job 7 for 101 s" in verdict
    # A result file decides whatever the queues say.
    assert JobStatus("8", since=0).verdict("ok", None, None, 10**6, 1)[0] == "ok"


def test_unknown_job_warns_once_then_fails_after_the_grace():
    st = JobStatus("7", since=0.0)
    warnings = [st.verdict(None, None, None, t, grace_s=3600)[1] for t in (30, 61, 120, 3000)]
    assert warnings[0] is None and warnings[1] and warnings[2:] == [None, None]
    assert "squeue does not list it either" in warnings[1]
    assert st.verdict(None, None, None, 3601.0, grace_s=3600)[0].startswith("neither sacct")
    # sacct catching up resets the warning.
    st2 = JobStatus("9", since=0.0)
    st2.verdict(None, None, None, 61.0, 3600)
    assert st2.verdict(None, "RUNNING", None, 62.0, 3600) == (None, None)
    assert st2.verdict(None, None, None, 200.0, 3600)[1]


def test_requeue_after_preemption_is_not_a_failure():
    st = JobStatus("7", since=0.0)
    # sacct's newest record is still the preempted attempt while squeue has it pending again.
    assert st.verdict(None, "PREEMPTED", "COMPLETING", 10.0, 3600) == (None, None)
    assert st.verdict(None, "PREEMPTED", "PENDING", 12.0, 3600) == (None, None)
    assert st.verdict(None, "REQUEUED", None, 14.0, 3600) == (None, None)
    assert st.verdict(None, "NODE_FAIL", "PENDING", 15.0, 3600) == (None, None)
    # Preempted and never requeued (PreemptMode=CANCEL): failed after a while.
    gone = JobStatus("8", since=0.0)
    assert gone.verdict(None, "PREEMPTED", None, 1.0, 3600) == (None, None)
    assert "preempted and not requeued" in gone.verdict(
        None, "PREEMPTED", "PREEMPTED", 2.0 + PREEMPTED_LIMIT_S, 3600)[0]


def test_final_states():
    assert JobStatus("7", 0).verdict(None, "FAILED", None, 1, 3600)[0] == (
        "SLURM job 7 ended in state FAILED")
    assert "CANCELLED" in JobStatus("7", 0).verdict(None, None, "CANCELLED", 1, 3600)[0]
    done = JobStatus("7", 0)
    assert done.verdict(None, "COMPLETED", None, 1, 3600) == (None, None)  # result file lags
    assert "without a submitit result" in done.verdict(
        None, "COMPLETED", None, 2 + RESULT_WAIT_S, 3600)[0]


# ---- the job wrapper: SIGTERM means "stop, the job runs again", not a failure -------------------

WRAPPER = """
import sys
from snakemake_executor_plugin_submitit.job import ShellJob, CommandFailed
job = ShellJob(sys.argv[1], sys.argv[2], grace_s=20, label="t")
try:
    job()
except CommandFailed as err:
    print("FAILED:", err, flush=True)
    sys.exit(3)
print("RETURNED", flush=True)
"""

# A step that checkpoints on USR2 (ignored by the wrapper's shell, so it installs its own
# handler, like the trainer) and exits 1 with SystemExit.
STEP = textwrap.dedent("""
    import signal, sys, time, pathlib
    out = pathlib.Path(sys.argv[1])
    def stop(signum, frame):
        time.sleep(0.5)  # a checkpoint takes a moment
        out.write_text("checkpoint")
        sys.exit("stopped by signal")
    signal.signal(signal.SIGUSR2, stop)
    out.write_text("started")
    time.sleep(60)
""")


def _wrapper(tmp_path, command):
    return subprocess.Popen([sys.executable, "-c", WRAPPER, command, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigterm_makes_the_step_checkpoint_and_the_wrapper_exit_without_a_result(tmp_path):
    (tmp_path / "step.py").write_text(STEP)
    marker = tmp_path / "marker"
    proc = _wrapper(tmp_path, f"{sys.executable} step.py {marker}")
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text() == "started"):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)   # only the wrapper: it forwards USR2 to the step
    out, _ = proc.communicate(timeout=60)
    assert marker.read_text() == "checkpoint"
    assert proc.returncode == 1, out
    assert "forwarding SIGUSR2" in out and "exiting without a result" in out, out
    assert "FAILED" not in out and "RETURNED" not in out, out


@pytest.mark.slow
def test_a_failing_command_is_still_a_failure(tmp_path):
    out, _ = _wrapper(tmp_path, "exit 7").communicate(timeout=60)
    assert "FAILED: t: command exited with status 7" in out, out


@pytest.mark.slow
def test_profile_dry_run_of_the_paper_preset(tmp_path):
    """The profile's keys are valid Snakemake options (a dry run submits nothing)."""
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"),
                           "--profile", str(ROOT / "slurm"), "-n", "all",
                           # The data are not staged here; the profile is what is checked.
                           "--config", "preflight=False"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "train" in proc.stdout
