"""The preset's experiment matrix (cdrl.plan.experiments) and the table builders (cdrl.report.tables)."""

import json
import math

import pandas as pd
import pytest
import yaml

from cdrl.core.config import ConfigError, apply_overrides, config_from_dict, config_to_dict
from cdrl.plan.experiments import resolve_run, run_instances, run_seeds
from cdrl.report import tables
from tests.conftest import ROOT, markdown_rows

PRESETS = ROOT / "workflow" / "config"
PUBLISHED = ROOT / "workflow" / "data" / "published.csv"
LONG_COLUMNS = ["dataset", "run", "method", "metric", "extractor", "steps", "n_samples", "seeds",
                "mean", "std", "note", "published", "published_dataset", "difference",
                "published_source"]


def test_overrides_are_dotted_and_do_not_touch_the_input():
    base = {"train": {"iterations": 10, "ebm_optim": {"lr": 1.0}}, "seed": 0}
    out = apply_overrides(base, {"train.ebm_optim.lr": 0.5, "sample.steps": 3})
    assert out["train"]["ebm_optim"]["lr"] == 0.5 and out["sample"] == {"steps": 3}
    assert base["train"]["ebm_optim"]["lr"] == 1.0
    with pytest.raises(ConfigError, match="train.iterations is a int, not a section"):
        apply_overrides(base, {"train.iterations.x": 1})


def test_overrides_also_take_key_value_strings_with_yaml_values():
    """`cdrl bench --set` passes ``KEY=VALUE`` strings through the same parser: the values are
    YAML, the items apply in order, a missing section is made (the schema then rejects an unknown
    one) and an item without ``=`` or a key through a non-section names ``--set``."""
    base = {"train": {"iterations": 10}}
    out = apply_overrides(base, ["train.iterations=3", "sample.tweedie=false", "ebm.ch_mult=[1, 2]",
                                 "ebm={width: 4}", "ebm.width=8", "data.name=digits16"])
    assert out == {"train": {"iterations": 3}, "sample": {"tweedie": False},
                   "ebm": {"width": 8}, "data": {"name": "digits16"}}
    assert base == {"train": {"iterations": 10}}
    with pytest.raises(ConfigError, match=r"--set 'ebm.width': expected KEY=VALUE"):
        apply_overrides(base, ["ebm.width"], where="--set")
    with pytest.raises(ConfigError, match=r"--set: 'train.iterations.x': train.iterations is"):
        apply_overrides(base, ["train.iterations.x=1"], where="--set")
    with pytest.raises(ConfigError, match="unknown config key ebmx"):
        config_from_dict(apply_overrides(config_to_dict(config_from_dict({})), ["ebmx.width=3"]))


@pytest.mark.parametrize("preset", ["smoke", "paper", "tiny"])
def test_every_run_of_every_preset_resolves(preset):
    cfg = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
    pairs = run_instances(cfg)
    assert pairs
    for run, seed in pairs:
        resolved = resolve_run(cfg, run, seed, ROOT / cfg["experiments_dir"])
        assert resolved["seed"] == seed


def test_smoke_preset_has_the_matrix_the_issue_asks_for():
    cfg = yaml.safe_load((PRESETS / "smoke.yaml").read_text())
    methods = {resolve_run(cfg, r, 0, ROOT / cfg["experiments_dir"])["method"]
               for r in cfg["tables"]["main"]}
    assert methods == {"cdrl", "drl", "short_run", "coopnets", "replay_buffer"}
    abl = cfg["tables"]["ablations"]
    assert set(abl) == {"noise_schedule", "variance_reduction", "training_steps", "initializer"}
    get = {r: resolve_run(cfg, r, 0, ROOT / cfg["experiments_dir"]) for r in cfg["runs"]}
    assert get["digits_cdrl_drl_schedule"]["schedule"]["kind"] == "drl"
    assert get["digits_cdrl_no_vr"]["train"]["variance_reduction"] is False
    assert [get[r]["train"]["langevin_steps"] for r in abl["training_steps"]["runs"]] == [5, 15, 30]
    assert get["digits_cdrl_no_init"]["initializer"]["arch"] == "none"
    assert cfg["tables"]["sampling_steps"]["digits_cdrl"] == [15, 8, 5, 3, 0]
    assert "inception" in cfg["evaluation"]["digits16"]["headline_metrics"]


def test_paper_preset_is_at_paper_scale():
    cfg = yaml.safe_load((PRESETS / "paper.yaml").read_text())
    cdrl = resolve_run(cfg, "cifar10_cdrl", 0, ROOT / cfg["experiments_dir"])
    assert cdrl["train"]["batch_size"] == 256 and cdrl["train"]["iterations"] >= 500_000
    assert run_seeds(cfg, "cifar10_cdrl") == [0, 1, 2] == run_seeds(cfg, "cifar10_drl")
    assert {r["data"]["name"] for r in (resolve_run(cfg, n, 0) for n in cfg["tables"]["main"])} \
        == {"cifar10", "imagenet32", "celeba64"}
    assert all(ev["num_samples"] == 50_000 for ev in cfg["evaluation"].values())


def test_bad_override_names_the_run_and_key(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"method": "cdrl"}))
    cfg = {"runs": {"r1": {"base": "base", "set": {"train.iterationz": 3}}}}
    with pytest.raises(ConfigError, match=r"runs.r1 .*train.iterationz"):
        resolve_run(cfg, "r1", 0, tmp_path)
    with pytest.raises(ConfigError, match="names no file"):
        resolve_run({"runs": {"r2": {"base": "nope"}}}, "r2", 0, tmp_path)
    with pytest.raises(ConfigError, match="not defined under 'runs:'"):
        resolve_run(cfg, "r3", 0, tmp_path)


# ---------------------------------------------------------------------------------------------
# Tables from synthetic metric files.

def _preset():
    run = {"label": "CDRL", "published": "CDRL", "method": "cdrl", "dataset": "cifar10",
           "seeds": [0, 1, 2], "train_steps": 15, "sample_steps": 15, "iterations": 10,
           "levels": 6, "resources": {"threads": 1, "gpu": 1}}
    return {"runs": {"c": run, "c_k5": {**run, "label": "CDRL K5", "seeds": [0],
                                        "train_steps": 5, "sample_steps": 5}},
            "evaluation": {"cifar10": {"reference": "cifar10:train", "num_samples": 8,
                                       "metrics": {"inception": ["fid", "kid"]}}},
            "tables": {"main": ["c"], "ablations": {"k": {"title": "K", "runs": ["c", "c_k5"]}},
                       "sampling_steps": {"c": [15, 8]}},
            "toy": {}}


def _write_metric(root, run, seed, k, fid, secs=0.5):
    path = root / "metrics" / run / f"seed{seed}" / f"k{k}-n8-inception.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fid": fid, "kid_mean": 0.01, "kid_std": 0.001,
                                "provenance": {"samples_meta": {"seconds_per_image": secs}}}))


def test_tables_put_reproduced_beside_published(tmp_path):
    pub = tables.Published(PUBLISHED)
    for seed, fid in enumerate([4.0, 5.0, 6.0]):
        _write_metric(tmp_path, "c", seed, 15, fid)
        _write_metric(tmp_path, "c", seed, 8, fid + 1, secs=0.3)
    _write_metric(tmp_path, "c_k5", 0, 5, 7.0)
    main = tables.main_table(_preset(), tmp_path, pub)
    fid = main[main.metric == "FID"].iloc[0]
    assert fid["mean"] == pytest.approx(5.0) and fid["std"] == pytest.approx(1.0)
    assert fid["seeds"] == 3 and fid["published"] == 4.31
    assert fid["difference"] == pytest.approx(5.0 - 4.31)
    assert "Zhu et al." in fid["published_source"]
    steps = tables.steps_table(_preset(), tmp_path, pub)
    assert list(steps["published"]) == [4.31, 4.58]  # K = 15 is the main row; K = 8 spec 5.3
    assert list(steps["total_steps"]) == [90, 48]
    assert steps["seconds_per_image"].iloc[1] == pytest.approx(0.3)
    abl = tables.ablation_table(_preset(), tmp_path, pub)
    assert list(abl["vs_first"]) == [0.0, pytest.approx(2.0)]
    tables.write_table(main, tmp_path / "out" / "main", "Main", tables.main_view(main))
    back = pd.read_csv(tmp_path / "out" / "main.csv")  # the long form, one row per number
    assert list(back.columns) == LONG_COLUMNS and len(back) == 2
    assert back["mean"].iloc[0] == pytest.approx(5.0)
    # For people: one row per method, metrics as columns, the paper and the difference beside.
    header, rows = markdown_rows((tmp_path / "out" / "main.md").read_text())
    assert header == ["method", "dataset", "features", "samples", "FID", "FID paper",
                      "FID difference", "KID"]
    assert rows == [["CDRL", "CIFAR-10", "Inception", "8", "5 ± 1 (3 seeds)", "4.31 [1]",
                     "+0.69", "0.01 ± 0 (3 seeds)"]]
    md = (tmp_path / "out" / "main.md").read_text()
    assert "[1] Zhu et al. 2024 (ICLR), arXiv 2309.05153, Table 1" in md
    tex = (tmp_path / "out" / "main.tex").read_text()
    assert r"\begin{tabular}{llllllll}" in tex and r"5 $\pm$ 1 (3 seeds) & 4.31 [1] & +0.69" in tex
    assert r"\toprule" in tex and "arXiv 2309.05153, Table 1" in tex


def test_steps_and_ablation_views(tmp_path):
    pub = tables.Published(PUBLISHED)
    for seed, fid in enumerate([4.0, 5.0, 6.0]):
        _write_metric(tmp_path, "c", seed, 15, fid)
        _write_metric(tmp_path, "c", seed, 8, fid + 1, secs=0.3)
    _write_metric(tmp_path, "c_k5", 0, 5, 7.0)
    steps = tables.steps_view(tables.steps_table(_preset(), tmp_path, pub))
    assert list(steps.df["K per level"]) == ["15", "8"]
    assert list(steps.df["FID paper"]) == ["4.31 [1]", "4.58 [2]"]
    assert list(steps.df["FID difference"]) == ["+0.69", "+1.42"]
    assert any("table of FID against Langevin steps" in n for n in steps.notes)
    abl = tables.ablation_view(tables.ablation_table(_preset(), tmp_path, pub))
    assert list(abl.df["FID"]) == ["5 ± 1 (3 seeds)", "7 (1 seed)"]
    assert list(abl.df["FID vs first variant"]) == ["reference", "+2"]


def test_published_sources_cite_the_papers():
    """Every published number names its paper (arXiv), table or figure, and says when it was
    read off a plot; no internal labels (spec sections, bracketed source tags)."""
    pub = pd.read_csv(PUBLISHED, keep_default_na=False)
    for _, row in pub.iterrows():
        text = f"{row.source} {row.note} {row.table}"
        assert "spec " not in text and "[" not in text and "]" not in text, row.source
        assert "arXiv 2309.05153" in row.source or "arXiv 2012.08125" in row.source, row.source
        if "figure" in row.table:
            assert "read off" in row.source, row.source
    cfg = pub[pub.key.str.startswith("cfg:")]
    assert len(cfg) == 26 and cfg.source.str.contains("guidance figure").all()
    value, source = tables.Published(PUBLISHED).get("DRL", "cifar10", "fid")
    assert value == 9.58 and source.startswith("Gao et al. 2021 (ICLR), arXiv 2012.08125")


def test_no_difference_across_datasets_or_extractors(tmp_path):
    preset = _preset()
    preset["runs"]["c"]["dataset"] = "digits16"
    preset["evaluation"] = {"digits16": {"reference": "digits16:test", "num_samples": 8,
                                         "metrics": {"inception": ["fid"]},
                                         "compare_to": "cifar10"}}
    for seed in range(3):
        _write_metric(tmp_path, "c", seed, 15, 50.0)
    main = tables.main_table(preset, tmp_path, tables.Published(PUBLISHED))
    row = main.iloc[0]
    assert row["published"] == 4.31 and row["published_dataset"] == "cifar10"
    assert row["difference"] is None or math.isnan(row["difference"])
    view = tables.main_view(main)
    assert view.df.loc[0, "FID paper"] == "4.31 on CIFAR-10 [1]"
    assert view.df.loc[0, "FID difference"] == "–"


def test_training_cost_from_stats(tmp_path):
    stats = tmp_path / "runs" / "c" / "seed0" / "stats.jsonl"
    stats.parent.mkdir(parents=True)
    stats.write_text("\n".join(json.dumps({"iteration": i, "sec_per_iter": 2.0,
                                           "peak_mem_mb": 100.0 * i}) for i in (5, 10)))
    cost = tables.cost_table(_preset(), tmp_path)
    row = cost.iloc[0]
    assert row["iterations"] == 10 and row["wall_hours"] == pytest.approx(20 / 3600)
    assert row["unit"] == "GPU-hours" and row["peak_mem_mb"] == 1000.0
    view = tables.cost_view(cost).df.iloc[0]
    assert view["s / iteration"] == "2 (1 seed)" and view["device-hours unit"] == "GPU-hours"


# ----------------------------------------------------------------------------- parts
def _mnist() -> dict:
    return yaml.safe_load((PRESETS / "mnist.yaml").read_text())


def test_mnist_parts_plan_only_what_their_claims_read():
    from cdrl.plan.experiments import select_part

    preset = _mnist()
    head = select_part({**preset, "part": "headline"})
    assert sorted(head["runs"]) == ["mnist_cdrl", "mnist_drl"]
    assert [c["id"] for c in head["claims"]] == ["C1", "C2", "C3", "C6"]
    assert set(head["tables"]["sampling_steps"]) == {"mnist_cdrl", "mnist_drl"}
    assert head["curves"]["runs"] == ["mnist_cdrl", "mnist_drl"] and "mnist16" in head["speed"]
    assert "downstream" not in head and head["tables"]["ablations"] == {}
    abl = select_part({**preset, "part": "ablations"})
    assert sorted(abl["runs"]) == ["mnist_cdrl", "mnist_cdrl_drl_schedule", "mnist_cdrl_no_vr"]
    assert [c["id"] for c in abl["claims"]] == ["C4", "C5"]
    assert abl["tables"]["sampling_steps"] == {} and "speed" not in abl and "headline" not in \
        abl["tables"] and set(abl["tables"]["ablations"]) == {"noise_schedule", "variance_reduction"}
    # The seeds a part trains: 5 of CDRL and its ablations in the headline and ablations parts,
    # the preset's 12 a side in the parts that decide C5 and C4 again.
    assert head["runs"]["mnist_cdrl"]["seeds"] == [0, 1, 2, 3, 4]
    assert {r: len(s["seeds"]) for r, s in abl["runs"].items()} == dict.fromkeys(abl["runs"], 5)
    vr = select_part({**preset, "part": "variance_reduction"})
    assert [c["id"] for c in vr["claims"]] == ["C5"]
    assert {r: s["seeds"] for r, s in vr["runs"].items()} == {
        "mnist_cdrl": list(range(12)), "mnist_cdrl_no_vr": list(range(12))}
    sched = select_part({**preset, "part": "noise_schedule"})
    assert sorted(sched["runs"]) == ["mnist_cdrl", "mnist_cdrl_drl_schedule"]
    assert preset["runs"]["mnist_cdrl"]["seeds"] == list(range(12))  # the whole preset: unchanged
    down = select_part({**preset, "part": "downstream"})
    assert set(down["downstream"]) == {"guidance", "ood", "inpaint", "compose"}
    assert {"mnist_cond", "toy_compose", "mnist_cdrl_k30"} <= set(down["runs"])
    assert "curves" not in down and down["tables"]["sampling_steps"] == {}
    # Every run and claim falls in some part, and the whole preset is untouched without one.
    parts = [select_part({**preset, "part": p}) for p in preset["parts"]]
    assert set().union(*(p["runs"] for p in parts)) == set(preset["runs"])
    assert sorted({c["id"] for p in parts for c in p["claims"]}) == sorted(
        c["id"] for c in preset["claims"])
    assert select_part(preset) is preset


def test_an_unknown_part_or_claim_is_named():
    from cdrl.plan.experiments import select_part

    with pytest.raises(ConfigError, match="'nope' is not defined under 'parts:'.*headline"):
        select_part({**_mnist(), "part": "nope"})
    bad = {**_mnist(), "part": "x", "parts": {"x": {"claims": ["C99"]}}}
    with pytest.raises(ConfigError, match=r"\['C99'\] are not claims"):
        select_part(bad)
    stray = {**_mnist(), "part": "x", "parts": {"x": {"claims": ["C1"],
                                                       "seeds": {"mnist_coopnets": [0]}}}}
    with pytest.raises(ConfigError, match="parts.x.seeds: 'mnist_coopnets' is not a run of this "
                                          "part.*mnist_cdrl"):
        select_part(stray)
