"""Snakemake executor plugin: every Snakemake job becomes one submitit job on SLURM.

    snakemake --profile slurm all            # slurm/config.yaml sets `executor: submitit`

- Submission: ``submitit.AutoExecutor(cluster="slurm")`` with parameters from the job's standard
  resources (``resources.py``), ``--requeue``, and extra sbatch options from
  ``submitit-sbatch-extra`` and the per-rule resource ``slurm_extra``. The job runs a pickled
  ``ShellJob`` (``job.py``) that runs the usual ``python -m snakemake --target-jobs ...
  --mode remote`` command in the working directory.
- Names: ``<prefix><rule>-<where>-<what>`` (``names.py``): ``where`` hashes the working directory
  and the outputs, ``what`` the job's command and inputs. Before submitting, this user's queued
  and running jobs are looked up (one ``squeue``): a job of the same name is attached to instead
  of submitting again, so re-running a workflow whose jobs are still on the cluster never
  duplicates them; a job for the same outputs with another command is cancelled.
- State (``status.py``): a job is done when its submitit result file exists (success, or the
  step's exception); otherwise one ``sacct`` call per status check for all jobs, and ``squeue``
  for jobs sacct does not show pending or running. A job neither lists (slurmdbd lags on busy
  clusters) is waited for, with a warning, up to ``submitit-sacct-grace-s``.
- Requeue: SLURM signals USR2 ``submitit-signal-delay-s`` before the time limit; submitit asks
  ``ShellJob.checkpoint``, which makes the running step checkpoint, and requeues the job, at
  most ``submitit-max-requeue`` times, or as often as the job's own resource ``max_requeue``
  says (``max_requeue``: the workflow sets it per training run from the run's estimated hours,
  ``cdrl.plan.budget.requeue_budget``). A preemption by SIGTERM (SLURM's default) or
  ``scontrol requeue`` is requeued by SLURM itself; the step checkpoints and the wrapper exits
  without a result, so the plugin keeps waiting and the next run resumes. Preemptions are not
  counted against max-requeue.
- Failure: a failed job is reported to Snakemake, which (without --keep-going) submits nothing
  new and waits for the running jobs to finish. Submission problems (sbatch refused the job,
  squeue failed) fail that job only.
- Cancel: Ctrl-C, an executor error, or Snakemake shutting down with jobs still active cancels
  every job this run submitted or attached (one ``scancel``).
- Logs: the submission line of every job in the Snakemake log names its submitit log files
  ``<logdir>/<jobid>_0_log.{out,err}``; failures repeat them. One flat folder, not submitit's
  usual ``<logdir>/%j/``: submitit makes a job's ``%j`` folder only after sbatch returns, and a
  job that SLURM starts first cannot open its output file and fails at launch (FAILED,
  JobLaunchFailure, no log at all). The flat folder exists before the first sbatch
  (``job_folder``).
"""

# No `from __future__ import annotations`: Snakemake reads the settings' field types at run time.
import os
import pickle
import subprocess
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import submitit
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase
from submitit.core.utils import JobPaths

from .job import ShellJob
from .names import command_key, command_text, job_key, job_name, match_queue
from .resources import parse_sbatch_extra, submitit_parameters
from .status import ALIVE, JobStatus, parse_states

__all__ = ["Executor", "ExecutorSettings", "common_settings", "job_folder", "max_requeue"]

SLURM_TIMEOUT_S = 60        # one squeue / sacct / scancel call
SACCT_CHUNK = 200           # job ids per sacct call
WARN_EVERY_S = 600          # repeat a failing status command's warning at most this often
# Snakemake builds argparse types from the fields: typing.Optional works, `str | None` does not.
OptStr = Optional[str]  # noqa: UP045


def _opt(help_text: str, env: bool = True) -> dict:
    return {"help": help_text, "env_var": env}


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    logdir: str = field(default="logs/submitit", metadata=_opt(
        "Folder of submitit's per-job files (<logdir>/<jobid>_*); on the shared file system."))
    cpu_partition: OptStr = field(default=None, metadata=_opt(
        "Partition of jobs without GPUs (default: the cluster's default partition)."))
    gpu_partition: OptStr = field(default="gpu", metadata=_opt(
        "Partition of jobs with resources gpu > 0."))
    account: OptStr = field(default=None, metadata=_opt("SLURM account (-A)."))
    qos: OptStr = field(default=None, metadata=_opt("SLURM QOS."))
    constraint: OptStr = field(default=None, metadata=_opt("SLURM node constraint (-C)."))
    gpu_model: OptStr = field(default=None, metadata=_opt(
        "GPU type: gpu: N becomes --gres=gpu:<model>:N (the gres type in the cluster's "
        "gres.conf, e.g. a100, h100)."))
    default_runtime: int = field(default=60, metadata=_opt(
        "Time limit in minutes of jobs whose rule sets no runtime resource."))
    max_requeue: int = field(default=3, metadata=_opt(
        "How many times a job that reaches its time limit is checkpointed and requeued "
        "(preemptions are not counted)."))
    signal_delay_s: int = field(default=180, metadata=_opt(
        "Seconds before the time limit at which SLURM sends USR2 (SLURM may send it up to 60 s "
        "earlier)."))
    checkpoint_grace_s: int = field(default=120, metadata=_opt(
        "Seconds a signalled step may take to checkpoint and exit before it is killed; keep it "
        "below signal-delay-s."))
    setup: OptStr = field(default=None, metadata=_opt(
        "Shell lines run before each job, separated by ';' (e.g. 'module load cuda')."))
    jobname_prefix: str = field(default="smk-", metadata=_opt("Prefix of SLURM job names."))
    no_attach: bool = field(default=False, metadata=_opt(
        "Always submit, even when a queued or running job makes the same outputs."))
    sacct_grace_s: int = field(default=3600, metadata=_opt(
        "Seconds a job that neither sacct nor squeue lists is waited for before it counts as "
        "failed (slurmdbd lags by minutes on busy clusters; a warning says when it does)."))
    sbatch_extra: OptStr = field(default=None, metadata=_opt(
        "More sbatch options for every job, split like a shell would: '--mail-type=END "
        "--comment=\"a b\"'. A rule's resource slurm_extra adds to them (and wins). Options "
        "the plugin sets (partition, time, mem, gres, ...) are refused. On the command line "
        "join it with '=': --submitit-sbatch-extra='--mail-type=END'."))


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    # sbatch exports the submitting environment; the command need not repeat it.
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=2,
)


class Executor(RemoteExecutor):
    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings
        if self.settings.checkpoint_grace_s >= self.settings.signal_delay_s:
            raise WorkflowError("submitit-checkpoint-grace-s must be below "
                                "submitit-signal-delay-s: the checkpoint has to be written "
                                "before SLURM kills the job")
        try:
            parse_sbatch_extra(self.settings.sbatch_extra, "submitit-sbatch-extra")
        except ValueError as err:
            raise WorkflowError(str(err)) from err
        self.workdir = os.getcwd()
        self.folder = job_folder(self.settings.logdir)
        self._mine: dict[str, SubmittedJobInfo] = {}   # submitted or attached, not yet ended
        self._ended: set[str] = set()                  # never attach to these again
        self._mine_lock = threading.Lock()
        self._warned: dict[str, float] = {}            # command -> time of its last warning

    # ---- submission -------------------------------------------------------------------------

    def run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        names = {job: self._name(job) for job in jobs}
        try:
            queued = self._queued(set(names.values()))
        except WorkflowError as err:  # fail these jobs, not the run (and its running jobs)
            for job in jobs:
                self.report_job_error(SubmittedJobInfo(job=job), msg=str(err))
            return
        for job in jobs:
            self.run_job_pre(job)
            self._submit(job, names[job], queued.get(names[job]))

    def run_job(self, job: JobExecutorInterface) -> None:
        self.run_jobs([job])

    def _name(self, job: JobExecutorInterface) -> str:
        rule = job.groupid if job.is_group() else job.rule.name
        return job_name(self.settings.jobname_prefix, rule, job_key(self.workdir, job.output),
                        command_key(command_text(job), job.input))

    def _queued(self, names: set[str]) -> dict[str, str]:
        """Job ids to attach to, by name; cancels jobs for the same outputs with another command."""
        if self.settings.no_attach or not names:
            return {}
        out = self._slurm(["squeue", "-h", "--me", "-o", "%i|%j|%T"],
                          "cannot check for jobs already queued")
        rows = [line.strip().split("|") for line in out.splitlines() if line.count("|") == 2]
        with self._mine_lock:
            skip = self._ended | set(self._mine)
        # A COMPLETING job is over: its result is what it is, a re-run must not inherit it.
        live = [(i, n) for i, n, state in rows if state.split()[0] in ALIVE - {"COMPLETING"}]
        matches = match_queue(live, names, skip)
        stale = sorted({i for m in matches.values() for i in m.stale})
        if stale:
            self.logger.warning(f"Cancelling SLURM jobs {' '.join(stale)}: they make the same "
                                "outputs as jobs about to be submitted, from another command or "
                                "other inputs (an earlier Snakemake run's)")
            self._scancel(stale)
        return {name: m.attach for name, m in matches.items() if m.attach}

    def _submit(self, job: JobExecutorInterface, name: str, existing: str | None) -> None:
        if existing is not None:
            jobid, how = existing, "attached to queued/running SLURM job"
        else:
            try:
                jobid, how = self._sbatch(job, name), "submitted as SLURM job"
            except WorkflowError as err:
                self.report_job_error(SubmittedJobInfo(job=job), msg=str(err))
                return
        paths = JobPaths(self.folder, job_id=jobid)
        info = SubmittedJobInfo(job=job, external_jobid=jobid, aux={
            "paths": paths, "name": name, "status": JobStatus(jobid, since=time.time())})
        with self._mine_lock:
            self._mine[jobid] = info
        self.logger.info(f"Job {job.jobid} ({name}) {how} {jobid}; submitit log: "
                         f"{paths.stdout} (stderr {paths.stderr.name})")
        self.report_job_submission(info)

    def _sbatch(self, job: JobExecutorInterface, name: str) -> str:
        label = f"{name} (Snakemake job {job.jobid})"
        try:
            params = submitit_parameters(job.resources, job.threads, name, self.settings)
            requeues = max_requeue(job.resources, self.settings.max_requeue)
        except ValueError as err:
            raise WorkflowError(f"submitting {label}: {err}") from err
        ex = submitit.AutoExecutor(folder=self.folder, cluster="slurm",
                                   slurm_max_num_timeout=requeues)
        ex.update_parameters(**params)
        task = ShellJob(self.format_job_exec(job), self.workdir,
                        grace_s=self.settings.checkpoint_grace_s, label=label)
        try:
            # Submitting from inside a SLURM job must not leak its SLURM_* variables.
            with submitit.helpers.clean_env():
                return ex.submit(task).job_id
        except Exception as err:  # sbatch refused: a resource the cluster does not have, ...
            raise WorkflowError(f"submitting {label} failed: {err}") from err

    # ---- status -----------------------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> Generator[SubmittedJobInfo, None, None]:
        if not active_jobs:
            return
        results = {info.external_jobid: _result(info.aux["paths"]) for info in active_jobs}
        waiting = [jobid for jobid, result in results.items() if result is None]
        sacct: dict[str, str] = {}
        squeue: dict[str, str] = {}
        if waiting:
            async with self.status_rate_limiter:
                sacct = self._sacct(waiting)
                if any(sacct.get(jobid) not in ALIVE for jobid in waiting):
                    squeue = self._squeue_states()
        now = time.time()
        for info in active_jobs:
            jobid = info.external_jobid
            status: JobStatus = info.aux["status"]
            verdict, warning = status.verdict(results[jobid], sacct.get(jobid),
                                              squeue.get(jobid), now, self.settings.sacct_grace_s)
            if warning:
                self.logger.warning(warning)
            if verdict is None:
                yield info
                continue
            self._forget(info)
            if verdict == "ok":
                self.report_job_success(info)
                continue
            if results[jobid] is None and (sacct.get(jobid) or squeue.get(jobid)) in (
                    None, "PREEMPTED"):
                self._scancel([jobid])   # given up on, not known to have ended: end it
            paths: JobPaths = info.aux["paths"]
            self.report_job_error(info, msg=f"{verdict}\nsubmitit logs: {paths.stdout} and "
                                            f"{paths.stderr}\n")

    def _sacct(self, jobids: list[str]) -> dict[str, str]:
        states: dict[str, str] = {}
        for i in range(0, len(jobids), SACCT_CHUNK):
            ids = ",".join(jobids[i:i + SACCT_CHUNK])
            out = self._slurm(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ids],
                              "job states unknown this time", fail=False)
            states.update(parse_states(out))
        return states

    def _squeue_states(self) -> dict[str, str]:
        out = self._slurm(["squeue", "-h", "--me", "--states=all", "-o", "%i|%T"],
                          "job states unknown this time", fail=False)
        return parse_states(out)

    def _slurm(self, cmd: list[str], consequence: str, fail: bool = True) -> str:
        """stdout of a SLURM command; on failure a WorkflowError, or (fail=False) a warning and
        no output."""
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True,
                                  timeout=SLURM_TIMEOUT_S).stdout
        except (subprocess.SubprocessError, OSError) as err:
            detail = getattr(err, "stderr", None) or err
            if fail:
                raise WorkflowError(f"{cmd[0]} failed, {consequence}: {detail}") from err
            # Once per WARN_EVERY_S per command: a down slurmdbd fails every status check.
            if time.time() - self._warned.get(cmd[0], -WARN_EVERY_S) >= WARN_EVERY_S:
                self._warned[cmd[0]] = time.time()
                self.logger.warning(f"{cmd[0]} failed, {consequence}: {detail}")
            return ""

    def _forget(self, info: SubmittedJobInfo) -> None:
        with self._mine_lock:
            self._mine.pop(info.external_jobid, None)
            self._ended.add(info.external_jobid)

    # ---- cancel -----------------------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        self._cancel_all("the workflow was interrupted", extra=active_jobs)

    def _cancel_all(self, why: str, extra: list[SubmittedJobInfo] = ()) -> None:
        with self._mine_lock:
            ids = sorted(set(self._mine) | {i.external_jobid for i in extra if i.external_jobid})
        if not ids:
            return
        self.logger.info(f"Cancelling SLURM jobs {' '.join(ids)}: {why}")
        self._scancel(ids)
        with self._mine_lock:
            for jobid in ids:
                self._mine.pop(jobid, None)
                self._ended.add(jobid)

    def _scancel(self, ids: list[str]) -> None:
        try:
            subprocess.run(["scancel", *ids], check=False, timeout=SLURM_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as err:
            self.logger.error(f"scancel {' '.join(ids)} failed: {err}")

    def shutdown(self) -> None:
        super().shutdown()
        # Normal ends leave nothing here; an abnormal end must not leave unmanaged jobs.
        self._cancel_all("Snakemake is shutting down with jobs still on the cluster")


def max_requeue(resources, default: int) -> int:
    """Time-limit requeues of one job: its resource ``max_requeue`` where the rule sets one (a
    training run whose estimated hours need more attempts than the profile allows), else the
    profile's ``submitit-max-requeue`` (``default``). Raises ValueError for a negative or
    non-integer value."""
    value = resources.get("max_requeue") if resources is not None else None
    if value is None or value == "" or value == "None":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"resource max_requeue: expected a whole number, got {value!r}") from None
    if n < 0 or n != float(value):
        raise ValueError(f"resource max_requeue: expected a whole number >= 0, got {value!r}")
    return n


def job_folder(logdir: str) -> Path:
    """The folder of every job's submitit files (``<jobid>_submitted.pkl``, ``<jobid>_0_log.out``,
    ...), made now. It has no per-job part: SLURM opens a job's output files when it starts the
    job, which can be before submitit, once sbatch has returned, would make a ``%j`` folder."""
    folder = Path(logdir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _result(paths: JobPaths) -> str | None:
    """"ok", the step's error, or None while there is no complete submitit result file."""
    try:
        with open(paths.result_pickle, "rb") as f:
            outcome, payload = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:  # still being written (submitit renames it into place, but be safe)
        return None
    if outcome == "success":
        return "ok"
    lines = str(payload).strip().splitlines() or ["(no message)"]
    return f"the step failed: {lines[-1]}"
