"""Snakemake job resources -> submitit parameters (pure functions, testable without a cluster).

Standard resources of a rule, as in the Snakemake SLURM executor's conventions:

    gpu: N            N GPUs on one node (--gpus-per-node=N, or --gres=gpu:<model>:N)
    gpu_model: NAME   GPU type (else the profile's submitit-gpu-model)
    runtime: MIN      time limit in minutes (int, or "2h", "1d12h"; Snakemake parses these)
    mem_mb: MB        memory of the job (--mem)
    cpus_per_task: N  CPUs (else the rule's threads)
    slurm_partition, slurm_account, slurm_qos, constraint: per-rule overrides of the profile

One SLURM task per job: a multi-GPU rule starts its N DDP processes itself (cdrl.distributed).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["job_key", "job_name", "submitit_parameters"]


def job_key(workdir: str, outputs: Iterable[str]) -> str:
    """A stable name for "the job that makes these outputs in this directory"."""
    text = os.path.realpath(workdir) + "\0" + "\0".join(sorted(str(o) for o in outputs))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def job_name(prefix: str, rule: str, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", rule)
    return f"{prefix}{safe}-{key}"


def _int(resources: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    value = resources.get(name)
    if value is None or value == "" or value == "None":
        return default
    return int(value)


def _str(resources: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = resources.get(name)
    return default if value in (None, "", "None") else str(value)


def submitit_parameters(resources: Mapping[str, Any], threads: int, name: str,
                        settings: Any) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for one job.

    ``settings`` carries the profile's defaults: cpu_partition, gpu_partition, account, qos,
    gpu_model, constraint, default_runtime, signal_delay_s, setup.
    """
    gpus = _int(resources, "gpu", 0) or 0
    model = _str(resources, "gpu_model", settings.gpu_model)
    partition = _str(resources, "slurm_partition",
                     settings.gpu_partition if gpus > 0 else settings.cpu_partition)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": _int(resources, "runtime", settings.default_runtime),
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": _int(resources, "cpus_per_task", threads) or 1,
        "slurm_signal_delay_s": settings.signal_delay_s,
        # Keep the logs of every attempt of a requeued job in the same files.
        "slurm_srun_args": ["--open-mode=append"],
    }
    mem_mb = _int(resources, "mem_mb")
    if mem_mb:
        params["slurm_mem"] = f"{mem_mb}M"
    if gpus > 0 and model:
        params["slurm_gres"] = f"gpu:{model}:{gpus}"
    elif gpus > 0:
        params["gpus_per_node"] = gpus
    optional = {
        "slurm_partition": partition,
        "slurm_account": _str(resources, "slurm_account", settings.account),
        "slurm_qos": _str(resources, "slurm_qos", settings.qos),
        "slurm_constraint": _str(resources, "constraint", settings.constraint),
    }
    params.update({k: v for k, v in optional.items() if v})
    if settings.setup:
        params["slurm_setup"] = [line for line in settings.setup.split(";") if line.strip()]
    return params
