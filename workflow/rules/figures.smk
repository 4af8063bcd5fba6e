# Figures: results/figures/*.{png,pdf}. The toy figure shows data, density and samples per level.
# One palette for every figure: a method has the same colour everywhere (cdrl.report.figures).
# The claims figure's rule, figure_claims, is in claims.smk beside the claims table.


rule figure_toy:
    input:
        run="results/runs/{run}/seed{seed}/final.json",
        samples="results/samples/{run}/seed{seed}/toy.npz",
    output:
        fig=report(
            "results/figures/toy/{run}-seed{seed}.png",
            caption="../report/toy_figure.rst",
            category="Toy",
            labels={"run": "{run}", "seed": "{seed}"},
        ),
        metrics="results/figures/toy/{run}-seed{seed}.json",
    log:
        "logs/figure/toy/{run}-seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        runtime=15,
        mem_mb=4000,
    params:
        run_dir=subpath(input.run, parent=True),
    shell:
        "OMP_NUM_THREADS={threads} python -m cdrl plot-toy --run-dir {params.run_dir:q} "
        "--samples {input.samples:q} --out {output.fig:q} > {log:q} 2>&1"


rule figure_grid:
    input:
        samples=grid_samples,
    output:
        png=report(
            "results/figures/samples/{run}-seed{seed}.png",
            caption="../report/sample_grid.rst",
            category="Samples",
            labels={"run": "{run}", "seed": "{seed}"},
        ),
        pdf="results/figures/samples/{run}-seed{seed}.pdf",
    log:
        "logs/figure/samples/{run}-seed{seed}.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        label=lambda wc: config["runs"][wc.run].get("label", wc.run),
    script:
        "../scripts/figures.py"


rule figure_steps:
    input:
        table="results/tables/sampling_steps.csv",
    output:
        png=report(
            "results/figures/fid_vs_steps.png",
            caption="../report/fid_vs_steps.rst",
            category="Figures",
            labels={"figure": "FID vs sampling steps and seconds; shape vs the paper"},
        ),
        pdf="results/figures/fid_vs_steps.pdf",
    log:
        "logs/figure/fid_vs_steps.log",
    localrule: True
    conda:
        "../../environment.yml"
    script:
        "../scripts/figures.py"


rule figure_curves:
    input:
        runs=train_outputs([r for r in RUN_NAMES if r not in TOY_RUNS]),
    output:
        png=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
            labels={"figure": "Training losses against iteration"},
        ),
        pdf="results/figures/training_curves.pdf",
    log:
        "logs/figure/training_curves.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        preset=preset_json(),
    script:
        "../scripts/figures.py"


# Learning curves (preset curves:): FID of every snapshot against training iterations and
# training wall-clock, per-seed points and the mean with its 95 % interval (cdrl.report.curves);
# the long table beside it.
rule learning_curves:
    input:
        metrics=curve_metric_files(),
        runs=train_outputs(CURVES.get("runs", [])),
    output:
        png=report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Figures",
            labels={"figure": "FID of snapshots against training iterations and time"},
        ),
        pdf="results/figures/learning_curves.pdf",
        csv="results/tables/learning_curves.csv",
        md="results/tables/learning_curves.md",
    log:
        "logs/figure/learning_curves.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        preset=preset_json(),
    script:
        "../scripts/figures.py"
