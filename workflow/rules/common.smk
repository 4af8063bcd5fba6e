# Shared helpers: config validation, the experiment matrix, target lists, per-run resources.
# The matrix logic lives in cdrl.plan.experiments (importable and tested without Snakemake).
import json
import os
import shlex
import sys
from collections.abc import Mapping

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from cdrl.core.config import ConfigError
from cdrl.plan.budget import (
    DEFAULT_THROUGHPUT,
    Throughput,
    claim_costs,
    plan_warnings,
    requeue_budget,
    throughput_from_gpu_check,
)
from cdrl.report.curves import snapshot_iterations as curve_snapshots
from cdrl.plan.experiments import (
    preset_view,
    resolve_run,
    run_instances,
    run_label,
    run_seeds,
)
from cdrl.plan.preflight import (
    format_problems,
    inception_weights_arg,
    preset_problems,
    stop_message,
)


def _typed(value):
    """YAML types for the leaves of a --config list or mapping: Snakemake reads those with YAML's
    base loader, which keeps every number a string (seeds=[1] would be ["1"])."""
    if isinstance(value, str):
        return yaml.safe_load(value) if value.strip() else value
    if isinstance(value, Mapping):
        return {key: _typed(val) for key, val in value.items()}
    if isinstance(value, list):
        return [_typed(val) for val in value]
    return value


def _schema_types():
    with open(
        os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
    ) as f:
        props = yaml.safe_load(f).get("properties", {})
    return {key: spec.get("type") for key, spec in props.items()}


_SCHEMA_TYPES = _schema_types()


def _top_level(key, value):
    """A --config KEY=VALUE leaf: lists and mappings as _typed; a string for a key the schema
    types as boolean or number is read as YAML writes it (preflight=false, =no, =True;
    threads=4), other strings stay strings (part=2024 names a part)."""
    if not isinstance(value, str):
        return _typed(value)
    wanted = _SCHEMA_TYPES.get(key)
    if wanted in ("boolean", "integer", "number") and value.strip():
        return yaml.safe_load(value)
    return value


update_config(
    config,
    {key: _top_level(key, val) for key, val in workflow.config_settings.config.items()},
)
validate(config, schema="../schemas/config.schema.yaml")
# Files of the workflow itself are found from the repository, whatever --directory says.
REPO = workflow.basedir
EXPERIMENTS_DIR = os.path.join(REPO, config["experiments_dir"])
PUBLISHED = os.path.join(REPO, "workflow", "data", "published.csv")
RUN_NAMES = sorted(config["runs"])
TOY_RUNS = config.get("toy", {}).get("runs", [])
TABLES = config["tables"]
DOWNSTREAM = config.get("downstream", {})
SPEED = config.get("speed", {})
CURVES = config.get("curves", {})


def _resolve_all():
    """Every run config, validated while the DAG is planned (a bad override fails here)."""
    out = {}
    for run, seed in run_instances(config):
        try:
            out[(run, seed)] = resolve_run(config, run, seed, EXPERIMENTS_DIR)
        except ConfigError as err:
            raise ValueError(f"preset config: {err}") from None
    return out


RESOLVED = _resolve_all()


def _preflight():
    """Datasets, weights and output folders, checked while planning (cdrl.plan.preflight), in
    the main Snakemake process only: not in cluster jobs, and not under --lint. What is missing
    is printed while planning, so that a dry run (-n) shows it and then the plan: a lab reads
    the plan before it stages anything. A real run stops in its onstart handler (below), after
    planning and before any job is submitted. Returns the problems."""
    if not (
        config["preflight"] and workflow.is_main_process and workflow.check_envvars
    ):
        return []
    problems, notes = preset_problems(config, RESOLVED, REPO)
    for note in notes:
        print(f"Note: {note}", file=sys.stderr)
    if problems:
        print(f"Warning: {format_problems(problems)}", file=sys.stderr)
    return problems


PREFLIGHT_PROBLEMS = _preflight()


onstart:
    # Not run under -n (nor with --no-hooks): a real run stops here, before scheduling.
    if PREFLIGHT_PROBLEMS:
        raise WorkflowError(stop_message(PREFLIGHT_PROBLEMS))


# cdrl evaluate --weights for the inception extractor (the preset's inception_weights).
INCEPTION_WEIGHTS = inception_weights_arg(config["inception_weights"], REPO)[0]


wildcard_constraints:
    run="|".join(RUN_NAMES),
    seed=r"\d+",
    steps=r"\d+",
    num=r"\d+",
    extractor="inception|digits|mnist16|mnist",
    w=r"\d+(\.\d+)?",
    sample=r"k\d+|guided-w\d+(\.\d+)?|it\d+",
    case=r"[A-Za-z0-9_]+",
    dataset=r"[A-Za-z0-9_]+",


def resolved(wildcards):
    return RESOLVED[(wildcards.run, int(wildcards.seed))]


def run_dataset(run):
    return RESOLVED[(run, run_seeds(config, run)[0])]["data"]["name"]


def default_steps(run):
    return RESOLVED[(run, run_seeds(config, run)[0])]["sample"]["langevin_steps"]


def run_resource(name, default):
    """Resource of a training job: the run's ``resources:`` entry, else the preset's default."""

    def get(wildcards):
        spec = config["runs"][wildcards.run].get("resources", {})
        return spec.get(name, config["train_resources"].get(name, default))

    return get


def image_runs():
    """Runs evaluated as images: the main table, the ablations, the step sweeps."""
    names = list(TABLES.get("main", []))
    for abl in TABLES.get("ablations", {}).values():
        names += abl["runs"]
    names += list(TABLES.get("sampling_steps", {}))
    names += list(TABLES.get("headline", {}).values())
    return sorted(set(names))


def eval_spec(run):
    dataset = run_dataset(run)
    if dataset not in config["evaluation"]:
        raise ValueError(
            f"run {run!r} trains on {dataset!r}, which has no 'evaluation:' entry in the preset"
        )
    return config["evaluation"][dataset]


def metric_files(run, steps=None, headline=False):
    """Metric JSONs of one run (all seeds) at ``steps`` (default: the run's own K)."""
    spec = eval_spec(run)
    k = default_steps(run) if steps is None else steps
    extractors = spec.get("headline_metrics", {}) if headline else spec["metrics"]
    n = (
        spec.get("headline_num_samples", spec["num_samples"])
        if headline
        else spec["num_samples"]
    )
    return [
        f"results/metrics/{run}/seed{s}/k{k}-n{n}-{ex}.json"
        for s in run_seeds(config, run)
        for ex in extractors
    ]


def main_metric_files():
    files = [f for r in image_runs() for f in metric_files(r)]
    for r in TABLES.get("headline", {}).values():
        files += metric_files(r, headline=True)
    return sorted(set(files))


def steps_metric_files():
    return sorted(
        {
            f
            for run, ks in TABLES.get("sampling_steps", {}).items()
            for k in ks
            for f in metric_files(run, steps=k)
        }
    )


def snapshot_iterations(run):
    """The iterations at which ``run`` keeps snapshots (train.snapshot_every), for its curve."""
    res = RESOLVED[(run, run_seeds(config, run)[0])]["train"]
    every = res["snapshot_every"]
    if every < 1:
        raise ValueError(
            f"curves: run {run!r} keeps no snapshots; add train.snapshot_every: N to its set:"
        )
    return curve_snapshots(every, res["iterations"])


def curve_metric_files():
    """Metric JSONs of every snapshot of the curves: runs (all seeds, the run's extractors)."""
    if not CURVES:
        return []
    n = CURVES["num_samples"]
    return [
        f"results/metrics/{run}/seed{s}/it{it}-n{n}-{ex}.json"
        for run in CURVES["runs"]
        for s in run_seeds(config, run)
        for it in snapshot_iterations(run)
        for ex in eval_spec(run)["metrics"]
    ]


def train_outputs(runs):
    return [
        f"results/runs/{r}/seed{s}/final.json" for r, s in run_instances(config, runs)
    ]


def toy_targets():
    return [
        f"results/figures/toy/{r}-seed{s}.png"
        for r, s in run_instances(config, TOY_RUNS)
    ]


def grid_targets():
    return [
        f"results/figures/samples/{r}-seed{s}.png"
        for r, s in run_instances(config, image_runs())
    ]


TABLE_NAMES = ["main", "ablations", "sampling_steps", "training_cost"] + (
    ["toy"] if TOY_RUNS else []
)


def table_targets():
    return expand(
        "results/tables/{name}.{ext}", name=TABLE_NAMES, ext=["csv", "md", "tex"]
    )


def figure_targets():
    figs = toy_targets() + grid_targets()
    figs += expand("results/figures/training_curves.{ext}", ext=["png", "pdf"])
    # FID against sampling steps only where a sampling-steps sweep is planned (a part such as
    # the MNIST preset's ablations has none, and its table is empty).
    if TABLES.get("sampling_steps"):
        figs += expand("results/figures/fid_vs_steps.{ext}", ext=["png", "pdf"])
    if "guidance" in DOWNSTREAM:
        figs += ["results/figures/guidance.png", "results/figures/guidance.pdf"]
    if CURVES:
        figs += expand("results/figures/learning_curves.{ext}", ext=["png", "pdf"])
        figs += expand("results/tables/learning_curves.{ext}", ext=["csv", "md"])
    for kind in ("compose", "inpaint"):
        figs += [
            f.replace("results/downstream", "results/figures").replace(".json", ".png")
            for f in downstream_file(kind, "json")
        ]
    return figs


def preset_json():
    """What the table, figure and claims scripts need to know about the preset, as one dict
    (cdrl.plan.experiments.preset_view)."""
    return preset_view(config, RESOLVED, EXPERIMENTS_DIR)


def reference_for(dataset, extractor):
    """The reference images of ``dataset`` for ``extractor``: headline_reference for an extractor
    that only the headline runs use, else reference."""
    spec = config["evaluation"][dataset]
    if extractor not in spec["metrics"] and "headline_reference" in spec:
        return spec["headline_reference"]
    return spec["reference"]


def reference_stats_file(wildcards):
    dataset = run_dataset(wildcards.run)
    return f"results/metrics/reference/{dataset}-{wildcards.extractor}.json"


def weights_arg(wildcards):
    """``--weights ...`` of the inception extractor; the digits CNN uses its default file."""
    if wildcards.extractor != "inception":
        return ""
    return f"--weights {shlex.quote(INCEPTION_WEIGHTS)}"


def cuda_flag(wildcards, resources):
    """CDRL_REQUIRE_CUDA for a job: 1 when it asked for GPUs and the preset's require_cuda is
    on, so `cdrl` stops at once on a node where torch sees no CUDA device."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    return int(bool(config["require_cuda"]) and gpus > 0)


def eval_metrics(wildcards):
    spec = eval_spec(wildcards.run)
    by_extractor = {**spec.get("headline_metrics", {}), **spec["metrics"]}
    return ",".join(by_extractor[wildcards.extractor])


# Sharded sampling (preset sample_shard_size: S). A sample file of N > S images (the counts of
# evaluation: and downstream.guidance, the ones in SHARDED_NUMS) is drawn by ceil(N / S) jobs,
# shards/<name>-n<N>/<start>-<stop>.npz (images start .. stop-1), and merged into the file one job would write (rule
# merge_samples). The unsharded rules take every other count: their num excludes these.
SHARD_SIZE = config.get("sample_shard_size")
# A shard job's resources: sample_shard_resources, else those of a sampling job.
SHARD_RESOURCES = config.get("sample_shard_resources") or config["sample_resources"]


def _sharded_nums():
    nums = {spec["num_samples"] for spec in config["evaluation"].values()}
    if "guidance" in DOWNSTREAM:
        nums.add(DOWNSTREAM["guidance"]["num_samples"])
    return sorted(n for n in nums if SHARD_SIZE and n > SHARD_SIZE)


SHARDED_NUMS = _sharded_nums()
_ALTERNATIVES = "|".join(map(str, SHARDED_NUMS))
# A count of images that is none of SHARDED_NUMS (not one of them followed by a non-digit).
UNSHARDED_NUM = rf"(?!(?:{_ALTERNATIVES})(?!\d))\d+" if SHARDED_NUMS else r"\d+"
SHARDED_NUM = _ALTERNATIVES or r"(?!)"  # (?!) matches nothing


# The sample files that are sharded: plain (k<steps>) and guided (guided-w<w>) samples.
SHARDED_SAMPLE = r"k\d+|guided-w\d+(\.\d+)?"


def shard_sampling_args(wildcards):
    """`cdrl sample` options of a shard, from its sample file's name: the steps of k<steps>,
    the guidance weight of guided-w<w> (labels uniform, as rule sample_guided)."""
    if wildcards.sample.startswith("guided-w"):
        return (
            f"--guidance {wildcards.sample.removeprefix('guided-w')} --labels uniform"
        )
    return f"--steps {wildcards.sample.removeprefix('k')}"


def sample_shards(wildcards):
    """The shard files a sharded sample file is merged from, in order of their first image."""
    num = int(wildcards.num)
    base = f"results/samples/{wildcards.run}/seed{wildcards.seed}/shards/{wildcards.sample}-n{num}"
    return [
        f"{base}/{start}-{min(start + SHARD_SIZE, num)}.npz"
        for start in range(0, num, SHARD_SIZE)
    ]


def grid_samples(wildcards):
    spec = eval_spec(wildcards.run)
    k = default_steps(wildcards.run)
    return f"results/samples/{wildcards.run}/seed{wildcards.seed}/k{k}-n{spec['num_samples']}.npz"


# Downstream tasks and the speed benchmark (workflow/rules/downstream.smk).
DOWNSTREAM_TABLES = [
    k for k in ("guidance", "compose", "inpaint", "ood") if k in DOWNSTREAM
]
DOWNSTREAM_TABLES += ["speed"] if SPEED else []


def first_seed(run):
    return run_seeds(config, run)[0]


def downstream_file(kind, ext):
    """The result of one downstream task on the first seed of its run ([] if not configured)."""
    if kind not in DOWNSTREAM:
        return []
    run = DOWNSTREAM[kind]["run"]
    return [f"results/downstream/{kind}/{run}-seed{first_seed(run)}.{ext}"]


def guidance_files():
    if "guidance" not in DOWNSTREAM:
        return []
    g = DOWNSTREAM["guidance"]
    run, n = g["run"], g["num_samples"]
    base = f"results/metrics/{run}/seed{first_seed(run)}/guided"
    files = [
        f"{base}-w{w:g}-n{n}-{ex}.json"
        for w in g["weights"]
        for ex in eval_spec(run)["metrics"]
    ]
    if g.get("class_accuracy", False):
        files += [f"{base}-w{w:g}-n{n}-accuracy.json" for w in g["weights"]]
    return files


def _bench_side(case, side):
    """(kind, value) of one side of a speed case: a trained run of the preset or a base config."""
    spec = SPEED[case]
    if f"{side}_run" in spec:
        run = spec[f"{side}_run"]
        return "run", f"results/runs/{run}/seed{first_seed(run)}"
    return "config", f"{EXPERIMENTS_DIR}/{spec[f'{side}_config']}.yaml"


def bench_inputs(wildcards):
    files = []
    for side in ("cdrl", "drl"):
        kind, path = _bench_side(wildcards.case, side)
        files.append(f"{path}/final.json" if kind == "run" else path)
    return files


def bench_args(wildcards):
    """`cdrl bench` options of a case. The preset's `repeats` is the number of interleaved rounds
    (default 10); the bench refuses fewer than 2, so 1 (tiny, rehearsal) runs 2."""
    spec = SPEED[wildcards.case]
    args = []
    for side in ("cdrl", "drl"):
        kind, path = _bench_side(wildcards.case, side)
        args += [f"--{side}-run" if kind == "run" else f"--{side}", path]
    rounds = max(spec.get("repeats", 10), 2)
    args += ["--batch", spec.get("batch", 16), "--rounds", rounds]
    if "train_batch" in spec:
        args += ["--train-batch", spec["train_batch"]]
    if "device" in spec:
        args += ["--device", spec["device"]]
    return " ".join(shlex.quote(str(a)) for a in args)


# The speed benchmark runs with nothing beside it (rule bench, docs/speed.md). Locally Snakemake
# limits only the resources given a total, so the workflow grants one unit of BENCH_RESOURCE
# (unless --resources speed_bench=N says otherwise) and the bench job takes it; its threads are
# all of the local cores as well, which alone already keeps every other job off them.
BENCH_RESOURCE = "speed_bench"
if BENCH_RESOURCE not in workflow.global_resources:
    workflow.global_resources[BENCH_RESOURCE] = 1


def _local_cores():
    """The cores of a local run, or None: on a cluster executor, and where no run is planned
    (--report, --lint), workflow.cores is undefined and raises."""
    if not workflow.local_exec:
        return None
    try:
        return workflow.cores
    except WorkflowError:
        return None


def bench_threads(wildcards):
    """Threads the bench job claims: on a local run every core Snakemake was given
    (workflow.cores), so that it schedules no job beside it; on a cluster executor the case's
    threads (sbatch --cpus-per-task) in an exclusive allocation. A plain `threads:
    workflow.cores` would fail while the Snakefile is parsed on a cluster run without --cores
    (workflow.cores is then undefined and raises)."""
    cores = _local_cores()
    return cores if cores is not None else SPEED[wildcards.case].get("threads", 1)


def bench_torch_threads(wildcards):
    """Threads the bench itself uses (--threads, OMP_NUM_THREADS): the case's, on a local run at
    most the cores Snakemake was given."""
    threads = SPEED[wildcards.case].get("threads", 1)
    cores = _local_cores()
    return min(threads, cores) if cores is not None else threads


# ---- The plan's estimated cost and each training job's requeue budget (cdrl.plan.budget: FLOPs
# counted on each run's networks, at a throughput per GPU; the tables: python
# scripts/preset_budget.py, docs/cluster.md). train.smk passes train_max_requeue as the job's
# max_requeue resource (the submitit plugin reads it); the Snakefile calls print_budget() while
# planning. The throughput: $CDRL_BUDGET_TFLOPS (achieved TFLOP/s per GPU), else the results.json
# of scripts/gpu_check.py named by $CDRL_BUDGET_GPU_CHECK, else the documented default.


def budget_throughput():
    """FLOP/s per GPU of the estimates (the header's order of sources)."""
    tflops = os.environ.get("CDRL_BUDGET_TFLOPS")
    if tflops:
        return Throughput.tflops(
            float(tflops), f"{tflops} TFLOP/s per GPU ($CDRL_BUDGET_TFLOPS)"
        )
    check = os.environ.get("CDRL_BUDGET_GPU_CHECK")
    if check:
        with open(check) as f:
            return throughput_from_gpu_check(json.load(f))
    return DEFAULT_THROUGHPUT


BUDGET_THROUGHPUT = budget_throughput()


def train_max_requeue(wildcards):
    """Resource max_requeue of a training job: the run's own (resources: or train_resources:)
    if the preset gives one, else what its estimated hours need (requeue_budget)."""
    explicit = run_resource("max_requeue", None)(wildcards)
    if explicit is not None:
        return int(explicit)
    return requeue_budget(config, wildcards.run, BUDGET_THROUGHPUT, EXPERIMENTS_DIR)


def _uses_gpus():
    """Whether any training run of the plan asks for GPUs (else the GPU-hours mean nothing)."""
    default = config["train_resources"].get("gpu", 0)
    return any(
        int(config["runs"][run].get("resources", {}).get("gpu", default) or 0)
        for run in RUN_NAMES
    )


def print_budget(file=sys.stderr):
    """The plan's estimated GPU-hours and every run that cannot finish within its requeues, on
    the main Snakemake process only (not in jobs, not under --lint), for presets with GPU
    training runs."""
    if not (workflow.is_main_process and workflow.check_envvars and _uses_gpus()):
        return
    try:
        costs = claim_costs(config, BUDGET_THROUGHPUT, EXPERIMENTS_DIR)
    except (
        ValueError,
        KeyError,
        TypeError,
    ) as err:  # an estimate never blocks the plan
        print(
            f"Warning: no budget estimate for this preset ({type(err).__name__}: {err}); "
            "python scripts/preset_budget.py shows where it fails",
            file=file,
        )
        return
    h = costs["whole"]["hours"]
    print(
        f"Budget: about {h['total']:,.0f} GPU-hours (training {h['training']:,.0f}, sampling "
        f"{h['sampling']:,.0f}, evaluation and tasks {h['evaluation'] + h['downstream']:,.0f}) "
        f"at {BUDGET_THROUGHPUT.source}; per run: python scripts/preset_budget.py",
        file=file,
    )
    for row in costs["claims"]:
        shared = f", shares {', '.join(row['shared'])}" if row["shared"] else ""
        print(
            f"  {row['claim']:>4}: {row['hours']['total']:>9,.0f} GPU-hours alone "
            f"({len(row['runs'])} run{'s' if len(row['runs']) != 1 else ''}{shared})",
            file=file,
        )
    if costs["all_claims"] is not None:
        together = costs["all_claims"]["hours"]["total"]
        print(
            f"  every claim: {together:,.0f} GPU-hours (shared runs once); runs no claim "
            f"reads: {', '.join(costs['unread_runs']) or 'none'}",
            file=file,
        )
    for line in plan_warnings(config, BUDGET_THROUGHPUT, EXPERIMENTS_DIR):
        print(f"Warning: {line}", file=file)
