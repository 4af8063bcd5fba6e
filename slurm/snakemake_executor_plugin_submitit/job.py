"""What runs inside each SLURM job: one Snakemake job step as a submitit Checkpointable.

submitit pickles a ``ShellJob`` and calls it on the node. The command (``python -m snakemake
--target-jobs ... --mode remote``) runs in its own session with SIGUSR2 ignored, so only a
process that installs its own handler reacts to it: the cdrl trainer, which saves a checkpoint
and exits. Two ways a running job is stopped to run again later:

- USR2 (``--signal=USR2@<delay>`` before the time limit, or a preemption on clusters with
  ``preempt_send_user_signal``): submitit calls ``checkpoint``, which forwards SIGUSR2 to the
  command's process group, waits for every process of the group to exit (so the checkpoint is on
  disk before the job is requeued) and returns the same job; submitit requeues it
  (``scontrol requeue``).
- SIGTERM: SLURM's own preemption (PreemptMode=REQUEUE), ``scontrol requeue`` and ``scancel``
  send SIGCONT and SIGTERM to every process of the job, and SIGKILL ``KillWait`` (or the
  partition's GraceTime) later. The trainer checkpoints and exits on SIGTERM by itself; the
  wrapper forwards SIGUSR2 as well (for steps the SIGTERM did not reach), waits for the group,
  and then exits without a submitit result, as submitit's own preemption exit does. SLURM has
  already put a preempted or requeued job back in the queue (every job is submitted with
  ``--requeue``); a cancelled one ends CANCELLED. A result file would have made the plugin
  report a failure (or a success) for a job that is about to run again.

On restart the command runs again and training resumes from ``latest.json``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from submitit.helpers import DelayedSubmission

__all__ = ["ShellJob", "CommandFailed"]


class CommandFailed(RuntimeError):
    """The job's command exited with a non-zero status."""


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_group(pgid: int, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while _group_members(pgid):
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class ShellJob:
    """Run ``command`` in ``cwd``; requeue-safe (see the module docstring)."""

    def __init__(self, command: str, cwd: str, grace_s: float = 60.0, label: str = "") -> None:
        self.command = command
        self.cwd = cwd
        self.grace_s = grace_s            # how long a checkpoint may take before SIGKILL
        self.label = label                # the Snakemake job, for the log
        self._proc: subprocess.Popen | None = None
        self._terminated = False          # SIGTERM seen while the command ran

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_terminated")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._proc = None
        self._terminated = False

    def __call__(self) -> int:
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        print(f"[submitit-plugin] {self.label}: start (SLURM restart count {restart}) in "
              f"{self.cwd}\n{self.command}", flush=True)
        self._terminated = False
        self._proc = subprocess.Popen(["/bin/bash", "-c", self.command], cwd=self.cwd,
                                      start_new_session=True, preexec_fn=_ignore_usr2)
        # Replaces submitit's handler, which only logs SIGTERM; restored on the way out.
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            # Poll rather than wait(): submitit's signal handler runs between two polls.
            while (rc := self._proc.poll()) is None:
                time.sleep(0.5)
            if self._terminated and rc != 0:
                self._exit_for_requeue(rc)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if rc != 0:
            raise CommandFailed(f"{self.label}: command exited with status {rc}; see the rule's "
                                "log file and this job's submitit log")
        return rc

    def _on_sigterm(self, signum, _frame) -> None:
        """Only note it and pass the checkpoint request on: the step may take a while to exit,
        and a handler must not block (submitit's USR2 handler may be running underneath)."""
        first = not self._terminated
        self._terminated = True
        if first:
            print(f"[submitit-plugin] {self.label}: SIGTERM (preemption, requeue or "
                  "cancellation); forwarding SIGUSR2 so the step checkpoints", flush=True)
        if self._proc is not None and self._proc.poll() is None:
            _signal_group(self._proc.pid, signal.SIGUSR2)

    def _exit_for_requeue(self, rc: int) -> None:
        """After SIGTERM: let the step's last process finish its checkpoint, then leave with no
        submitit result (SystemExit is no Exception to submitit), like submitit does itself."""
        if not _wait_group(self._proc.pid, self.grace_s):
            print("[submitit-plugin] step still running; SLURM will kill it", file=sys.stderr,
                  flush=True)
        raise SystemExit(f"[submitit-plugin] {self.label}: step stopped by SIGTERM (status "
                         f"{rc}); exiting without a result: SLURM requeues the job if it was "
                         "preempted or requeued, and the step resumes from its checkpoint")

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Ask the running step to checkpoint, wait for it, and resubmit the same job."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            pgid = proc.pid
            print(f"[submitit-plugin] {self.label}: signalled; forwarding SIGUSR2 to the step "
                  f"and waiting up to {self.grace_s:.0f}s for its checkpoint", flush=True)
            _signal_group(pgid, signal.SIGUSR2)
            if not _wait_group(pgid, self.grace_s):
                print("[submitit-plugin] step did not exit in time; SIGTERM, then SIGKILL",
                      file=sys.stderr, flush=True)
                _signal_group(pgid, signal.SIGTERM)
                if not _wait_group(pgid, 10):
                    _signal_group(pgid, signal.SIGKILL)
            proc.poll()
        return DelayedSubmission(ShellJob(self.command, self.cwd, self.grace_s, self.label))
