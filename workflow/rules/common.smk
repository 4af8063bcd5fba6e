from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")
EXPERIMENTS_DIR = config["experiments_dir"]


wildcard_constraints:
    exp="|".join(config["toy"]["experiments"]),


def toy_targets():
    exps = config["toy"]["experiments"]
    return expand("results/figures/toy/{exp}.png", exp=exps)


def experiment_config(wildcards):
    return f"{EXPERIMENTS_DIR}/{wildcards.exp}.yaml"


def run_dir(wildcards):
    return f"results/runs/{wildcards.exp}"
