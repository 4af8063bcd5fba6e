# Training: the resolved run config is written first (a changed preset re-trains only the runs
# whose config changed), then `cdrl train`, which resumes from results/runs/<run>/seed<s>/latest.json
# when re-run. Checkpoints are never outputs; final.json marks a finished run.


rule run_config:
    output:
        "results/configs/{run}/seed{seed}.yaml",
    log:
        "logs/run_config/{run}/seed{seed}.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        cfg=resolved,
    script:
        "../scripts/write_run_config.py"


rule train:
    input:
        cfg="results/configs/{run}/seed{seed}.yaml",
    output:
        "results/runs/{run}/seed{seed}/final.json",
    log:
        "logs/train/{run}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{run}/seed{seed}.tsv"
    conda:
        "../../environment.yml"
    threads: run_resource("threads", 1)
    resources:
        gpu=run_resource("gpu", 0),
        runtime=run_resource("runtime", 60),
        mem_mb=run_resource("mem_mb", 4000),
    params:
        run_dir=subpath(output[0], parent=True),
        # A gpu: N job runs N processes (cdrl.train.distributed): the job's threads are shared.
        omp=lambda wc, threads, resources: max(1, threads // max(1, int(resources.gpu))),
    shell:
        "OMP_NUM_THREADS={params.omp} python -m cdrl train --config {input.cfg:q} "
        "--run-dir {params.run_dir:q} --replace-changed --no-progress > {log:q} 2>&1"
