# cdrl-bench workflow. Local default (2 CPU cores, about 10 minutes; workflow/config/smoke.yaml):
#     snakemake --cores 2 all
# Full reproduction (cluster): snakemake --profile slurm all   (workflow/config/paper.yaml;
# docs/cluster.md). Another preset: snakemake -n all --configfile P. Keys of the preset in use:
# snakemake -n all --config seeds=[1]. (--configfile and --config take several values, so the
# target goes before them; `all` is the default target anyway.) Runs from any folder:
# snakemake -s <clone>/Snakefile --directory DIR ...
# Rules live in workflow/rules/, presets in workflow/config/, the method in the cdrl package.
import os
import sys

from snakemake.utils import min_version

min_version("9.14")

# This clone's cdrl package, for planning here and for every job, whichever Python runs it: the
# activated environment, or one that --sdm conda built from environment.yml (without cdrl).
if sys.path[:1] != [workflow.basedir]:
    sys.path.insert(0, workflow.basedir)
_pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [workflow.basedir] + [p for p in _pythonpath if p != workflow.basedir]
    )
)


# The smoke preset unless --configfile names another: presets are whole, never merged, while
# --config KEY=VALUE overrides keys of whichever preset is in use. An override file after the
# preset (--configfile P O) is merged into it key by key, and its every_run: reaches every run
# (workflow/config/overrides/rehearsal.yaml).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "workflow", "config", "smoke.yaml")


from cdrl.plan.experiments import apply_every_run, select_decided, select_part

config.update(apply_every_run(config))
# --config part=NAME: only that part of the preset (its claims and what they read);
# --config 'decide=[C1,C3]': only what those claims need.
if config.get("part") or config.get("decide"):
    _part = select_decided(config) if config.get("decide") else select_part(config)
    config.clear()
    config.update(_part)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# The plan's estimated GPU-hours, per claim and in total (GPU presets, main process only).
print_budget()


include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/claims.smk"


rule all:
    default_target: True
    input:
        CLAIMS_TARGETS,
        table_targets(),
        figure_targets(),
