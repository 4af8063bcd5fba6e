"""The paper's tables, rebuilt from the workflow's metric files, beside the published numbers.

    python -c "from cdrl.report.tables import ..."   # called by workflow/scripts/tables.py

Every table is written three ways, ``<name>.csv`` (one row per number, machine-readable),
``<name>.md`` and ``<name>.tex`` (booktabs). A reproduced number is the mean over the run's seeds,
with the standard deviation (ddof = 1) when there are several. It sits beside the published value
from ``workflow/data/published.csv``, looked up by (method, dataset, metric, key); the preset says
which published method a run reproduces (``runs.<run>.published``) and which dataset's numbers sit
beside a dataset's results (``evaluation.<dataset>.compare_to``). The difference is given only
when the datasets match: a digits FID minus a CIFAR-10 FID means nothing.

File layout read here (written by the rules): ``results/metrics/<run>/seed<s>/k<K>-n<N>-<ex>.json``
from ``cdrl evaluate``, ``results/runs/<run>/seed<s>/stats.jsonl`` from ``cdrl train`` and
``results/figures/toy/<run>-seed<s>.json`` from ``cdrl plot-toy``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

__all__ = ["Published", "main_table", "ablation_table", "steps_table", "cost_table",
           "toy_table", "write_table", "METRIC_NAMES"]

# Metric JSON key -> (display name, published metric name or None).
METRIC_NAMES = {"fid": ("FID", "fid"), "kid_mean": ("KID", None), "isc_mean": ("IS", "is"),
                "precision": ("precision", None), "recall": ("recall", None)}
EXTRACTOR_NAMES = {"inception": "Inception", "digits": "digits CNN"}


class Published:
    """Lookup in ``workflow/data/published.csv``."""

    def __init__(self, path: str | Path) -> None:
        self.df = pd.read_csv(path, keep_default_na=False)

    def get(self, method: str | None, dataset: str, metric: str | None, key: str = "main"):
        """``(value, source)`` or ``(None, None)``."""
        if not method or not metric:
            return None, None
        d = self.df
        hit = d[(d.method == method) & (d.dataset == dataset) & (d.metric == metric)
                & (d.key == key)]
        if hit.empty:
            return None, None
        row = hit.iloc[0]
        return float(row.value), f"{row.paper}, {row.table} ({row.source})"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


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
        if source and extractor != "inception":  # published FID/IS use Inception features
            source = f"{source}; Inception features, not comparable with this extractor"
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
                             "published_source": "not found (spec 10.3: no ablation numbers)"})
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
# Writers.

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """``mean`` and ``std`` merged as 'mean ± std' for the human-readable formats."""
    out = df.copy().astype(object).where(df.notna(), None)
    if "mean" in out:
        out["mean"] = [_fmt(m) + (f" ± {_fmt(s)}" if s is not None else "")
                       for m, s in zip(out["mean"], out.get("std", [None] * len(out)),
                                       strict=True)]
        out = out.drop(columns=[c for c in ("std",) if c in out])
    return out


def _markdown(df: pd.DataFrame, title: str) -> str:
    cols = list(df.columns)
    lines = [f"## {title}", "", "| " + " | ".join(cols) + " |",
             "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    s = s.replace("\\", "\0")
    for ch in "&%_#{}$":
        s = s.replace(ch, "\\" + ch)
    return s.replace("\0", r"\textbackslash{}").replace("±", r"$\pm$")


def _latex(df: pd.DataFrame, title: str) -> str:
    cols = list(df.columns)
    body = [" & ".join(_tex_escape(_fmt(v)) for v in row) + r" \\"
            for row in df.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(title)}}}",
                      r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
                      " & ".join(_tex_escape(c) for c in cols) + r" \\", r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}", r"\end{table}"]) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, title: str) -> None:
    """``<stem>.csv`` (raw numbers), ``<stem>.md`` and ``<stem>.tex`` (mean ± std)."""
    from cdrl.io import atomic_write_text

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stem.with_suffix(".csv"), df.to_csv(index=False))
    shown = _display(df)
    atomic_write_text(stem.with_suffix(".md"), _markdown(shown, title))
    atomic_write_text(stem.with_suffix(".tex"), _latex(shown, title))
