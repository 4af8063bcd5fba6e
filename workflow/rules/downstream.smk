# Downstream tasks (spec 6) and the speed benchmark (spec 5.2) on trained runs of the preset:
# classifier-free guidance sweep, compositional generation, inpainting, OOD detection, and
# `cdrl bench` (CDRL vs DRL gradient counts and wall-clock). Tables: downstream_tables.


rule sample_guided:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        "results/samples/{run}/seed{seed}/guided-w{w}-n{num}.npz",
    log:
        "logs/sample/{run}/seed{seed}/guided-w{w}-n{num}.log",
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
        "--run-dir {params.run_dir:q} --num {wildcards.num} --guidance {wildcards.w} --labels uniform --seed {params.seed} "
        "--out {output:q} > {log:q} 2>&1"


rule class_accuracy:
    input:
        "results/samples/{run}/seed{seed}/guided-w{w}-n{num}.npz",
    output:
        "results/metrics/{run}/seed{seed}/guided-w{w}-n{num}-accuracy.json",
    log:
        "logs/evaluate/{run}/seed{seed}/guided-w{w}-n{num}-accuracy.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        classifier=DOWNSTREAM.get("guidance", {}).get("classifier", "digits-cnn"),
    shell:
        "OMP_NUM_THREADS={threads} python -m cdrl class-accuracy --samples {input:q} "
        "--classifier {params.classifier} --out {output:q} > {log:q} 2>&1"


# Composition (C9): `compose` draws the samples of every setting (the composition, each
# condition alone, unconditional) and the figure; `compose_score` counts, per setting, the
# samples that carry each condition and all of them. On the 2-D toy a condition is a half-plane;
# on CelebA a sample carries an attribute when the attribute CNN, trained once per dataset by
# `attribute_classifier` on the dataset's own labels (cdrl.eval.attributes), says so.
from cdrl.eval.attribute_files import classifier_inputs

# The compose run's data (its first seed): the classifier learns from the same files.
COMPOSE_RUN = DOWNSTREAM.get("compose", {}).get("run")
COMPOSE_DATA = (
    RESOLVED[(COMPOSE_RUN, first_seed(COMPOSE_RUN))]["data"] if COMPOSE_RUN else {}
)


rule compose:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        npz="results/downstream/compose/{run}-seed{seed}.npz",
        fig=report(
            "results/figures/compose/{run}-seed{seed}.png",
            caption="../report/compose.rst",
            category="Downstream",
        ),
    log:
        "logs/downstream/compose/{run}-seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        run_dir=subpath(input[0], parent=True),
        conditions=",".join(DOWNSTREAM.get("compose", {}).get("conditions", [])),
        num=DOWNSTREAM.get("compose", {}).get("num_samples", 0),
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl compose --run-dir {params.run_dir:q} "
        "--conditions {params.conditions:q} --num {params.num} --out {output.npz:q} "
        "--figure {output.fig:q} > {log:q} 2>&1"


rule compose_score:
    input:
        samples="results/downstream/compose/{run}-seed{seed}.npz",
        classifier=lambda wc: classifier_inputs(run_dataset(wc.run)),
    output:
        "results/downstream/compose/{run}-seed{seed}.json",
    log:
        "logs/downstream/compose/{run}-seed{seed}-score.log",
    conda:
        "../../environment.yml"
    threads: 1
    # A small CNN over a few thousand 64x64 images at most: seconds on one core.
    resources:
        runtime=min(60, config["sample_resources"]["runtime"]),
        mem_mb=min(8000, config["sample_resources"]["mem_mb"]),
    params:
        classifier=lambda wc, input: (
            f"--attribute-classifier {shlex.quote(str(input.classifier))}"
            if input.classifier
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} python -m cdrl compose-score --samples {input.samples:q} "
        "{params.classifier} --out {output:q} > {log:q} 2>&1"


# The attribute CNN (cdrl.eval.attributes) for the composed conditions' attributes, trained on
# the dataset's train split and scored on its val split: weights and a JSON sidecar with the
# held-out accuracy per attribute, under results/ (it is a product of the data, like a run).
rule attribute_classifier:
    output:
        weights="results/classifiers/{dataset}-attributes.pth",
        info="results/classifiers/{dataset}-attributes.pth.json",
    log:
        "logs/classifiers/{dataset}-attributes.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        root=COMPOSE_DATA.get("root", "resources/datasets"),
        attributes=",".join(DOWNSTREAM.get("compose", {}).get("conditions", [])),
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl attribute-classifier "
        "--dataset {wildcards.dataset} --root {params.root:q} --attributes {params.attributes:q} "
        "--out {output.weights:q} > {log:q} 2>&1"


rule inpaint:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        metrics="results/downstream/inpaint/{run}-seed{seed}.json",
        fig=report(
            "results/figures/inpaint/{run}-seed{seed}.png",
            caption="../report/inpaint.rst",
            category="Downstream",
        ),
    log:
        "logs/downstream/inpaint/{run}-seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        run_dir=subpath(input[0], parent=True),
        dataset=DOWNSTREAM.get("inpaint", {}).get("dataset", ""),
        masks=",".join(DOWNSTREAM.get("inpaint", {}).get("masks", [])),
        num=DOWNSTREAM.get("inpaint", {}).get("num", 0),
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl inpaint --run-dir {params.run_dir:q} "
        "--dataset {params.dataset:q} --masks {params.masks:q} --num {params.num} "
        "--out-json {output.metrics:q} --figure {output.fig:q} > {log:q} 2>&1"


rule ood:
    input:
        "results/runs/{run}/seed{seed}/final.json",
    output:
        "results/downstream/ood/{run}-seed{seed}.json",
    log:
        "logs/downstream/ood/{run}-seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        run_dir=subpath(input[0], parent=True),
        in_dist=DOWNSTREAM.get("ood", {}).get("in_dist", ""),
        sets=",".join(DOWNSTREAM.get("ood", {}).get("sets", [])),
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl ood --run-dir {params.run_dir:q} "
        "--in-dist {params.in_dist:q} --ood {params.sets:q} --out {output:q} > {log:q} 2>&1"


# The bench runs alone, so that no other job shares its cores while it times (docs/speed.md).
# Locally it claims every core Snakemake was given (bench_threads: workflow.cores) and the one
# unit of BENCH_RESOURCE that common.smk grants; the bench itself uses the case's threads
# (bench_torch_threads). On SLURM its own allocation is exclusive (--exclusive).
rule bench:
    input:
        bench_inputs,
    output:
        summary="results/speed/{case}.csv",
        rounds="results/speed/{case}.rounds.csv",
    log:
        "logs/speed/{case}.log",
    conda:
        "../../environment.yml"
    threads: bench_threads
    resources:
        gpu=lambda wc: SPEED[wc.case].get("gpu", 0),
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
        speed_bench=1,
        slurm_extra="--exclusive",
    params:
        args=bench_args,
        threads=bench_torch_threads,
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={params.threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl bench {params.args} "
        "--threads {params.threads} --out {output.summary:q} > {log:q} 2>&1"


rule downstream_tables:
    input:
        guidance=guidance_files(),
        compose=downstream_file("compose", "json"),
        inpaint=downstream_file("inpaint", "json"),
        ood=downstream_file("ood", "json"),
        speed=expand("results/speed/{case}.csv", case=list(SPEED)),
        published=PUBLISHED,
    output:
        report(
            expand("results/tables/{name}.csv", name=DOWNSTREAM_TABLES),
            caption="../report/downstream_tables.rst",
            category="Tables",
        ),
        expand("results/tables/{name}.{ext}", name=DOWNSTREAM_TABLES, ext=["md", "tex"]),
    log:
        "logs/downstream_tables.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        preset=preset_json(),
    script:
        "../scripts/downstream_tables.py"


rule figure_guidance:
    input:
        table="results/tables/guidance.csv",
    output:
        png=report(
            "results/figures/guidance.png",
            caption="../report/guidance.rst",
            category="Downstream",
        ),
        pdf="results/figures/guidance.pdf",
    log:
        "logs/figure/guidance.log",
    localrule: True
    conda:
        "../../environment.yml"
    script:
        "../scripts/figures.py"
