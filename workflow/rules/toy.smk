# The 2-D toy: train -> sample -> figure (spec 11; the paper's toy figure).
# Training resumes from results/runs/{exp}/latest.json when re-run; checkpoints are not outputs.
# Jobs run `python -m cdrl` from PATH: activate the project's environment (make run does).


rule train_toy:
    input:
        cfg=experiment_config,
    output:
        "results/runs/{exp}/final.json",
    log:
        "logs/train/{exp}.log",
    benchmark:
        "benchmarks/train/{exp}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        runtime=60,
        mem_mb=4000,
    params:
        run_dir=run_dir,
    shell:
        "python -m cdrl train --config {input.cfg:q} --run-dir {params.run_dir:q} --no-progress "
        "> {log:q} 2>&1"


rule sample_toy:
    input:
        "results/runs/{exp}/final.json",
    output:
        "results/samples/{exp}/samples.npz",
    log:
        "logs/sample/{exp}.log",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        runtime=30,
        mem_mb=4000,
    params:
        run_dir=run_dir,
        num=config["toy"]["num_samples"],
        seed=config["toy"]["seed"],
    shell:
        "python -m cdrl sample --run-dir {params.run_dir:q} --num {params.num} --seed {params.seed} "
        "--out {output:q} > {log:q} 2>&1"


rule figure_toy:
    input:
        run="results/runs/{exp}/final.json",
        samples="results/samples/{exp}/samples.npz",
    output:
        fig=report(
            "results/figures/toy/{exp}.png",
            caption="../report/toy_figure.rst",
            category="Toy",
            labels={"experiment": "{exp}"},
        ),
        metrics="results/figures/toy/{exp}.json",
    log:
        "logs/figure/{exp}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        runtime=15,
        mem_mb=4000,
    params:
        run_dir=run_dir,
    shell:
        "python -m cdrl plot-toy --run-dir {params.run_dir:q} --samples {input.samples:q} "
        "--out {output.fig:q} > {log:q} 2>&1"
