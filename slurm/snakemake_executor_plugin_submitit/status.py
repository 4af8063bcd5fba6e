"""What SLURM's answers mean for one job: still running, done, or failed (no I/O here).

A status check reads each job's submitit result file, asks ``sacct`` about the jobs without one
(one call), and asks ``squeue`` (one call) only when sacct does not say that a job will run.
The verdict of one job, in this order:

1. the result file: success, or the step's exception;
2. a state in which the job runs or will run again (``ALIVE``), from sacct or else squeue: wait.
   squeue wins over a final-looking sacct state: right after a requeue, sacct's newest record is
   still the old attempt's (PREEMPTED, NODE_FAIL) while squeue already lists the job PENDING;
3. known to neither (slurmdbd lags by minutes on busy clusters, and a finished job leaves squeue
   after MinJobAge): wait, with one warning, up to ``grace_s`` after either last reported it;
4. PREEMPTED for ``PREEMPTED_LIMIT_S`` without being requeued (PreemptMode=CANCEL): failed;
5. COMPLETED: wait ``RESULT_WAIT_S`` for the result file (shared file system lag), then failed;
6. any other state (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...): failed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALIVE", "JobStatus", "parse_states"]

# States (first word of sacct's or squeue's State) of a job that runs or will run again.
ALIVE = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "SPECIAL_EXIT",
    "STOPPED", "READY"})
PREEMPTED_LIMIT_S = 300
RESULT_WAIT_S = 60
# A job sacct does not list is normal for a few seconds after submission; warn after this.
WARN_AFTER_S = 60


def parse_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines (sacct -P, squeue -o '%i|%T') -> {job id: first word of State}."""
    states = {}
    for line in text.splitlines():
        jobid, _, state = line.strip().partition("|")
        if jobid and state.strip():
            states[jobid] = state.split()[0].upper()
    return states


@dataclass
class JobStatus:
    """What the status checks have seen of one SLURM job."""

    jobid: str
    since: float                        # submission or attach time
    last_seen: float = 0.0              # last time sacct or squeue listed the job
    sacct_seen: float = 0.0             # last time sacct listed it
    warned: bool = False
    preempted_since: float | None = None
    completed_since: float | None = None

    def __post_init__(self) -> None:
        self.last_seen = self.last_seen or self.since
        self.sacct_seen = self.sacct_seen or self.since

    def verdict(self, result: str | None, sacct: str | None, squeue: str | None, now: float,
                grace_s: float) -> tuple[str | None, str | None]:
        """``(verdict, warning)``: verdict None while the job may still run, "ok", or an error
        message; ``result`` is "ok", the step's error text, or None without a result file."""
        if result is not None:
            return result, None
        if sacct is not None:
            self.sacct_seen = now
            self.warned = False
        if sacct is not None or squeue is not None:
            self.last_seen = now
        warning = self._lag_warning(sacct, squeue, now, grace_s)
        if sacct in ALIVE or squeue in ALIVE:
            self.preempted_since = self.completed_since = None
            return None, warning
        state = sacct or squeue
        if state is None:
            if now - self.last_seen > grace_s:
                return (f"neither sacct nor squeue has reported SLURM job {self.jobid} for "
                        f"{now - self.last_seen:.0f} s (submitit-sacct-grace-s {grace_s:.0f}); "
                        "is SLURM accounting (slurmdbd) running?"), warning
            return None, warning
        if state == "PREEMPTED":
            self.preempted_since = self.preempted_since or now
            if now - self.preempted_since > PREEMPTED_LIMIT_S:
                return f"SLURM job {self.jobid} was preempted and not requeued", warning
            return None, warning
        if state == "COMPLETED":
            self.completed_since = self.completed_since or now
            if now - self.completed_since > RESULT_WAIT_S:
                return f"SLURM job {self.jobid} completed without a submitit result file", warning
            return None, warning
        return f"SLURM job {self.jobid} ended in state {state}", warning

    def _lag_warning(self, sacct: str | None, squeue: str | None, now: float,
                     grace_s: float) -> str | None:
        """Once per episode of sacct not listing the job for a while."""
        quiet = now - self.sacct_seen
        if sacct is not None or self.warned or quiet <= min(WARN_AFTER_S, grace_s / 2):
            return None
        self.warned = True
        seen = (f"squeue lists it as {squeue}" if squeue is not None
                else "squeue does not list it either")
        return (f"sacct has not reported SLURM job {self.jobid} for {quiet:.0f} s (slurmdbd "
                f"lagging?); {seen}; waiting (up to {grace_s:.0f} s while neither lists it)")
