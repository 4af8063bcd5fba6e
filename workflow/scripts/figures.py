"""Rules figure_steps and figure_curves (logic in cdrl.report.figures)."""

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
        many = len(info[run]["seeds"]) > 1
        labels[f"{run}/{seed}"] = info[run]["label"] + (f" ({seed})" if many else "")
    figures.training_curves(runs, labels, sm.output.png)
elif sm.rule == "figure_guidance":
    figures.guidance_figure(pd.read_csv(sm.input.table), sm.output.png)
elif sm.rule == "figure_grid":
    title = f"{sm.params.label} ({sm.wildcards.run}, seed {sm.wildcards.seed})"
    figures.sample_grid(sm.input.samples, sm.output.png, title)
else:
    raise ValueError(f"figures.py does not know rule {sm.rule!r}")
