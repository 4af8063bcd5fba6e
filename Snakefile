# cdrl-bench workflow. Local default (2 CPU cores, about 10 minutes; workflow/config/smoke.yaml):
#     snakemake --cores 2 all
# Full reproduction (cluster): snakemake --profile slurm all   (workflow/config/paper.yaml)
# Rules live in workflow/rules/, presets in workflow/config/, the method in the cdrl package.
from snakemake.utils import min_version

min_version("9.14")


# The smoke preset unless --configfile names another: presets are whole, never merged.
if not config:

    configfile: "workflow/config/smoke.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/downstream.smk"


rule all:
    default_target: True
    input:
        table_targets(),
        figure_targets(),
