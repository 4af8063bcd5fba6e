"""SLURM job names that say which work a job does, so that a re-run can find its jobs.

    <prefix><rule>-<where>-<what>        e.g. smk-train-3f2a9c01b7de-5d41402a

``where`` hashes the working directory and the job's outputs: two jobs with the same ``where``
write the same files. ``what`` hashes what the job runs: the shell command as Snakemake formats
it (for script, notebook, wrapper and run rules: the code file and the params) and the inputs it
reads (the content of files up to 1 MiB, the size and modification time of larger ones and of
directories). The inputs count because a command can stay the same while what it reads
changes: the train rule runs ``cdrl train --config results/configs/<run>.yaml``, whatever that
file says.

Before submitting, the plugin looks at its own queued and running jobs (``match_queue``):
- one with the same name is the same work still on the cluster from an earlier Snakemake session
  (a lost login, a killed Snakemake): the re-run attaches to it instead of submitting again;
- one with the same ``where`` but another ``what`` writes the same files from another command
  or other inputs (the config changed in between): it is cancelled, since two jobs must never
  write the same outputs, and the new job is submitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["job_key", "command_key", "command_text", "job_name", "match_queue", "QueueMatch"]

SMALL_INPUT = 1 << 20       # inputs up to this size are identified by their content


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def job_key(workdir: str, outputs: Iterable[str]) -> str:
    """``where``: the same for every job that makes these outputs in this directory."""
    return _sha1(os.path.realpath(workdir) + "\0"
                 + "\0".join(sorted(str(o) for o in outputs)))[:12]


def command_key(command: str, inputs: Iterable[str] = ()) -> str:
    """``what``: the command text and the state of the inputs it reads."""
    return _sha1(command + "\0" + _inputs_fingerprint(inputs))[:8]


def _inputs_fingerprint(paths: Iterable[str]) -> str:
    lines = []
    for path in sorted({str(p) for p in paths}):
        try:
            st = os.stat(path)
            if os.path.isfile(path) and st.st_size <= SMALL_INPUT:
                with open(path, "rb") as f:
                    lines.append(f"{path} {hashlib.sha1(f.read()).hexdigest()}")
            else:
                lines.append(f"{path} {st.st_size} {st.st_mtime_ns}")
        except OSError:
            lines.append(f"{path} absent")
    return "\n".join(lines)


def command_text(job: Any) -> str:
    """What a Snakemake job (or each job of a group) runs, as text."""
    members = job.jobs if job.is_group() else [job]
    return "\n".join(sorted(_one_command(j) for j in members))


def _one_command(job: Any) -> str:
    rule = job.rule
    try:
        shell = getattr(job, "shellcmd", None)
    except Exception:  # a placeholder only the running job can fill: the rule's text then
        shell = getattr(rule, "shellcmd", None)
    if shell:
        return f"shell: {shell}"
    code = next((f"{kind}: {getattr(rule, kind)}" for kind in ("script", "notebook", "wrapper")
                 if getattr(rule, kind, None)), f"run: {rule.name}")
    params = getattr(job, "params", None) or []
    named = dict(params.items()) if hasattr(params, "items") else {}
    return code + "\nparams: " + json.dumps({"values": list(params), "named": named},
                                             sort_keys=True, default=_plain)


def _plain(obj: Any) -> str:
    """JSON for params that are not plain data: paths by value, other objects by type only
    (their repr may hold a memory address, which would change the name in every session)."""
    return os.fspath(obj) if isinstance(obj, os.PathLike) else f"<{type(obj).__qualname__}>"


def job_name(prefix: str, rule: str, where: str, what: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", rule)
    return f"{prefix}{safe}-{where}-{what}"


@dataclass
class QueueMatch:
    attach: str | None = None                       # the job to attach to
    stale: list[str] = field(default_factory=list)  # same outputs, other command: cancel


def match_queue(rows: Iterable[tuple[str, str]], names: Iterable[str],
                skip: set[str] = frozenset()) -> dict[str, QueueMatch]:
    """Match queued jobs ``(job id, name)`` against the names about to be submitted.

    Array tasks (``123_4``) and ``skip``ped ids are ignored; the newest job of a name wins.
    """
    wanted = {name.rpartition("-")[0]: name for name in names}
    found: dict[str, QueueMatch] = {}
    for jobid, name in rows:
        if "_" in jobid or jobid in skip:
            continue
        target = wanted.get(name.rpartition("-")[0])
        if target is None:
            continue
        match = found.setdefault(target, QueueMatch())
        if name != target:
            match.stale.append(jobid)
        elif match.attach is None or int(jobid) > int(match.attach):
            if match.attach is not None:
                match.stale.append(match.attach)
            match.attach = jobid
        else:
            match.stale.append(jobid)
    return found
