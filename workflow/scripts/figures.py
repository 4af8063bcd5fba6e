"""Rules figure_steps, figure_curves, learning_curves, figure_guidance, figure_grid and
figure_claims (logic in cdrl.report.figures and cdrl.report.curves)."""

import sys
from pathlib import Path

import pandas as pd

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821  (snakemake injects this object)

from cdrl.report import figures  # noqa: E402

sm = snakemake  # noqa: F821
if sm.rule == "figure_steps":
    figures.fid_vs_steps(pd.read_csv(sm.input.table), sm.output.png)
elif sm.rule == "figure_curves":
    info = sm.params.preset["runs"]
    runs, labels = {}, {}
    for p in map(Path, sm.input.runs):  # results/runs/<run>/seed<s>/final.json
        run, seed = p.parent.parent.name, p.parent.name
        runs[f"{run}/{seed}"] = p.parent / "stats.jsonl"
        labels[f"{run}/{seed}"] = info[run]["label"]  # one colour and legend entry per method
    figures.training_curves(runs, labels, sm.output.png)
elif sm.rule == "learning_curves":
    from cdrl.io import atomic_write_text
    from cdrl.report import curves
    from cdrl.report.render import View, markdown

    info = sm.params.preset["runs"]
    run_dirs = {f"{Path(p).parent.parent.name}/{Path(p).parent.name}": Path(p).parent
                for p in sm.input.runs}
    rows = curves.curve_rows(sm.input.metrics, run_dirs,
                             {run: spec["label"] for run, spec in info.items()})
    atomic_write_text(sm.output.csv, pd.DataFrame(rows).to_csv(index=False))
    table = curves.curve_table(rows)
    view = View(table.drop(columns=["run"]), [
        "FID over seeds (mean, min, max) of the snapshot at each iteration; train_seconds: "
        "training wall-clock up to it on the host that trained the run; delta_last: change of "
        "the mean from the previous snapshot (near 0: the plateau)."])
    atomic_write_text(sm.output.md, markdown(view, "Learning curves: FID of intermediate snapshots"))
    curves.learning_curves_figure(pd.DataFrame(rows), sm.output.png)  # per-seed points
elif sm.rule == "figure_claims":
    figures.claims_figure(pd.read_csv(sm.input.table), sm.output.png)
    from cdrl.io import atomic_write_text
    from cdrl.report.claims import landing_html

    atomic_write_text(Path(sm.output.landing), landing_html(
        Path(sm.input.html).read_text(), Path(sm.output.png).read_bytes()))
elif sm.rule == "figure_guidance":
    figures.guidance_figure(pd.read_csv(sm.input.table), sm.output.png)
elif sm.rule == "figure_grid":
    title = f"{sm.params.label} ({sm.wildcards.run}, seed {sm.wildcards.seed})"
    figures.sample_grid(sm.input.samples, sm.output.png, title)
else:
    raise ValueError(f"figures.py does not know rule {sm.rule!r}")
