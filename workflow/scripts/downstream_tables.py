"""Rule downstream_tables: guidance, compose, inpaint, ood and speed tables (cdrl.report.downstream_tables)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821  (snakemake injects this object)

from cdrl.report import downstream_tables as dt  # noqa: E402
from cdrl.report.tables import Published, write_table  # noqa: E402

sm = snakemake  # noqa: F821
preset, root = sm.params.preset, Path("results")
pub = Published(sm.input.published)
# name: (long form for the CSV, its view for the Markdown and LaTeX, title)
builders = {
    "guidance": (lambda: dt.guidance_table(preset, root, pub), dt.guidance_view,
                 "Classifier-free guidance sweep"),
    "compose": (lambda: dt.compose_table(preset, root), dt.compose_view,
                "Compositional generation"),
    "inpaint": (lambda: dt.inpaint_table(preset, root), dt.inpaint_view,
                "Inpainting (missing pixels)"),
    "ood": (lambda: dt.ood_table(preset, root, pub), dt.ood_view,
            "Out-of-distribution detection (AUROC)"),
    "speed": (lambda: dt.speed_table(preset, root), dt.speed_view,
              "Speed: CDRL vs DRL (cdrl bench)"),
}
outdir = Path(sm.output[0]).parent
for out in sm.output[: len(sm.output) // 3]:
    name = Path(out).stem
    build, view, title = builders[name]
    df = build()
    write_table(df, outdir / name, title, view(df))
    print(f"{name}: {len(df)} rows", file=sys.stderr)
