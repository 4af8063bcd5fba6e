"""Can each claim of a preset be decided as configured? Checked before anything runs.

A claim's rule (cdrl.report.claims) compares values over seeds (or over bench rounds for C2's
seconds), and every rule needs at least :data:`MIN_VALUES` values on each side: with fewer, its
verdict is "inconclusive" by construction, whatever the runs show. A claim also reads metrics
that some evaluation must produce: an FID needs the metric listed for the run's dataset, an
Inception Score needs Inception weights with a classifier head, a class accuracy needs the
guidance task's classifier. :func:`undecidable` lists, per claim, every reason its rule could not
decide; an empty list means it can (it says nothing about which verdict).

    from cdrl.report.decidable import undecidable
    undecidable(preset_view(preset))     # {"C4": ["... 1 seed ..."], ...}; {} when all can
"""

from __future__ import annotations

from cdrl.eval.attribute_files import ATTRIBUTE_DATASETS
from cdrl.report.claims import read_claims

__all__ = ["MIN_VALUES", "undecidable", "IS_WEIGHTS", "COMPOSE_METRIC_DATASETS"]

MIN_VALUES = 2  # per side: a t-interval needs a spread
# inception_weights choices whose network has the 1008-way head the Inception Score needs; the
# default fid-port file holds pool features only (cdrl.eval.inception_weights).
IS_WEIGHTS = ("torch-fidelity",)
# Datasets whose composed samples an evaluation judges (cdrl.tasks.compose): the quadrants toy's
# half-planes, and images by the attribute CNN trained in the workflow (cdrl.eval.attributes).
COMPOSE_METRIC_DATASETS = ("quadrants", *ATTRIBUTE_DATASETS)
# Claim metric -> the evaluation metric that produces it.
_PRODUCED_BY = {"fid": "fid", "kid_mean": "kid", "isc_mean": "isc", "confident_share": "conf"}


def _seeds(view: dict, run: str | None) -> int:
    return len(view["runs"][run]["seeds"]) if run in view["runs"] else 0


def _too_few(what: str, n: int) -> list[str]:
    return [] if n >= MIN_VALUES else [
        f"{what}: {n} value(s) per side, the rule needs at least {MIN_VALUES} (give it more seeds)"]


def _metric_problem(view: dict, run: str, metric: str, extractor: str | None) -> list[str]:
    """Why ``metric`` of ``run``'s samples would be missing or null, if it would."""
    dataset = view["runs"][run]["dataset"]
    ev = view["evaluation"].get(dataset)
    if ev is None:
        return [f"{run}: no evaluation for its dataset {dataset!r} (add one under evaluation:)"]
    extractors = {**ev.get("metrics", {}), **ev.get("headline_metrics", {})}
    ex = extractor or next(iter(ev.get("metrics", {})), None)
    listed = extractors.get(ex, [])
    wanted = _PRODUCED_BY.get(metric, metric)
    if wanted not in listed:
        return [f"{run}: evaluation.{dataset} lists no {wanted!r} for extractor {ex!r} "
                f"(it lists {listed})"]
    weights = view.get("inception_weights", "fid-port")
    if wanted == "isc" and ex == "inception" and weights not in IS_WEIGHTS:
        return [f"{run}: the Inception Score needs weights with a classifier head "
                f"(inception_weights: {' or '.join(IS_WEIGHTS)}); {weights!r} has pool "
                "features only, so IS would be null"]
    return []


def _reasons(spec: dict, view: dict) -> list[str]:
    kind, pair = spec["kind"], spec.get("compare", {})
    sweeps = view["tables"].get("sampling_steps", {})
    out: list[str] = []
    if kind in ("compare", "equal_time", "speed"):
        if not {"a", "b"} <= set(pair):
            return ["no compare: {a, b} runs"]
        for side in ("a", "b"):
            run = pair[side]
            if kind != "speed":
                out += _too_few(f"{side} = {run}", _seeds(view, run))
                out += _metric_problem(view, run, spec.get("metric", "fid"),
                                       spec.get("extractor"))
            if kind == "equal_time" and len(sweeps.get(run, [])) < 2:
                out.append(f"{run}: tables.sampling_steps needs at least 2 step counts")
        if kind == "speed":
            case = view.get("speed", {}).get(spec.get("speed_case"))
            if case is None:
                out.append(f"speed_case {spec.get('speed_case')!r} is not under speed:")
            else:
                out += _too_few("bench rounds", int(case.get("repeats", 1)))
        return out
    if kind == "steps_shape":
        run = spec.get("run")
        ks = set(spec["steps"].values())
        if not ks <= set(sweeps.get(run, [])):
            out.append(f"{run}: tables.sampling_steps lacks {sorted(ks - set(sweeps.get(run, [])))}")
        return out + _too_few(run, _seeds(view, run)) + _metric_problem(
            view, run, "fid", spec.get("extractor"))
    task = view.get("downstream", {}).get(kind)
    if task is None:
        return [f"no downstream.{kind} task in this preset"]
    run = task["run"]
    out += _too_few(f"{kind} run {run}", _seeds(view, run))
    if kind == "guidance":
        if len(task.get("weights", [])) < 3:
            out.append("guidance: an interior FID minimum needs at least 3 weights")
        out += _metric_problem(view, run, "fid", spec.get("extractor"))
        if spec["fidelity"] == "class_accuracy":
            if not task.get("class_accuracy"):
                out.append("guidance: fidelity class_accuracy needs downstream.guidance."
                           "class_accuracy: true")
        else:
            out += _metric_problem(view, run, spec["fidelity"], spec.get("extractor"))
    if kind == "compose":
        dataset = view["runs"][run]["dataset"]
        if dataset not in COMPOSE_METRIC_DATASETS:
            out.append(f"compose: nothing judges composed {dataset} samples (judged: "
                       f"{', '.join(COMPOSE_METRIC_DATASETS)})")
    return out


def undecidable(view: dict) -> dict[str, list[str]]:
    """``{claim id: reasons}`` for every claim of ``view`` (a preset_view) whose rule could not
    decide as configured; claims that can are left out."""
    out = {}
    for spec in read_claims(view):
        reasons = _reasons(spec, view)
        if reasons:
            out[spec["id"]] = reasons
    return out
