"""Rule claims: each claim of the paper judged from the per-seed results (cdrl.report.claims)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821  (snakemake injects this object)

from cdrl.report import claim_curves, claims  # noqa: E402

sm = snakemake  # noqa: F821
rows = claims.evaluate_claims(sm.params.preset, Path("results"))
curve_rows = claim_curves.curve_claim_rows(sm.params.preset, Path("results"))
claims.write_claims(rows, Path(sm.output.csv), Path(sm.output.md), Path(sm.output.html),
                    curve_rows, Path(sm.output.curve_csv))
for row in rows:
    print(f"{row['claim']}.{row['part']}: {row['part_verdict']} -> {row['verdict']} "
          f"{row['reason']}", file=sys.stderr)
