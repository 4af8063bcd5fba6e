"""Tables of the downstream tasks (spec 6) and of the speed benchmark (spec 5.2).

Called by ``workflow/scripts/downstream_tables.py``; written with ``cdrl.report.tables.write_table``.
Inputs are the JSON/CSV files the rules write (``cdrl evaluate``, ``cdrl class-accuracy``,
``cdrl compose``, ``cdrl inpaint``, ``cdrl ood``, ``cdrl bench``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cdrl.report.tables import EXTRACTOR_NAMES, Published

__all__ = ["guidance_table", "compose_table", "inpaint_table", "ood_table", "speed_table"]


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
               "n_samples": g["num_samples"]}
        for ex in ev["metrics"]:
            m = _json(base / f"guided-w{w:g}-n{g['num_samples']}-{ex}.json")
            name = EXTRACTOR_NAMES.get(ex, ex)
            for key, label in (("fid", "FID"), ("kid_mean", "KID"), ("isc_mean", "IS")):
                if m.get(key) is not None:
                    row[f"{label} ({name})"] = m[key]
        if g.get("class_accuracy", False):
            row["class_accuracy"] = _json(base / f"guided-w{w:g}-n{g['num_samples']}"
                                                 "-accuracy.json")["class_accuracy"]
        for metric, label in (("fid", "published_FID"), ("is", "published_IS")):
            row[label] = pub.get("CDRL-cond", compare, metric, f"cfg:{w:.1f}")[0]
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
        rows.append({"run": c["run"], "in_dist": m["in_dist"], "ood": name, "auroc": vals["auroc"],
                     "num_in": m["num_in"], "num_ood": vals["num"], "level": m["level"],
                     "published": value,
                     "published_setting": f"CIFAR-10 vs {key}" if key else "",
                     "published_source": source or ""})
    return pd.DataFrame(rows)


def speed_table(preset: dict, root: Path) -> pd.DataFrame:
    """Every speed case's ``cdrl bench`` rows, with the case name in front."""
    frames = []
    for case in preset.get("speed", {}):
        df = pd.read_csv(root / "speed" / f"{case}.csv")
        df.insert(0, "case", case)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
