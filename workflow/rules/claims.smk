# The claims table (cdrl.report.claims): each claim of the paper judged from the per-seed results
# by the rule the preset's claims: section fixed before the runs; results/tables/claims.{csv,md}
# (and .html, the first section of the report). Needs common.smk (preset_json) included first.
from cdrl.report.claims import claim_files, read_claims
from cdrl.report.decidable import undecidable

# A rule that does not fit its claim's kind, or an undefined run, fails at planning.
read_claims(config)
CLAIMS_PRESET = {**preset_json(), "claims": config.get("claims", [])}
# Claims whose rule cannot decide as configured (too few seeds, a metric nothing produces) are
# named while planning: their verdict would be inconclusive by construction.
if workflow.is_main_process and workflow.check_envvars:
    for _cid, _why in undecidable(CLAIMS_PRESET).items():
        print(
            f"Note: claim {_cid} cannot be decided as configured: {'; '.join(_why)}",
            file=sys.stderr,
        )
# Targets of rule all: the claims table, if the preset has claims.
CLAIMS_TARGETS = [
    f"results/tables/claims.{ext}"
    for ext in ("csv", "md", "html")
    if CLAIMS_PRESET["claims"]
]


rule claims:
    input:
        claim_files(CLAIMS_PRESET),
    output:
        csv=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="0 Claims",
        ),
        md="results/tables/claims.md",
        # The curve: true claims tested at every snapshot (cdrl.report.claim_curves).
        curve_csv="results/tables/claims_curve.csv",
        html=report(
            "results/tables/claims.html",
            caption="../report/claims.rst",
            category="0 Claims",
        ),
    log:
        "logs/claims.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        preset=CLAIMS_PRESET,
    script:
        "../scripts/claims.py"
