# Tables: results/tables/<name>.{csv,md,tex}, reproduced numbers beside the published ones.


rule tables:
    input:
        metrics=main_metric_files() + steps_metric_files(),
        runs=train_outputs(RUN_NAMES),
        toy=[f.replace(".png", ".json") for f in toy_targets()],
        published=PUBLISHED,
    output:
        report(
            expand("results/tables/{name}.csv", name=TABLE_NAMES),
            caption="../report/tables.rst",
            category="Tables",
        ),
        expand("results/tables/{name}.{ext}", name=TABLE_NAMES, ext=["md", "tex"]),
    log:
        "logs/tables.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        preset=preset_json(),
    script:
        "../scripts/tables.py"
