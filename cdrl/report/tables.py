"""The paper's tables, rebuilt from the workflow's metric files, beside the published numbers.

    python -c "from cdrl.report.tables import ..."   # called by workflow/scripts/tables.py

Every table is written three ways by ``cdrl.report.render.write_table``: ``<name>.csv`` (the
long form, one row per number, for programs) and ``<name>.md`` / ``<name>.tex`` (the ``*_view``
below: methods as rows, metrics as columns, as in the paper). A reproduced number is the mean
over the run's seeds, with the standard deviation (ddof = 1) when there are several. It sits
beside the published value from ``workflow/data/published.csv``, looked up by (method, dataset,
metric, key), with its citation; the preset says which published method a run reproduces
(``runs.<run>.published``) and which dataset's numbers sit beside a dataset's results
(``evaluation.<dataset>.compare_to``). The difference is given only when the datasets and the
features match: a digits FID minus a CIFAR-10 FID means nothing.

File layout read here (written by the rules): ``results/metrics/<run>/seed<s>/k<K>-n<N>-<ex>.json``
from ``cdrl evaluate``, ``results/runs/<run>/seed<s>/stats.jsonl`` from ``cdrl train`` and
``results/figures/toy/<run>-seed<s>.json`` from ``cdrl plot-toy``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cdrl.report.render import (
    Sources,
    View,
    dataset_name,
    difference_cell,
    fmt,
    measured,
    published_cell,
    seed_stats,
    write_table,
)

__all__ = ["Published", "main_table", "ablation_table", "steps_table", "cost_table",
           "toy_table", "main_view", "ablation_view", "steps_view", "cost_view", "toy_view",
           "write_table", "METRIC_NAMES", "NO_ABLATION_NUMBERS"]

# Metric JSON key -> (display name, published metric name or None).
METRIC_NAMES = {"fid": ("FID", "fid"), "kid_mean": ("KID", None), "isc_mean": ("IS", "is"),
                "precision": ("precision", None), "recall": ("recall", None),
                "confident_share": ("share p >= 0.9", None)}
EXTRACTOR_NAMES = {"inception": "Inception", "digits": "digits CNN", "mnist": "MNIST CNN",
                   "mnist16": "MNIST CNN 16x16"}


NO_ABLATION_NUMBERS = "none: the paper's ablation numbers were not found"


class Published:
    """Lookup in ``workflow/data/published.csv``."""

    def __init__(self, path: str | Path) -> None:
        self.df = pd.read_csv(path, keep_default_na=False)

    def get(self, method: str | None, dataset: str, metric: str | None, key: str = "main"):
        """``(value, citation)`` or ``(None, None)``; the citation names the paper, its table or
        figure, and how the number was obtained where that matters (``note``)."""
        if not method or not metric:
            return None, None
        d = self.df
        hit = d[(d.method == method) & (d.dataset == dataset) & (d.metric == metric)
                & (d.key == key)]
        if hit.empty:
            return None, None
        row = hit.iloc[0]
        note = row.get("note", "")
        return float(row.value), row.source + (f"; {note}" if note else "")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    mean, std, _ = seed_stats(values)
    return mean, std


def _metric_files(root: Path, run: str, seeds, steps: int, num: int, extractor: str):
    return [root / "metrics" / run / f"seed{s}" / f"k{steps}-n{num}-{extractor}.json"
            for s in seeds]


def _read(paths) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def _main_extractor(ev: dict) -> str:
    return next(iter(ev["metrics"]))


def _metric_rows(preset: dict, root: Path, pub: Published, run: str, steps: int, num: int,
                 extractor: str, key: str) -> list[dict]:
    """One row per metric of one run, evaluation setting and extractor."""
    info = preset["runs"][run]
    ev = preset["evaluation"][info["dataset"]]
    compare = ev.get("compare_to", info["dataset"])
    results = _read(_metric_files(root, run, info["seeds"], steps, num, extractor))
    rows = []
    for mkey, (name, pub_metric) in METRIC_NAMES.items():
        if not results or mkey not in results[0]:
            continue
        mean, std = _mean_std([r.get(mkey) for r in results])
        unavailable = results[0].get("unavailable", {}).get(mkey.split("_")[0])
        value, source = pub.get(info["published"], compare, pub_metric, key)
        # Published FID and IS use Inception features: other extractors get no difference.
        same = compare == info["dataset"] and extractor == "inception"
        rows.append({
            "dataset": info["dataset"], "run": run, "method": info["label"],
            "metric": name, "extractor": EXTRACTOR_NAMES.get(extractor, extractor),
            "steps": steps, "n_samples": num, "seeds": len(results),
            "mean": mean, "std": std, "note": unavailable or "",
            "published": value, "published_dataset": compare if value is not None else "",
            "difference": (mean - value) if (same and value is not None and mean is not None)
            else None,
            "published_source": source or ""})
    return rows


def main_table(preset: dict, root: Path, pub: Published) -> pd.DataFrame:
    """Main results per dataset: every main run with each extractor; the headline runs also
    with the headline extractors (real Inception FID on a CPU preset)."""
    tables = preset["tables"]
    rows = []
    headline = set(tables.get("headline", {}).values())
    for run in tables.get("main", []):
        info = preset["runs"][run]
        ev = preset["evaluation"][info["dataset"]]
        for ex in ev["metrics"]:
            rows += _metric_rows(preset, root, pub, run, info["sample_steps"], ev["num_samples"],
                                 ex, "main")
        if run in headline:
            n = ev.get("headline_num_samples", ev["num_samples"])
            for ex in ev.get("headline_metrics", {}):
                rows += _metric_rows(preset, root, pub, run, info["sample_steps"], n, ex, "main")
    return pd.DataFrame(rows)


def ablation_table(preset: dict, root: Path, pub: Published) -> pd.DataFrame:
    """Each ablation's variants, with the change against the ablation's first run."""
    rows = []
    for name, abl in preset["tables"].get("ablations", {}).items():
        base = None
        for run in abl["runs"]:
            info = preset["runs"][run]
            ev = preset["evaluation"][info["dataset"]]
            ex = _main_extractor(ev)
            for row in _metric_rows(preset, root, pub, run, info["sample_steps"],
                                    ev["num_samples"], ex, "main"):
                if row["metric"] != "FID":
                    continue
                base = row["mean"] if base is None else base
                rows.append({"ablation": name, "title": abl.get("title", name), **row,
                             "vs_first": None if row["mean"] is None else row["mean"] - base,
                             "train_steps": info["train_steps"],
                             "published": None, "published_dataset": "", "difference": None,
                             "published_source": NO_ABLATION_NUMBERS})
    return pd.DataFrame(rows)


def steps_table(preset: dict, root: Path, pub: Published) -> pd.DataFrame:
    """FID against Langevin steps per level at test time (spec 5.3), with sampling seconds."""
    rows = []
    for run, ks in preset["tables"].get("sampling_steps", {}).items():
        info = preset["runs"][run]
        ev = preset["evaluation"][info["dataset"]]
        ex = _main_extractor(ev)
        for k in ks:
            key = "main" if k == info["train_steps"] else f"steps:{k}"
            paths = _metric_files(root, run, info["seeds"], k, ev["num_samples"], ex)
            secs = [r["provenance"]["samples_meta"].get("seconds_per_image") for r in _read(paths)]
            for row in _metric_rows(preset, root, pub, run, k, ev["num_samples"], ex, key):
                if row["metric"] != "FID":
                    continue
                rows.append({**row, "total_steps": k * info["levels"],
                             "seconds_per_image": _mean_std(secs)[0]})
    return pd.DataFrame(rows)


def _stats(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def cost_table(preset: dict, root: Path) -> pd.DataFrame:
    """Training cost per run: wall-clock from stats.jsonl, device-hours, peak memory."""
    rows = []
    for run, info in preset["runs"].items():
        res = info["resources"]
        gpus = int(res.get("gpu", 0) or 0)
        for seed in info["seeds"]:
            stats = _stats(root / "runs" / run / f"seed{seed}" / "stats.jsonl")
            if not stats:
                continue
            seconds, prev = 0.0, 0
            for line in stats:
                seconds += line["sec_per_iter"] * (line["iteration"] - prev)
                prev = line["iteration"]
            rows.append({
                "run": run, "method": info["label"], "dataset": info["dataset"], "seed": seed,
                "iterations": prev, "sec_per_iter": seconds / max(prev, 1),
                "wall_hours": seconds / 3600,
                "device": f"{gpus} GPU" if gpus else f"{res.get('threads', 1)} CPU core(s)",
                "device_hours": seconds / 3600 * (gpus or res.get("threads", 1)),
                "unit": "GPU-hours" if gpus else "CPU core-hours",
                "peak_mem_mb": max(line.get("peak_mem_mb", 0.0) for line in stats)})
    return pd.DataFrame(rows)


def toy_table(preset: dict, root: Path) -> pd.DataFrame:
    """The toy runs' sample metrics (spec 11 is qualitative: no published numbers)."""
    rows = []
    for run in preset["toy"].get("runs", []):
        info = preset["runs"][run]
        for seed in info["seeds"]:
            m = json.loads((root / "figures" / "toy" / f"{run}-seed{seed}.json").read_text())
            rows.append({"run": run, "method": info["label"], "seed": seed,
                         **{k: v for k, v in m.items() if isinstance(v, (int, float))}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Views: the same numbers shaped like the paper's tables (cdrl.report.render).

MEASURED_NOTE = "Measured: mean ± standard deviation over seeds (number of seeds)."
DIFFERENCE_NOTE = ("Paper: the published value, on the paper's dataset where that differs. "
                   "Difference: measured minus paper, given only where the dataset and the "
                   "features (Inception) are the paper's; – where they are not.")


def _metric_cells(g: pd.DataFrame, metrics: list[str], with_paper: set[str], sources: Sources,
                  reasons: dict) -> dict:
    """One row's metric columns: measured, and for ``with_paper`` metrics paper and difference."""
    row = {}
    for m in metrics:
        hit = g[g.metric == m]
        r = hit.iloc[0] if len(hit) else None
        row[m] = "" if r is None else measured(r["mean"], r["std"], int(r["seeds"]))
        if r is not None and isinstance(r.get("note"), str) and r["note"]:
            reasons[m] = r["note"]
        if m in with_paper:
            row[f"{m} paper"] = "" if r is None else published_cell(
                r["published"], r["published_source"], sources, r["dataset"],
                r["published_dataset"])
            row[f"{m} difference"] = "" if r is None else difference_cell(r["difference"],
                                                                          r["published"])
    return row


def _metric_view(df: pd.DataFrame, by: list[str], first: dict) -> View:
    """Rows grouped by ``by``; ``first`` maps a column to its header (value of the group's first
    row); then one column per metric with the paper's value and the difference beside it."""
    if df.empty:
        return View(pd.DataFrame())
    sources, reasons = Sources(), {}
    metrics = list(dict.fromkeys(df["metric"]))
    with_paper = {m for m in metrics if df.loc[df.metric == m, "published"].notna().any()}
    rows = []
    for _, g in df.groupby(by, sort=False):
        head = g.iloc[0]
        rows.append({label: _cell(col, head[col]) for col, label in first.items()}
                    | _metric_cells(g, metrics, with_paper, sources, reasons))
    notes = [MEASURED_NOTE] + ([DIFFERENCE_NOTE] if with_paper else [])
    notes += [f"{m} n/a: {why}" for m, why in reasons.items()]
    return View(pd.DataFrame(rows), notes + sources.notes())


def _cell(col: str, value) -> str:
    if col == "dataset":
        return dataset_name(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def main_view(df: pd.DataFrame) -> View:
    """Methods as rows (one per run, feature extractor and sample count), metrics as columns."""
    return _metric_view(df, ["run", "extractor", "n_samples"],
                        {"method": "method", "dataset": "dataset", "extractor": "features",
                         "n_samples": "samples"})


def ablation_view(df: pd.DataFrame) -> View:
    """Each ablation's variants as rows: FID and its change against the ablation's first run."""
    if df.empty:
        return View(pd.DataFrame(), [f"Published: {NO_ABLATION_NUMBERS}."])
    first = ~df["ablation"].duplicated()
    rows = [{"ablation": r["title"], "variant": r["method"], "dataset": dataset_name(r["dataset"]),
             "features": r["extractor"], "FID": measured(r["mean"], r["std"], int(r["seeds"])),
             "FID vs first variant": "reference" if is_first else difference_cell(r["vs_first"], 0)}
            for is_first, (_, r) in zip(first, df.iterrows(), strict=True)]
    return View(pd.DataFrame(rows), [MEASURED_NOTE, f"Published: {NO_ABLATION_NUMBERS}."])


def steps_view(df: pd.DataFrame) -> View:
    """The paper's steps table: one row per method and Langevin steps per level at sampling."""
    if df.empty:
        return View(pd.DataFrame())
    view = _metric_view(df, ["run", "steps"],
                        {"method": "method", "dataset": "dataset", "extractor": "features",
                         "steps": "K per level", "total_steps": "total steps"})
    secs = df.drop_duplicates(["run", "steps"])["seconds_per_image"]
    view.df["sampling s / image"] = [fmt(s) for s in secs]
    return view


def cost_view(df: pd.DataFrame) -> View:
    """Training cost per run, each quantity as mean ± std over the run's seeds."""
    if df.empty:
        return View(pd.DataFrame())
    rows = []
    for run, g in df.groupby("run", sort=False):
        head, n = g.iloc[0], len(g)
        row = {"method": head["method"], "run": run, "dataset": dataset_name(head["dataset"]),
               "device": head["device"], "iterations": _cell("", g["iterations"].max())}
        for col, label in (("sec_per_iter", "s / iteration"), ("wall_hours", "wall-clock hours"),
                           ("device_hours", "device-hours"), ("peak_mem_mb", "peak memory (MB)")):
            row[label] = measured(*seed_stats(g[col])[:2], n)
        rows.append(row | {"device-hours unit": head["unit"]})
    return View(pd.DataFrame(rows), [
        "Per seed: mean ± standard deviation over the run's seeds (number of seeds).",
        "Published: none; the paper's hardware and training time were not found."])


TOY_METRICS = {"sliced_wasserstein": "sliced Wasserstein", "mmd_rbf": "MMD (RBF)",
               "support_fraction": "in support", "support_fraction_held_out":
               "in support, held-out data"}


def toy_view(df: pd.DataFrame) -> View:
    """The toy runs' sample metrics, mean ± std over seeds."""
    if df.empty:
        return View(pd.DataFrame())
    rows = []
    for run, g in df.groupby("run", sort=False):
        row = {"method": g["method"].iloc[0], "run": run,
               "samples": _cell("", g["num_samples"].iloc[0])}
        for key, label in TOY_METRICS.items():
            if key in g:
                row[label] = measured(*seed_stats(g[key]))
        rows.append(row)
    return View(pd.DataFrame(rows), [
        MEASURED_NOTE, "Held-out data: the same number of fresh points from the data "
        "distribution, for scale.", "Published: none; the paper's toy example is a figure."])
