"""Tables of the downstream tasks (spec 6) and of the speed benchmark (spec 5.2).

Called by ``workflow/scripts/downstream_tables.py``; written with ``cdrl.report.render.write_table``:
each ``*_table`` is the long form (CSV), each ``*_view`` the table people read (Markdown, LaTeX).
Inputs are the JSON/CSV files the rules write (``cdrl evaluate``, ``cdrl class-accuracy``,
``cdrl compose``, ``cdrl inpaint``, ``cdrl ood``, ``cdrl bench``). The downstream tasks run on
one seed of their run (the first).
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
    measured,
    number,
    published_cell,
)
from cdrl.report.speed_table import speed_view
from cdrl.report.tables import EXTRACTOR_NAMES, Published

__all__ = ["guidance_table", "compose_table", "inpaint_table", "ood_table", "speed_table",
           "guidance_view", "compose_view", "inpaint_view", "ood_view", "speed_view"]


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def guidance_table(preset: dict, root: Path, pub: Published) -> pd.DataFrame:
    """FID (and IS, KID, class accuracy where measured) per guidance weight w, beside the
    paper's ImageNet 32 curve (spec 6.1, read off the figure) at the same w."""
    g = preset["downstream"]["guidance"]
    run = g["run"]
    info = preset["runs"][run]
    ev = preset["evaluation"][info["dataset"]]
    compare = g.get("compare_to", info["dataset"])
    base = root / "metrics" / run / f"seed{info['seeds'][0]}"
    rows = []
    for w in g["weights"]:
        row = {"run": run, "method": info["label"], "dataset": info["dataset"], "w": w,
               "n_samples": g["num_samples"], "seeds": 1}
        for ex in ev["metrics"]:
            m = _json(base / f"guided-w{w:g}-n{g['num_samples']}-{ex}.json")
            name = EXTRACTOR_NAMES.get(ex, ex)
            for key, label in (("fid", "FID"), ("kid_mean", "KID"), ("isc_mean", "IS")):
                if m.get(key) is not None:
                    row[f"{label} ({name})"] = m[key]
        if g.get("class_accuracy", False):
            row["class_accuracy"] = _json(base / f"guided-w{w:g}-n{g['num_samples']}"
                                                 "-accuracy.json")["class_accuracy"]
        for metric, label in (("fid", "FID"), ("is", "IS")):
            row[f"published_{label}"], row[f"published_{label}_source"] = pub.get(
                "CDRL-cond", compare, metric, f"cfg:{w:.1f}")
        row["published_dataset"] = compare
        rows.append(row)
    return pd.DataFrame(rows)


def compose_table(preset: dict, root: Path) -> pd.DataFrame:
    """Fraction of samples satisfying each condition and all of them, per sampling setting."""
    c = preset["downstream"]["compose"]
    seed = preset["runs"][c["run"]]["seeds"][0]
    m = _json(root / "downstream" / "compose" / f"{c['run']}-seed{seed}.json")
    rows = [{"run": c["run"], "setting": name, "guidance": m["guidance"], "num": m["num"], **vals}
            for name, vals in m.get("settings", {}).items()]
    return pd.DataFrame(rows)


def inpaint_table(preset: dict, root: Path) -> pd.DataFrame:
    """PSNR and MSE on the missing pixels per mask, inpainted against two trivial fills."""
    c = preset["downstream"]["inpaint"]
    seed = preset["runs"][c["run"]]["seeds"][0]
    m = _json(root / "downstream" / "inpaint" / f"{c['run']}-seed{seed}.json")
    rows = []
    for mask, by_fill in m["masks"].items():
        for fill, vals in by_fill.items():
            if isinstance(vals, dict) and "psnr" in vals:
                rows.append({"run": c["run"], "dataset": m["meta"]["dataset"], "mask": mask,
                             "fill": fill, "psnr_db": vals["psnr"], "mse": vals["mse"],
                             "num": m["meta"]["num"]})
    return pd.DataFrame(rows)


OOD_NAMES = {"cifar10-interp": "CIFAR-10 interpolations", "cifar100": "CIFAR-100",
             "celeba64": "CelebA"}


def _ood_same(in_dist: str, name: str, key: str) -> bool:
    """The paper's own setting (CIFAR-10 against the same set), not an analogue."""
    base = name.split(":")[0] + ("-interp" if name.endswith("-interp") else "")
    return in_dist.split(":")[0] == "cifar10" and key in (name, base)


def ood_table(preset: dict, root: Path, pub: Published) -> pd.DataFrame:
    """AUROC of the lowest-level energy per OOD set, beside the paper's CIFAR-10 numbers for the
    set the preset maps it to (``downstream.ood.published``; an analogue on the CPU)."""
    c = preset["downstream"]["ood"]
    info = preset["runs"][c["run"]]
    m = _json(root / "downstream" / "ood" / f"{c['run']}-seed{info['seeds'][0]}.json")
    mapping = c.get("published", {})
    rows = []
    for name, vals in m["sets"].items():
        key = mapping.get(name)
        value, source = pub.get("CDRL", "cifar10", "auroc", f"ood:{key}") if key else (None, None)
        same = value is not None and _ood_same(m["in_dist"], name, key)
        rows.append({"run": c["run"], "in_dist": m["in_dist"], "ood": name, "auroc": vals["auroc"],
                     "num_in": m["num_in"], "num_ood": vals["num"], "level": m["level"],
                     "published": value,
                     "published_setting": f"CIFAR-10 vs {key}" if key else "",
                     "published_source": source or "", "method": info["label"], "seeds": 1,
                     "difference": vals["auroc"] - value if same else None})
    return pd.DataFrame(rows)


def speed_table(preset: dict, root: Path) -> pd.DataFrame:
    """Every speed case's ``cdrl bench`` rows, with the case name in front."""
    frames = []
    for case in preset.get("speed", {}):
        df = pd.read_csv(root / "speed" / f"{case}.csv")
        df.insert(0, "case", case)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# Views: methods (or settings) as rows, metrics as columns (cdrl.report.render).

ONE_SEED = "Measured: one seed of the run (the downstream tasks use the first)."
FILLS = {"inpaint": "CDRL inpainting", "baseline_known_mean": "fill: mean of the known pixels",
         "baseline_dataset_mean": "fill: training-set mean image"}


def guidance_view(df: pd.DataFrame) -> View:
    """One row per guidance weight w; each metric beside the paper's curve (read off its figure)."""
    if df.empty:
        return View(pd.DataFrame())
    sources, rows = Sources(), []
    head = df.iloc[0]
    same = head["dataset"] == head["published_dataset"]
    for _, r in df.iterrows():
        row = {"w": f"{r['w']:g}"}
        for label in ("FID", "IS", "KID"):
            for col in [c for c in df.columns if c.startswith(f"{label} (")]:
                row[col] = measured(r[col], n=int(r["seeds"]))
            pub = f"published_{label}"
            if pub in df and df[pub].notna().any():
                row[f"{label} paper"] = published_cell(r[pub], r[f"{pub}_source"], sources,
                                                       r["dataset"], r["published_dataset"])
                if any(c.startswith(f"{label} (") for c in df.columns):
                    mine = number(r.get(f"{label} (Inception)")) if same else None
                    diff = None if mine is None or number(r[pub]) is None else mine - r[pub]
                    row[f"{label} difference"] = difference_cell(diff, r[pub])
        if "class_accuracy" in df:
            row["class accuracy"] = measured(r["class_accuracy"], n=int(r["seeds"]))
        rows.append(row)
    notes = [f"{head['method']} ({head['run']}) on {dataset_name(head['dataset'])}, "
             f"{head['n_samples']} samples per w. {ONE_SEED}",
             "Difference: measured (Inception features) minus paper, only on the paper's "
             "dataset; – otherwise."]
    return View(pd.DataFrame(rows), notes + sources.notes())


def compose_view(df: pd.DataFrame) -> View:
    """One row per sampling setting: the fraction of samples satisfying each condition."""
    notes = ["Published: none; the paper's compositional generation is shown as images only."]
    if df.empty:
        return View(pd.DataFrame(), notes)
    rows = []
    for _, r in df.iterrows():
        row = {"setting": r["setting"], "guidance w": f"{r['guidance']:g}",
               "samples": str(r["num"])}
        for col in [c for c in df.columns if c.startswith("frac_")]:
            name = "all conditions" if col == "frac_intersection" else col[len("frac_"):]
            row[f"fraction in {name}"] = measured(r[col])
        rows.append(row)
    return View(pd.DataFrame(rows), [f"Run: {df['run'].iloc[0]}. {ONE_SEED}", *notes])


def inpaint_view(df: pd.DataFrame) -> View:
    """Inpainting against two trivial fills (rows), PSNR and MSE per mask (columns)."""
    notes = ["Published: none; the paper's inpainting masks and numbers were not found."]
    if df.empty:
        return View(pd.DataFrame(), notes)
    rows = []
    for fill, g in df.groupby("fill", sort=False):
        row = {"method": FILLS.get(fill, fill)}
        for _, r in g.iterrows():
            row[f"{r['mask']} PSNR (dB)"] = measured(r["psnr_db"])
            row[f"{r['mask']} MSE"] = measured(r["mse"])
        rows.append(row)
    head = df.iloc[0]
    return View(pd.DataFrame(rows), [
        f"Run {head['run']}: the first {head['num']} images of {dataset_name(head['dataset'])}; "
        f"PSNR and MSE over the missing pixels. {ONE_SEED}", *notes])


def ood_view(df: pd.DataFrame) -> View:
    """The paper's OOD table: methods as rows, one AUROC column per OOD set, each beside the
    paper's value for the same set (or the analogue the preset maps it to)."""
    if df.empty:
        return View(pd.DataFrame())
    sources, rows = Sources(), []
    with_paper = set(df.loc[df["published"].notna(), "ood"])
    for run, g in df.groupby("run", sort=False):
        head = g.iloc[0]
        row = {"method": head["method"], "run": run,
               "in-distribution": dataset_name(head["in_dist"])}
        for _, r in g.iterrows():
            row[f"{r['ood']} AUROC"] = measured(r["auroc"], n=int(r["seeds"]))
            if r["ood"] in with_paper:
                ref = sources.ref(r["published_source"])
                setting = r["published_setting"]
                for key, name in OOD_NAMES.items():
                    setting = setting.replace(f"vs {key}", f"vs {name}")
                row[f"{r['ood']} paper"] = (f"{r['published']:g} for {setting} {ref}"
                                            if number(r["published"]) is not None else "")
                row[f"{r['ood']} difference"] = difference_cell(r["difference"], r["published"])
        rows.append(row)
    notes = ["AUROC of the lowest-level energy, in-distribution scored higher. " + ONE_SEED,
             "Paper: CIFAR-10 against the same set, or the analogue the preset maps this set "
             "to; difference only for the paper's own setting, – otherwise."]
    return View(pd.DataFrame(rows), notes + sources.notes())
