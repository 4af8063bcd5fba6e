"""The budget of a preset as Markdown: GPU-hours per run and per claim (``cdrl.plan.budget``).

    python scripts/preset_budget.py --preset workflow/config/paper.yaml --write-docs docs/cluster.md

``budget_markdown`` renders ``claim_costs``' result; ``replace_block`` puts it between the
``<!-- budget:begin -->`` and ``<!-- budget:end -->`` lines of a document, which
``tests/test_preset_budget.py`` compares with a fresh rendering, so the documented budget cannot
drift from the preset and the networks.
"""

from __future__ import annotations

from cdrl.plan.budget import REQUEUE_MARGIN, claim_costs

__all__ = ["BEGIN", "END", "budget_markdown", "replace_block", "read_block", "docs_command"]

BEGIN, END = "<!-- budget:begin -->", "<!-- budget:end -->"


def docs_command(preset_name: str, doc: str) -> str:
    return f"python scripts/preset_budget.py --preset {preset_name} --write-docs {doc}"


def _h(hours: float | None) -> str:
    """GPU-hours, rounded so that small changes of a count do not churn the document."""
    if hours is None:
        return "n/a"
    if hours < 1:
        return "<1"
    return f"{hours:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""])


def _run_table(costs: dict, preset: dict) -> tuple[list[str], dict]:
    whole, readers = costs["whole"], costs["readers"]
    costed = [r for r in whole["training"] if r["costed"]]
    ref = next((r for r in costed if r["run"] == (preset.get("tables", {}).get("headline") or {})
                .get("cdrl")), costed[0] if costed else None)
    unit = ref["flops_per_seed"] if ref else None
    rows, units = [], 0.0
    for r in whole["training"]:
        if not r["costed"]:
            rows.append([f"`{r['run']}`", r["seeds"], f"{r['iterations']:,} x {r['batch']}",
                         r["K"], "not counted (2-D toy)", "", "",
                         f"{r['gpus']} x {r['runtime_h']:g} h", "", "",
                         "" if r["max_requeue"] is None else r["max_requeue"],
                         ", ".join(readers.get(r["run"], [])) or "none"])
            continue
        u = r["flops_per_seed"] / unit
        units += u * r["seeds"]
        rows.append([f"`{r['run']}`", r["seeds"], f"{r['iterations']:,} x {r['batch']}", r["K"],
                     f"{r['flops_per_image'] / 1e9:,.0f}", f"{u:.2f}", _h(r["gpu_hours"]),
                     f"{r['gpus']} x {r['runtime_h']:g} h", _h(r["wall_h_per_seed"]),
                     r["attempts"] or "", "" if r["max_requeue"] is None else r["max_requeue"],
                     ", ".join(readers.get(r["run"], [])) or "none"])
    total = whole["hours"]["training"]
    rows.append(["**all training**", sum(r["seeds"] for r in whole["training"]), "", "", "",
                 f"{units:.1f}", f"**{_h(total)}**", "", "", "", "", ""])
    header = ["run", "seeds", "iterations x batch", "K", "GFLOP per image", "units per seed",
              "GPU-hours, all seeds", "GPUs x limit", "hours per seed", "attempts",
              "max_requeue", "claims"]
    return _table(header, rows), {"ref": ref, "units": units}


def _claim_rows(costs: dict, preset: dict) -> list[list[str]]:
    def seeds(run):
        n = len(preset["runs"][run].get("seeds", preset.get("seeds", [0])))
        return f"{run} ({n})"

    def cells(hours):
        return [_h(hours["training"]), _h(hours["sampling"]),
                _h(hours["evaluation"] + hours["downstream"]), f"**{_h(hours['total'])}**"]

    rows = [[c["claim"], ", ".join(seeds(r) for r in c["runs"]) or "none", *cells(c["hours"]),
             ", ".join(c["shared"]) or "none"] for c in costs["claims"]]
    if costs["all_claims"]:
        rows.append(["**all claims**", f"{len(costs['all_claims']['runs'])} runs, each once",
                     *cells(costs["all_claims"]["hours"]), ""])
    rows.append(["**whole preset**", f"{len(costs['whole']['runs'])} runs",
                 *cells(costs["whole"]["hours"]), ""])
    return rows


def budget_markdown(preset: dict, preset_name: str, costs: dict | None = None,
                    experiments_dir=None, doc: str = "docs/cluster.md") -> str:
    """The budget of ``preset`` as Markdown (``costs``: ``claim_costs``' result, else computed
    at the default throughput)."""
    costs = costs or claim_costs(preset, experiments_dir=experiments_dir)
    tp, whole = costs["throughput"], costs["whole"]
    runs, info = _run_table(costs, preset)
    ref = info["ref"]
    out = [f"<!-- Written by `{docs_command(preset_name, doc)}`; a test compares it with the "
           "command's output. -->", "",
           f"**Throughput:** {tp.source}. Give yours with `--tflops N` or "
           "`--gpu-check results.json` (scripts/gpu_check.py).", ""]
    if ref:
        out += [f"**Training, per run.** FLOPs per training image (K Langevin steps, the loss "
                f"pass on 2 images, the proposal network) counted on each run's own networks, "
                f"times iterations x batch. A unit is one seed of `{ref['run']}` "
                f"({_h(ref['gpu_hours'] / ref['seeds'])} GPU-hours). Hours per seed are "
                f"wall-clock on the job's GPUs (data parallelism taken as free); attempts, the "
                f"time limits that takes; max_requeue, what `requeue_budget` allows it "
                f"({REQUEUE_MARGIN:g}x the estimate), with the claims that read the run.", ""]
    out += runs
    n_files = len(whole["sampling"])
    images = sum(f["images"] for f in whole["sampling"])
    out += [f"**Sampling and evaluation.** {n_files} sample files, {images:,} images: "
            f"{_h(whole['hours']['sampling'])} GPU-hours; Inception features of those and of the "
            f"reference splits ({whole['evaluation']['images']:,} images): "
            f"{_h(whole['hours']['evaluation'])}; inpainting, composition, OOD scores and the "
            f"speed benchmark: {_h(whole['hours']['downstream'])}.", "",
            "**Per claim.** What selecting that claim alone plans (a part listing only it, "
            "`cdrl.plan.experiments.select_part`): its runs (seeds), sample files, evaluations "
            "and tasks. A run several claims read appears in each of their rows and once in "
            "\"all claims\".", ""]
    out += _table(["claim", "runs (seeds)", "training", "sampling", "evaluation and tasks",
                   "GPU-hours", "runs shared with other claims"], _claim_rows(costs, preset))
    if costs["unread_runs"]:
        out += ["Runs no claim reads (the main table's other rows, ablations without a claim): "
                + ", ".join(f"`{r}`" for r in costs["unread_runs"]) + ".", ""]
    if whole["not_costed"]:
        out += ["Not counted: " + "; ".join(whole["not_costed"]) + "; data loading, job "
                "start-up and queueing, checkpoints, data-parallel communication.", ""]
    return "\n".join(out).rstrip() + "\n"


def read_block(text: str) -> str:
    """The text between the budget markers of a document."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN} line and one {END} line after it")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with the budget block replaced by ``block``."""
    read_block(text)
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{block.rstrip()}\n{END}{rest.split(END, 1)[1]}"
