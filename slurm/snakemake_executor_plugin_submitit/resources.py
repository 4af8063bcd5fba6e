"""Snakemake job resources -> submitit parameters (pure functions, testable without a cluster).

Standard resources of a rule, as in the Snakemake SLURM executor's conventions:

    gpu: N            N GPUs on one node (--gpus-per-node=N, or --gres=gpu:<model>:N)
    gpu_model: NAME   GPU type (else the profile's submitit-gpu-model)
    runtime: MIN      time limit in minutes (int, or "2h", "1d12h"; Snakemake parses these)
    mem_mb: MB        memory of the job (--mem)
    cpus_per_task: N  CPUs (else the rule's threads)
    slurm_partition, slurm_account, slurm_qos, constraint: per-rule overrides of the profile
    slurm_extra: "--opt=value --flag"   more sbatch options, after the profile's
                                        submitit-sbatch-extra (``parse_sbatch_extra``)

One SLURM task per job: a multi-GPU rule starts its N DDP processes itself (cdrl.train.distributed).
Every job is submitted with ``--requeue``: preemption (PreemptMode=REQUEUE), ``scontrol requeue``
(submitit's, at a time limit) and node failures put it back in the queue even on clusters whose
JobRequeue is 0, and the step resumes from its checkpoint.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

__all__ = ["parse_sbatch_extra", "submitit_parameters", "RESERVED"]

# sbatch options the plugin sets itself (from resources and settings) or depends on: not allowed
# in sbatch-extra. An abbreviation sbatch would expand to one of them is refused as well.
RESERVED = frozenset({
    "account", "array", "chdir", "constraint", "cpus-per-gpu", "cpus-per-task", "error",
    "export", "gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres", "job-name",
    "mem", "mem-per-cpu", "mem-per-gpu", "nodes", "no-requeue", "ntasks", "ntasks-per-core",
    "ntasks-per-gpu", "ntasks-per-node", "open-mode", "output", "parsable", "partition", "qos",
    "requeue", "signal", "test-only", "time", "wait", "wrap"})


def parse_sbatch_extra(text: str | None, where: str) -> dict[str, Any]:
    """Extra sbatch options -> submitit's ``slurm_additional_parameters``.

    ``text`` is split like a shell would (quotes group words): ``--opt=value``, ``--opt value``
    and ``--flag`` (no value) become ``{"opt": "value", "flag": True}``. Short options, stray
    words and the options in ``RESERVED`` raise ValueError naming ``where``.
    """
    try:
        words = shlex.split(text or "")
    except ValueError as err:
        raise ValueError(f"{where}: cannot split {text!r}: {err}") from err
    options: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or word == "--":
            raise ValueError(f"{where}: {word!r} in {text!r}: give long sbatch options, "
                             "--name=value or --flag")
        name, eq, value = word[2:].partition("=")
        if not eq and i + 1 < len(words) and not words[i + 1].startswith("-"):
            value, i = words[i + 1], i + 1
        if not name or any(r.startswith(name) for r in RESERVED):
            raise ValueError(f"{where}: --{name} is set by the plugin (from the job's "
                             "resources and the submitit-* options), not through sbatch-extra")
        options[name] = value if (eq or value) else True
        i += 1
    return options


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
    gpu_model, constraint, default_runtime, signal_delay_s, setup, sbatch_extra. Raises
    ValueError for unusable extra sbatch options.
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
    extra = {**parse_sbatch_extra(settings.sbatch_extra, "submitit-sbatch-extra"),
             **parse_sbatch_extra(_str(resources, "slurm_extra"), f"slurm_extra of {name}")}
    params["slurm_additional_parameters"] = {"requeue": True, **extra}
    return params
