# cdrl-bench workflow. Local default (2 CPU cores, minutes):
#     snakemake --cores 2 all
# Rules live in workflow/rules/, presets in workflow/config/, the method in the cdrl package.
from snakemake.utils import min_version

min_version("9.14")


configfile: "workflow/config/smoke.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"


rule all:
    default_target: True
    input:
        toy_targets(),
