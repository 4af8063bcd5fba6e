# The claims table (cdrl.report.claims): each claim of the paper judged from the per-seed results
# by the rule the preset's claims: section fixed before the runs; results/tables/claims.{csv,md}
# (and .html), and its figure results/figures/claims.{png,pdf}: together the report's first
# category, "Claims". Needs common.smk (preset_json) included first.
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
# Targets of rule all: the claims table and its figure, if the preset has claims.
CLAIMS_TARGETS = [
    path
    for path in [f"results/tables/claims.{ext}" for ext in ("csv", "md", "html")]
    + [f"results/figures/claims.{ext}" for ext in ("png", "pdf")]
    + ["results/report/landing.html"]
    if CLAIMS_PRESET["claims"]
]


rule claims:
    input:
        claim_files(CLAIMS_PRESET),
    output:
        csv=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
            labels={"result": "Tested parts, one row each (CSV)"},
        ),
        md="results/tables/claims.md",
        # The curve: true claims tested at every snapshot (cdrl.report.claim_curves).
        curve_csv="results/tables/claims_curve.csv",
        html=report(
            "results/tables/claims.html",
            caption="../report/claims.rst",
            category="Claims",
            labels={"result": "Table: evidence, rule and verdict per claim"},
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


# The claims figure (cdrl.report.figures.draw_claims): one row per claim, its effect and interval
# against the rule's threshold, coloured by verdict. The report's first category ("Claims", which
# sorts first) lists it before the table.
# It also writes the report's landing section: that figure above the claims table, one HTML
# fragment (cdrl.report.claims.landing_html) that workflow/report/workflow.rst includes, so the
# report opens on the claims (with --report-metadata workflow/report/metadata.yaml).
rule figure_claims:
    input:
        table="results/tables/claims.csv",
        html="results/tables/claims.html",
    output:
        png=report(
            "results/figures/claims.png",
            caption="../report/claims_figure.rst",
            category="Claims",
            labels={"result": "Figure: each claim's effect and interval vs threshold"},
        ),
        pdf="results/figures/claims.pdf",
        landing="results/report/landing.html",
    log:
        "logs/figure/claims.log",
    localrule: True
    conda:
        "../../environment.yml"
    script:
        "../scripts/figures.py"
