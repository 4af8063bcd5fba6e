"""Rule tables: every table of the preset as CSV, Markdown and LaTeX (logic in cdrl.report.tables)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821  (snakemake injects this object)

from cdrl.report import tables  # noqa: E402

sm = snakemake  # noqa: F821
preset, root = sm.params.preset, Path("results")
pub = tables.Published(sm.input.published)
# name: (long form for the CSV, its view for the Markdown and LaTeX, title)
built = {
    "main": (tables.main_table(preset, root, pub), tables.main_view, "Main results"),
    "ablations": (tables.ablation_table(preset, root, pub), tables.ablation_view, "Ablations"),
    "sampling_steps": (tables.steps_table(preset, root, pub), tables.steps_view,
                       "FID against Langevin steps at sampling time"),
    "training_cost": (tables.cost_table(preset, root), tables.cost_view, "Training cost"),
}
if preset["toy"].get("runs"):
    built["toy"] = (tables.toy_table(preset, root), tables.toy_view,
                    "2-D toy (checkerboard) sample metrics")
for name, (df, view, title) in built.items():
    tables.write_table(df, Path(sm.output[0]).parent / name, title, view(df))
    print(f"{name}: {len(df)} rows", file=sys.stderr)
