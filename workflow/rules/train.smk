# Training: the resolved run config is written first (a changed preset re-trains only the runs
# whose config changed), then `cdrl train`, which resumes from results/runs/<run>/seed<s>/latest.json
# when re-run. Checkpoints are never outputs; final.json marks a finished run.
# A run that diverges is finished too (--on-divergence record): final.json says "diverged" and the
# rest of the preset goes on; it is compared at its last good snapshot (docs/workflow.md).
# The log gets one line per train.log_every iterations (iteration, loss, s/it, ETA) as it trains.
# Snakemake deletes a job's log before every attempt, so the log is a hard link to
# <log>.attempts.log, which it does not know about: a requeued or retried job appends to the
# lines of the attempts before it.


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
    # A failed training (lost node, out of memory, a killed step) is run once more; it resumes
    # from latest.json, so the retry costs only the work since the last checkpoint.
    retries: 1
    conda:
        "../../environment.yml"
    threads: run_resource("threads", 1)
    resources:
        gpu=run_resource("gpu", 0),
        runtime=run_resource("runtime", 60),
        mem_mb=run_resource("mem_mb", 4000),
        # Time-limit requeues the submitit plugin allows this job: enough for its estimated
        # hours (common.smk, cdrl.plan.budget.requeue_budget), unless the run sets its own.
        max_requeue=train_max_requeue,
    params:
        run_dir=subpath(output[0], parent=True),
        # A gpu: N job runs N processes (cdrl.train.distributed): the job's threads are shared.
        omp=lambda wc, threads, resources: max(1, threads // max(1, int(resources.gpu))),
        cuda=cuda_flag,
        attempts="logs/train/{run}/seed{seed}.attempts.log",
    shell:
        "touch {params.attempts:q} && ln -f {params.attempts:q} {log:q} && "
        "echo == $(date +%FT%T) on $(hostname): cdrl train {wildcards.run} seed{wildcards.seed} "
        ">> {log:q} && "
        "OMP_NUM_THREADS={params.omp} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl train "
        "--config {input.cfg:q} --run-dir {params.run_dir:q} --replace-changed --no-progress "
        "--on-divergence record "
        ">> {log:q} 2>&1"
