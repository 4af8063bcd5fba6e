# Evaluation with torch-fidelity (cdrl evaluate) of any sample file (k<K> or guided-w<w>):
# FID/KID/IS per extractor against the preset's reference split; the inception extractor's
# weights follow the preset's inception_weights (fid-port, torch-fidelity or a file). The reference's features are cached once per (dataset, extractor) by
# reference_stats, so parallel evaluations never extract them twice.


rule reference_stats:
    output:
        "results/metrics/reference/{dataset}-{extractor}.json",
    log:
        "logs/reference/{dataset}-{extractor}.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        reference=lambda wc: reference_for(wc.dataset, wc.extractor),
        cache_root=config["fidelity_cache"],
        weights=weights_arg,
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl evaluate "
        "--prepare-reference --reference {params.reference:q} --extractor {wildcards.extractor} "
        "{params.weights} --cache-root {params.cache_root:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        samples="results/samples/{run}/seed{seed}/{sample}-n{num}.npz",
        reference=reference_stats_file,
    output:
        "results/metrics/{run}/seed{seed}/{sample}-n{num}-{extractor}.json",
    log:
        "logs/evaluate/{run}/seed{seed}/{sample}-n{num}-{extractor}.log",
    conda:
        "../../environment.yml"
    threads: config["sample_resources"]["threads"]
    resources:
        gpu=config["sample_resources"]["gpu"],
        runtime=config["sample_resources"]["runtime"],
        mem_mb=config["sample_resources"]["mem_mb"],
    params:
        reference=lambda wc: reference_for(run_dataset(wc.run), wc.extractor),
        metrics=eval_metrics,
        cache_root=config["fidelity_cache"],
        weights=weights_arg,
        cuda=cuda_flag,
    shell:
        "OMP_NUM_THREADS={threads} CDRL_REQUIRE_CUDA={params.cuda} python -m cdrl evaluate "
        "--samples {input.samples:q} --reference {params.reference:q} "
        "--metrics {params.metrics} --extractor {wildcards.extractor} {params.weights} "
        "--cache-root {params.cache_root:q} --out {output:q} > {log:q} 2>&1"
