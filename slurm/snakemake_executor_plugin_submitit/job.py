"""What runs inside each SLURM job: one Snakemake job step as a submitit Checkpointable.

submitit pickles a ``ShellJob`` and calls it on the node. The command (``python -m snakemake
--target-jobs ... --mode remote``) runs in its own session with SIGUSR2 ignored, so only a
process that installs its own handler reacts to it: the cdrl trainer, which saves a checkpoint
and exits. When SLURM signals the job (time limit near, or preemption), submitit calls
``checkpoint``: it forwards SIGUSR2 to the command's process group, waits for every process of
the group to exit (so the checkpoint is on disk before SLURM requeues the job), and returns the
same job for requeueing. On restart the command runs again and training resumes from
``latest.json``.
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

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._proc = None

    def __call__(self) -> int:
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        print(f"[submitit-plugin] {self.label}: start (SLURM restart count {restart}) in "
              f"{self.cwd}\n{self.command}", flush=True)
        self._proc = subprocess.Popen(["/bin/bash", "-c", self.command], cwd=self.cwd,
                                      start_new_session=True, preexec_fn=_ignore_usr2)
        # Poll rather than wait(): submitit's signal handler runs between two polls.
        while (rc := self._proc.poll()) is None:
            time.sleep(0.5)
        if rc != 0:
            raise CommandFailed(f"{self.label}: command exited with status {rc}; see the rule's "
                                "log file and this job's submitit log")
        return rc

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
