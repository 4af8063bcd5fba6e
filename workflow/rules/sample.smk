# Sampling: `cdrl sample` draws images 0..num-1 with K Langevin steps per level. Image i uses the
# noise stream (seed, i), so a smaller sample is a prefix of a larger one, whatever the batch.


rule sample:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        "results/samples/{run}/seed{seed}/k{steps}-n{num}.npz",
    log:
        "logs/sample/{run}/seed{seed}/k{steps}-n{num}.log",
    wildcard_constraints:
        num=UNSHARDED_NUM,  # the sharded counts: sample_shard and merge_samples
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        run_dir=subpath(input[0], parent=True),
        seed=lambda wc: eval_spec(wc.run)["seed"],
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl sample "
        "--run-dir {params.run_dir:q} --num {wildcards.num} --steps {wildcards.steps} --seed {params.seed} --out {output:q} "
        "> {log:q} 2>&1"


# Sharded sampling (preset sample_shard_size; common.smk): images start .. stop-1 of a plain
# (k<steps>) or guided (guided-w<w>) sample file, each from its own noise stream (seed, i), so
# the merged shards are the images of one unsharded job.
rule sample_shard:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        "results/samples/{run}/seed{seed}/shards/{sample}-n{num}/{start}-{stop}.npz",
    log:
        "logs/sample/{run}/seed{seed}/shards/{sample}-n{num}/{start}-{stop}.log",
    wildcard_constraints:
        sample=SHARDED_SAMPLE,
        start=r"\d+",
        stop=r"\d+",
    conda:
        "../../environment.yml"
    threads: SHARD_RESOURCES["threads"]
    resources:
        gpu=SHARD_RESOURCES["gpu"],
        runtime=SHARD_RESOURCES["runtime"],
        mem_mb=SHARD_RESOURCES["mem_mb"],
    params:
        run_dir=lambda wc: f"results/runs/{wc.run}/seed{wc.seed}",
        seed=lambda wc: eval_spec(wc.run)["seed"],
        cuda=cuda_flag,
        images=lambda wc: int(wc.stop) - int(wc.start),
        how=shard_sampling_args,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl sample "
        "--run-dir {params.run_dir:q} --start {wildcards.start} --count {params.images} "
        "{params.how} --seed {params.seed} --out {output:q} > {log:q} 2>&1"


# The shards of a sample file (plain or guided) concatenated, checked to follow each other and
# to share every setting. Reading and writing files only: it runs where Snakemake runs.
rule merge_samples:
    input:
        sample_shards,
    output:
        "results/samples/{run}/seed{seed}/{sample}-n{num}.npz",
    log:
        "logs/sample/{run}/seed{seed}/{sample}-n{num}.merge.log",
    wildcard_constraints:
        num=SHARDED_NUM,
        sample=SHARDED_SAMPLE,
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "python -m cdrl merge-samples {input:q} --out {output:q} > {log:q} 2>&1"


rule sample_toy:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        "results/samples/{run}/seed{seed}/toy.npz",
    log:
        "logs/sample/{run}/seed{seed}/toy.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        run_dir=subpath(input[0], parent=True),
        num=lambda wc: config["toy"]["num_samples"],
        seed=lambda wc: config["toy"]["seed"],
    shell:
        "OMP_NUM_THREADS={threads} python -m cdrl sample --run-dir {params.run_dir:q} "
        "--num {params.num} --seed {params.seed} --out {output:q} > {log:q} 2>&1"


# Learning curves (preset curves:): images 0..num-1 from the snapshot a run kept at iteration
# {it} (train.snapshot_every), with the run's own sampling settings.
rule sample_snapshot:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        "results/samples/{run}/seed{seed}/it{it}-n{num}.npz",
    log:
        "logs/sample/{run}/seed{seed}/it{it}-n{num}.log",
    wildcard_constraints:
        it=r"\d+",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        run_dir=subpath(input[0], parent=True),
        seed=lambda wc: eval_spec(wc.run)["seed"],
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl sample "
        "--run-dir {params.run_dir:q} --snapshot {wildcards.it} --num {wildcards.num} "
        "--seed {params.seed} --out {output:q} > {log:q} 2>&1"
