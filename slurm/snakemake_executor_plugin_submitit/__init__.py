"""Snakemake executor plugin: every Snakemake job becomes one submitit job on SLURM.

    snakemake --profile slurm all            # slurm/config.yaml sets `executor: submitit`

- Submission: ``submitit.AutoExecutor(cluster="slurm")`` with parameters from the job's standard
  resources (``resources.py``). The job runs a pickled ``ShellJob`` (``job.py``) that runs the
  usual ``python -m snakemake --target-jobs ... --mode remote`` command in the working directory.
- Names: ``<prefix><rule>-<key>``, where ``key`` hashes the working directory and the job's
  outputs. Before submitting, queued or running SLURM jobs of the same name are looked up
  (``squeue``); one that exists is attached to instead of submitting again, so re-running a
  workflow whose jobs are still on the cluster never duplicates them.
- State: one ``sacct`` call per status check through submitit's watcher; a job is done when its
  submitit result file exists (success, or the job's exception) or SLURM says it ended.
- Requeue: SLURM signals USR2 ``submitit-signal-delay-s`` before the time limit (and on
  preemption); submitit asks ``ShellJob.checkpoint``, which makes the running step checkpoint,
  and requeues the job, at most ``submitit-max-requeue`` times for time limits.
- Cancel: Ctrl-C, an executor error, or (without --keep-going) a failed job cancels every job
  this run submitted or attached (one ``scancel``).
- Logs: the submission line of every job in the Snakemake log names its submitit log files
  ``<logdir>/<jobid>/<jobid>_0_log.{out,err}``; failures repeat them.
"""

# No `from __future__ import annotations`: Snakemake reads the settings' field types at run time.
import os
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
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from .job import ShellJob
from .resources import job_key, job_name, submitit_parameters

__all__ = ["Executor", "ExecutorSettings", "common_settings"]

# SLURM states (first word of sacct's State) in which a job may still run or be requeued.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
          "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "PREEMPTED", "STAGE_OUT", "SIGNALING",
          "RESV_DEL_HOLD", "SPECIAL_EXIT", "STOPPED", "UNKNOWN", "READY"}
SQUEUE_TIMEOUT_S = 60
UNKNOWN_LIMIT_S = 600
# Snakemake builds argparse types from the fields: typing.Optional works, `str | None` does not.
OptStr = Optional[str]  # noqa: UP045


def _opt(help_text: str, env: bool = True) -> dict:
    return {"help": help_text, "env_var": env}


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    logdir: str = field(default="logs/submitit", metadata=_opt(
        "Folder of submitit's per-job files (<logdir>/<jobid>/); on the shared file system."))
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
        self.workdir = os.getcwd()
        self.folder = Path(self.settings.logdir).absolute() / "%j"
        self.watcher = SlurmInfoWatcher(delay_s=600)
        self._mine: dict[str, SubmittedJobInfo] = {}   # submitted or attached, not yet ended
        self._mine_lock = threading.Lock()

    # ---- submission -------------------------------------------------------------------------

    def run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        names = {job: self._name(job) for job in jobs}
        queued = {} if self.settings.no_attach else self._queued(set(names.values()))
        for job in jobs:
            self.run_job_pre(job)
            self._submit(job, names[job], queued.get(names[job]))

    def run_job(self, job: JobExecutorInterface) -> None:
        name = self._name(job)
        queued = {} if self.settings.no_attach else self._queued({name})
        self._submit(job, name, queued.get(name))

    def _name(self, job: JobExecutorInterface) -> str:
        rule = job.groupid if job.is_group() else job.rule.name
        return job_name(self.settings.jobname_prefix, rule, job_key(self.workdir, job.output))

    def _queued(self, names: set[str]) -> dict[str, str]:
        """SLURM job ids of queued or running jobs with these names (newest wins)."""
        if not names:
            return {}
        cmd = ["squeue", "-h", "--me", "-o", "%i|%j|%T", "--name", ",".join(sorted(names))]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 timeout=SQUEUE_TIMEOUT_S).stdout
        except (subprocess.SubprocessError, OSError) as err:
            raise WorkflowError(f"squeue failed, cannot check for jobs already queued: {err}") from err
        found: dict[str, str] = {}
        for line in out.splitlines():
            jobid, name, state = line.strip().split("|")
            if name in names and state.split()[0] in ACTIVE and "_" not in jobid:
                if name not in found or int(jobid) > int(found[name]):
                    found[name] = jobid
        return found

    def _submit(self, job: JobExecutorInterface, name: str, existing: str | None) -> None:
        if existing is not None:
            sjob = SlurmJob(folder=self.folder, job_id=existing)
            how = "attached to queued/running SLURM job"
        else:
            sjob = self._sbatch(job, name)
            how = "submitted as SLURM job"
        self.watcher.register_job(sjob.job_id)
        info = SubmittedJobInfo(job=job, external_jobid=sjob.job_id,
                                aux={"sjob": sjob, "name": name, "since": time.time()})
        with self._mine_lock:
            self._mine[sjob.job_id] = info
        self.logger.info(f"Job {job.jobid} ({name}) {how} {sjob.job_id}; submitit log: "
                         f"{sjob.paths.stdout} (stderr {sjob.paths.stderr.name})")
        self.report_job_submission(info)

    def _sbatch(self, job: JobExecutorInterface, name: str) -> SlurmJob:
        params = submitit_parameters(job.resources, job.threads, name, self.settings)
        ex = submitit.AutoExecutor(folder=self.folder, cluster="slurm",
                                   slurm_max_num_timeout=self.settings.max_requeue)
        ex.update_parameters(**params)
        label = f"{name} (Snakemake job {job.jobid})"
        task = ShellJob(self.format_job_exec(job), self.workdir,
                        grace_s=self.settings.checkpoint_grace_s, label=label)
        try:
            # Submitting from inside a SLURM job must not leak its SLURM_* variables.
            with submitit.helpers.clean_env():
                return ex.submit(task)
        except Exception as err:  # sbatch refused: a resource the cluster does not have, ...
            raise WorkflowError(f"submitting {label} failed: {err}") from err

    # ---- status -----------------------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> Generator[SubmittedJobInfo, None, None]:
        if not active_jobs:
            return
        async with self.status_rate_limiter:
            self.watcher.update()   # one sacct call for every registered job
        failed = False
        for info in active_jobs:
            verdict = self._verdict(info)
            if verdict is None:
                yield info
                continue
            self._forget(info)
            if verdict == "ok":
                self.report_job_success(info)
            else:
                failed = True
                self.report_job_error(info, msg=verdict)
        if failed and not getattr(self.workflow.execution_settings, "keep_going", False):
            self._cancel_all("a job failed and --keep-going is off")

    def _verdict(self, info: SubmittedJobInfo) -> str | None:
        """None while the job may still run; "ok"; or an error message."""
        sjob: SlurmJob = info.aux["sjob"]
        jobid = sjob.job_id
        logs = f"submitit logs: {sjob.paths.stdout} and {sjob.paths.stderr}"
        if sjob.paths.result_pickle.exists():
            try:
                outcome, payload = submitit.core.utils.pickle_load(sjob.paths.result_pickle)
            except Exception:  # still being written
                return None
            if outcome == "success":
                return "ok"
            return f"SLURM job {jobid} failed: {str(payload).strip().splitlines()[-1]}\n{logs}\n"
        state = self.watcher.get_state(jobid, mode="cache").split()[0].upper()
        if state == "UNKNOWN":
            # sacct does not know the job yet; forever means no accounting (slurmdbd) to ask.
            if time.time() - info.aux["since"] > UNKNOWN_LIMIT_S:
                return (f"SLURM job {jobid}: sacct has not reported it for "
                        f"{UNKNOWN_LIMIT_S} s; is SLURM accounting (slurmdbd) running?\n{logs}\n")
            return None
        info.aux["since"] = time.time()
        # submitit stops asking sacct about jobs it thinks are done; some are not for us.
        if state in ACTIVE:
            self.watcher._finished.discard(jobid)
            return None
        if state == "COMPLETED":
            # The result file may lag on a shared file system.
            if time.time() - info.aux.setdefault("completed_at", time.time()) < 60:
                return None
            return f"SLURM job {jobid} completed without a submitit result file\n{logs}\n"
        return f"SLURM job {jobid} ended in state {state}\n{logs}\n"

    def _forget(self, info: SubmittedJobInfo) -> None:
        with self._mine_lock:
            self._mine.pop(info.external_jobid, None)

    # ---- cancel -----------------------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        self._cancel_all("the workflow was interrupted", extra=active_jobs)

    def _cancel_all(self, why: str, extra: list[SubmittedJobInfo] = ()) -> None:
        with self._mine_lock:
            ids = sorted(set(self._mine) | {i.external_jobid for i in extra if i.external_jobid})
        if not ids:
            return
        self.logger.info(f"Cancelling SLURM jobs {' '.join(ids)}: {why}")
        try:
            subprocess.run(["scancel", *ids], check=False, timeout=SQUEUE_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as err:
            self.logger.error(f"scancel {' '.join(ids)} failed: {err}")
        with self._mine_lock:
            for jobid in ids:
                self._mine.pop(jobid, None)

    def shutdown(self) -> None:
        super().shutdown()
        # Normal ends leave nothing here; an abnormal end must not leave unmanaged jobs.
        self._cancel_all("Snakemake is shutting down with jobs still on the cluster")
