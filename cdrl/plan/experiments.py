"""The experiment matrix of a workflow preset: named runs built from a base config plus overrides.

A preset (``workflow/config/smoke.yaml``, ``paper.yaml``) lists runs as

    runs:
      digits_cdrl_no_vr:
        base: cdrl_digits                      # workflow/config/experiments/cdrl_digits.yaml
        set: {train.variance_reduction: false} # dotted keys, applied in order
        seeds: [0, 1, 2]                       # optional; default: the preset's ``seeds``
        label: "CDRL, no variance reduction"   # optional; tables and figures show it

``resolve_run`` turns one (run, seed) into the full, validated run config (every default filled
in, as ``cdrl train`` will see it), so a bad override fails when the workflow is planned, naming
the run and the key, not minutes later inside a job.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from cdrl.core.config import ConfigError, apply_overrides, config_from_dict, config_to_dict

__all__ = ["resolve_run", "apply_every_run", "select_part", "select_decided",
           "select_claims", "claim_runs", "preset_view",
           "run_seeds", "run_label", "run_instances"]


def apply_every_run(preset: dict) -> dict:
    """The preset with its ``every_run:`` folded into each run: ``every_run.set`` is applied after
    the run's own ``set`` (so it wins), ``every_run.resources`` replaces the run's resources key
    by key. One override file can so scale every run of a preset, e.g. the paper preset's
    rehearsal (``workflow/config/overrides/rehearsal.yaml``), without copying the runs.
    Applying it twice gives the same preset."""
    every = preset.get("every_run")
    if not every:
        return preset
    if not isinstance(every, dict) or set(every) - {"set", "resources"}:
        raise ConfigError(f"every_run: expected a mapping with keys set and resources, got "
                          f"{every!r}")
    for key in ("set", "resources"):
        if not isinstance(every.get(key, {}), dict):
            raise ConfigError(f"every_run.{key}: expected a mapping, got {every[key]!r}")
    out = copy.deepcopy(preset)
    for name, spec in out.get("runs", {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"runs.{name}: expected a mapping, got {spec!r}")
        # Re-inserted at the end, so they come after every key of the run's own set.
        last = copy.deepcopy(every.get("set", {}))
        own = {k: v for k, v in (spec.get("set") or {}).items() if k not in last}
        spec["set"] = {**own, **last}
        if "resources" in every:
            spec["resources"] = {**(spec.get("resources") or {}), **every["resources"]}
    return out


DOWNSTREAM_KINDS = ("guidance", "ood", "compose", "inpaint")


def claim_runs(preset: dict, claim: dict) -> list[str]:
    """The runs a claim reads: its compared pair, its swept run, or its downstream task's run."""
    kind = claim.get("kind")
    if kind in DOWNSTREAM_KINDS:
        task = (preset.get("downstream") or {}).get(kind)
        return [task["run"]] if task else []
    runs = list((claim.get("compare") or {}).values())
    return runs + ([claim["run"]] if claim.get("run") else [])


def select_part(preset: dict) -> dict:
    """The preset cut down to its ``part:`` (a name under ``parts:``): the claims that part
    lists, the runs they read plus the part's own ``runs:`` (each with the part's ``seeds:``
    where it names other seeds for it), and only the tables, sweeps, curves, downstream tasks
    and speed cases of those. A part plans, trains and evaluates only
    what its claims need, so a long preset runs as pieces that each fit a working day; running
    every part together plans each shared run once. Without ``part:`` the preset is returned."""
    name = preset.get("part")
    if not name:
        return preset
    parts = preset.get("parts") or {}
    if name not in parts:
        raise ConfigError(f"part: {name!r} is not defined under 'parts:' (defined: "
                          f"{', '.join(sorted(parts)) or 'none'})")
    spec = parts[name]
    out = select_claims(preset, list(spec.get("claims", [])), spec.get("runs", []),
                        where=f"parts.{name}.claims")
    # A part may train fewer (or other) seeds of a run than the whole preset does, so that it
    # fits its day: parts.<name>.seeds maps a run of the part to its seeds there.
    for run, seeds in (spec.get("seeds") or {}).items():
        if run not in out["runs"]:
            raise ConfigError(f"parts.{name}.seeds: {run!r} is not a run of this part (its runs: "
                              f"{', '.join(out['runs'])}); name one of those or drop it")
        out["runs"][run] = {**out["runs"][run], "seeds": list(seeds)}
    return out


def select_decided(preset: dict) -> dict:
    """The preset cut down to the claims named by ``decide:`` (``--config 'decide=[C1,C3]'``):
    pay only for what you want decided. Without ``decide:`` the preset is returned."""
    ids = preset.get("decide")
    if not ids:
        return preset
    if preset.get("part"):
        raise ConfigError(f"decide: {ids} and part: {preset['part']!r} both select claims; give "
                          "one of them (a part is a named list of claims)")
    return select_claims(preset, list(ids), where="decide")


def select_claims(preset: dict, ids: list, extra_runs=(), where: str = "decide") -> dict:
    """The preset cut down to the claims ``ids``, the runs they read plus ``extra_runs``, and
    only the tables, sweeps, curves, downstream tasks and speed cases of those."""
    known = {c["id"]: c for c in preset.get("claims", [])}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not claims of this preset "
                          f"(claims: {', '.join(known) or 'none'})")
    claims = [known[i] for i in ids]
    runs = list(dict.fromkeys([r for c in claims for r in claim_runs(preset, c)]
                              + list(extra_runs)))
    for run in runs:
        _spec(preset, run)
    out = copy.deepcopy(preset)
    out["runs"] = {r: out["runs"][r] for r in runs}
    out["claims"] = claims
    keep = set(runs)
    tables = out.get("tables", {})
    if "headline" in tables and not set(tables["headline"].values()) <= keep:
        del tables["headline"]
    tables["main"] = [r for r in tables.get("main", []) if r in keep] or runs[:1]
    tables["ablations"] = {k: {**v, "runs": [r for r in v["runs"] if r in keep]}
                           for k, v in tables.get("ablations", {}).items()
                           if len([r for r in v["runs"] if r in keep]) > 1}
    # Step sweeps and curves cost many samples: only where a kept claim reads them.
    swept = {r for c in claims if c["kind"] in ("equal_time", "steps_shape")
             for r in claim_runs(preset, c)}
    tables["sampling_steps"] = {r: ks for r, ks in tables.get("sampling_steps", {}).items()
                                if r in swept}
    curved = {r for c in claims if c.get("curve") for r in claim_runs(preset, c)}
    kinds = {c["kind"] for c in claims}
    out["downstream"] = {k: v for k, v in (out.get("downstream") or {}).items()
                         if k in kinds and v["run"] in keep}
    cases = {c.get("speed_case") for c in claims if c["kind"] == "speed"}
    out["speed"] = {k: v for k, v in (out.get("speed") or {}).items() if k in cases}
    if out.get("curves"):
        curve_runs = [r for r in out["curves"]["runs"] if r in curved]
        out["curves"] = {**out["curves"], "runs": curve_runs} if curve_runs else {}
    if out.get("toy", {}).get("runs"):
        out["toy"] = {**out["toy"], "runs": [r for r in out["toy"]["runs"] if r in keep]}
    return {k: v for k, v in out.items() if v != {} or k in ("runs", "tables", "evaluation")}


def run_seeds(preset: dict, run: str) -> list[int]:
    spec = _spec(preset, run)
    return list(spec.get("seeds", preset.get("seeds", [0])))


def run_label(preset: dict, run: str) -> str:
    return str(_spec(preset, run).get("label", run))


def run_instances(preset: dict, runs=None) -> list[tuple[str, int]]:
    """Every (run, seed) pair of the preset, or of the named runs."""
    names = preset["runs"] if runs is None else runs
    return [(r, s) for r in names for s in run_seeds(preset, r)]


def _spec(preset: dict, run: str) -> dict:
    try:
        return preset["runs"][run]
    except KeyError:
        known = ", ".join(sorted(preset.get("runs", {}))) or "none"
        raise ConfigError(f"run {run!r} is used but not defined under 'runs:' (defined: "
                          f"{known})") from None


def resolve_run(preset: dict, run: str, seed: int, experiments_dir: str | Path | None = None
                ) -> dict:
    """The validated config dict of ``run`` at ``seed`` (defaults filled in)."""
    spec = _spec(preset, run)
    folder = Path(experiments_dir or preset.get("experiments_dir", "workflow/config/experiments"))
    path = folder / f"{spec['base']}.yaml"
    if not path.is_file():
        raise ConfigError(f"runs.{run}.base: {spec['base']!r} names no file {path}; pick one of "
                          f"{', '.join(sorted(p.stem for p in folder.glob('*.yaml')))}")
    base = yaml.safe_load(path.read_text()) or {}
    cfg = apply_overrides(base, spec.get("set", {}), where=f"runs.{run}.set")
    cfg["seed"] = int(seed)
    try:
        return config_to_dict(config_from_dict(cfg))
    except ConfigError as err:
        raise ConfigError(f"runs.{run} (base {path}, seed {seed}): {err}") from None


def preset_view(preset: dict, resolved: dict | None = None,
                experiments_dir: str | Path | None = None) -> dict:
    """What the table, figure and claims code needs to know about a preset, as one dict: per
    run its label, method, dataset, seeds, steps, iterations, snapshots, levels and resources,
    plus the preset's tables, downstream tasks, speed cases, evaluation, toy, curves and claims.
    ``resolved``: ``{(run, seed): run config}`` already resolved (the workflow's); otherwise
    each run's first seed is resolved here."""
    runs = {}
    for run in sorted(preset["runs"]):
        seeds = run_seeds(preset, run)
        res = (resolved or {}).get((run, seeds[0])) or resolve_run(preset, run, seeds[0],
                                                                   experiments_dir)
        runs[run] = {
            "label": run_label(preset, run),
            "published": preset["runs"][run].get("published"),
            "method": res["method"],
            "dataset": res["data"]["name"],
            "seeds": seeds,
            "train_steps": res["train"]["langevin_steps"],
            "sample_steps": res["sample"]["langevin_steps"],
            "iterations": res["train"]["iterations"],
            "snapshot_every": res["train"]["snapshot_every"],
            "levels": res["schedule"]["levels"],
            "resources": {k: preset["runs"][run].get("resources", {}).get(k, v)
                          for k, v in preset.get("train_resources", {}).items()},
        }
    return {"runs": runs, "tables": preset.get("tables", {}),
            "downstream": preset.get("downstream", {}), "speed": preset.get("speed", {}),
            "evaluation": preset.get("evaluation", {}), "toy": preset.get("toy", {}),
            "curves": preset.get("curves", {}), "claims": preset.get("claims", []),
            "inception_weights": preset.get("inception_weights", "fid-port")}
