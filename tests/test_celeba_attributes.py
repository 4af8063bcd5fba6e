"""The CelebA attribute classifier and the composition metric it gives (C9), and the pre-flight
check of torch-fidelity's Inception weights for the Inception Score (C7).

    .venv/bin/python -m pytest tests/test_celeba_attributes.py

Everything here uses files the tests write: fake CelebA folders in the real layout, a network
wired by hand, stand-ins for the Inception weights. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cdrl.cli import main as cli_main
from cdrl.data.fake_formats import CELEBA_ATTRIBUTES
from cdrl.eval import attributes as at
from cdrl.eval import inception_weights as iw
from cdrl.eval.inception_files import TORCH_FIDELITY, TORCH_FIDELITY_FILE
from cdrl.plan import preflight as pf
from cdrl.report import claims as cl
from tests.conftest import ROOT, SNAKEMAKE, stage_dataset_stand_ins, subprocess_env

PAPER = ROOT / "workflow" / "config" / "paper.yaml"


# ---- a fake CelebA with one easy attribute ---------------------------------------------------------

def write_easy_celeba(root: Path, n_train: int = 64, n_val: int = 32, n_test: int = 4,
                      seed: int = 0) -> Path:
    """CelebA's layout (178x218 JPEGs, list_attr_celeba.txt, list_eval_partition.txt) where
    ``Male`` is 1 exactly for the bright images; every other attribute is a coin flip."""
    rng = np.random.default_rng(seed)
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    n = n_train + n_val + n_test
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    values = rng.choice([-1, 1], (n, len(CELEBA_ATTRIBUTES)))
    male = CELEBA_ATTRIBUTES.index("Male")
    values[:, male] = np.where(np.arange(n) % 2 == 0, 1, -1)
    for name, row in zip(names, values, strict=True):
        level = 190 if row[male] == 1 else 60
        pixels = np.clip(level + rng.normal(0, 25, (218, 178, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(base / "img_align_celeba" / name, quality=90)
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row)
              for name, row in zip(names, values, strict=True)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    part = [0] * n_train + [1] * n_val + [2] * n_test
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(names, part, strict=True)))
    return root


def test_classifier_learns_an_easy_attribute_and_reports_held_out_accuracy(tmp_path):
    """Trained by the command the workflow runs, on 64 fake CelebA images on the CPU in seconds:
    at least 90 % held-out accuracy on the easy attribute (brightness), and a sidecar with the
    accuracy of every attribute it was asked for."""
    root = write_easy_celeba(tmp_path / "data")
    out = tmp_path / "w" / "celeba64-attributes.pth"
    assert cli_main(["attribute-classifier", "--dataset", "celeba64", "--root", str(root),
                     "--attributes", "Male,Smiling,~Young", "--out", str(out), "--epochs", "8",
                     "--batch-size", "16", "--width", "8", "--lr", "0.01",
                     "--device", "cpu"]) == 0
    info = json.loads((out.parent / (out.name + ".json")).read_text())
    assert info["attributes"] == ["Male", "Smiling", "Young"]  # the ~ prefix dropped
    held = info["heldout"]
    assert held["split"] == "val" and held["n"] == 32
    assert held["per_attribute"]["Male"]["accuracy"] >= 0.9, held
    assert held["per_attribute"]["Male"]["positive_rate"] == 0.5
    assert set(held["per_attribute"]) == {"Male", "Smiling", "Young"}
    assert 0 <= held["all"]["accuracy"] <= 1 and info["n_train"] == 64
    assert info["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert info["data"]["dataset"] == "celeba64" and info["train_seconds"] < 60
    net, names = at.load_attribute_classifier(out)
    assert names == ["Male", "Smiling", "Young"] and not net.training


def test_classifier_errors_name_the_bad_value(tmp_path):
    root = write_easy_celeba(tmp_path / "data", n_train=4, n_val=2, n_test=2)
    # A one-line error naming the value and the choices, exit status 2, nothing saved.
    assert cli_main(["attribute-classifier", "--root", str(root), "--attributes", "Mal",
                     "--out", str(tmp_path / "x.pth"), "--epochs", "1"]) == 2
    assert not (tmp_path / "x.pth").exists()
    from cdrl.data.images import load_image_dataset

    data = load_image_dataset("celeba64", root, "train")
    with pytest.raises(ValueError, match=r"unknown attributes \['Mal'\].*Male"):
        at.train_attribute_classifier(data, data, ["Mal"], epochs=1)
    (tmp_path / "bad.pth").write_bytes(b"")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an attribute classifier"):
        at.load_attribute_classifier(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="cdrl attribute-classifier"):
        at.load_attribute_classifier(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"uint8 \[N, 3, 64, 64\]"):
        at.to_input(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ---- the composition metric ---------------------------------------------------------------------

def test_fractions_by_hand():
    present = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=bool)
    names = ["Male", "Smiling", "Young"]
    got = at.attribute_fractions(present, names, ["Male", "Smiling", "Young"])
    assert got == {"frac_Male": 0.75, "frac_Smiling": 0.75, "frac_Young": 0.75,
                   "frac_intersection": 0.25}
    got = at.attribute_fractions(present, names, ["~Male", "Smiling"])
    assert got == {"frac_~Male": 0.25, "frac_Smiling": 0.75, "frac_intersection": 0.25}
    with pytest.raises(ValueError, match="knows only"):
        at.attribute_fractions(present, names, ["Bald"])


def _wired_classifier(path: Path) -> None:
    """An AttributeCNN whose answers are known: one channel carries relu(pixel / 127.5 - 1) of a
    flat image through all stages (batch norm at its identity init), so the pooled feature is
    s = max(x, 0); Male is s > 0.5, Smiling s > 0.05, Young s < 0.05. Flat images of value 20,
    140 and 240 (s = 0, 0.098, 0.882) give (Male, Smiling, Young) = 001, 010 and 110."""
    net = at.AttributeCNN(3, width=1).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.fill_(1.0)
        net.convs[0][0].weight.fill_(1 / 27)             # the 3x3x3 mean
        for stage in net.convs[1:]:
            stage[0].weight[0, 0, 1, 1] = 1.0             # channel 0 passed on
        net.head.weight[:, 0] = torch.tensor([1.0, 1.0, -1.0])
        net.head.bias.copy_(torch.tensor([-0.5, -0.05, 0.05]))
    at.save_attribute_classifier(net, {"attributes": ["Male", "Smiling", "Young"], "width": 1,
                                       "heldout": {"split": "val", "n": 0}}, path,
                                 {"data": {"dataset": "wired by hand"}})


def _flat(values: list[int]) -> np.ndarray:
    """Float [-1, 1] images as `cdrl compose` stores them, each of one grey value."""
    x = np.array(values, dtype=np.float32)[:, None, None, None] / 127.5 - 1
    return np.broadcast_to(x, (len(values), 3, 64, 64)).copy()


def _compose_npz(path: Path, conditions: list[str], settings: dict) -> Path:
    meta = {"conditions": conditions, "guidance": 3.0, "num": 4, "seed": 0,
            "dataset": "celeba64", "iteration": 10, "run_dir": "r"}
    np.savez(path, **{k: _flat(v) for k, v in settings.items()}, meta=np.array(json.dumps(meta)))
    return path


def test_compose_score_on_fake_samples_gives_the_hand_counted_fractions(tmp_path):
    weights = tmp_path / "celeba64-attributes.pth"
    _wired_classifier(weights)
    settings = {"composed": [240, 240, 140, 20], "Male": [240, 140, 20, 20],
                "Smiling": [140, 140, 140, 20], "~Young": [140, 20, 20, 20],
                "unconditional": [20, 20, 20, 20]}
    npz = _compose_npz(tmp_path / "c.npz", ["Male", "Smiling", "~Young"], settings)
    out = tmp_path / "c.json"
    assert cli_main(["compose-score", "--samples", str(npz), "--attribute-classifier",
                     str(weights), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    # Male: 240 only; Smiling: 140 and 240; ~Young (not Young): 140 and 240.
    expected = {"composed": (0.5, 0.75, 0.75, 0.5), "Male": (0.25, 0.5, 0.5, 0.25),
                "Smiling": (0.0, 0.75, 0.75, 0.0), "~Young": (0.0, 0.25, 0.25, 0.0),
                "unconditional": (0.0, 0.0, 0.0, 0.0)}
    keys = ("frac_Male", "frac_Smiling", "frac_~Young", "frac_intersection")
    assert {k: tuple(v[key] for key in keys) for k, v in res["settings"].items()} == expected
    assert res["classifier"]["attributes"] == ["Male", "Smiling", "Young"]
    assert res["classifier"]["threshold"] == 0.5 and res["guidance"] == 3.0
    # Without the classifier an image result has no fractions, and C9 says why.
    assert cli_main(["compose-score", "--samples", str(npz), "--out",
                     str(tmp_path / "q.json")]) == 0
    assert "settings" not in json.loads((tmp_path / "q.json").read_text())


def test_claim_c9_reads_the_celeba_fractions(tmp_path):
    """The JSON shape the claims read: C9 compares, seed by seed, the composed setting's share of
    samples with all conditions (Male: 240 only; Smiling: 140 and 240) against each single
    condition's."""
    weights = tmp_path / "w.pth"
    _wired_classifier(weights)
    conditions = ["Male", "Smiling"]
    comp = tmp_path / "downstream" / "compose"
    comp.mkdir(parents=True)
    composed = [[240, 240, 240, 20], [240, 240, 240, 20], [240, 240, 240, 240]]  # .75 .75 1
    smiling = [[140, 140, 20, 20], [240, 140, 20, 20], [140, 20, 20, 20]]         # 0 .25 0
    for seed in range(3):
        npz = _compose_npz(tmp_path / f"s{seed}.npz", conditions, {
            "composed": composed[seed], "Male": [240, 20, 20, 20], "Smiling": smiling[seed],
            "unconditional": [20] * 4})
        assert cli_main(["compose-score", "--samples", str(npz), "--attribute-classifier",
                         str(weights), "--out", str(comp / f"cc-seed{seed}.json")]) == 0
    preset = {"runs": {"cc": {"seeds": [0, 1, 2], "label": "c"}}, "tables": {},
              "downstream": {"compose": {"run": "cc", "conditions": conditions}},
              "claims": [{"id": "C9", "statement": "s", "published": "p", "source": "x",
                          "kind": "compose", "rule": "paired"}]}
    assert sorted(cl.claim_files(preset, tmp_path)) == [
        str(comp / f"cc-seed{s}.json") for s in range(3)]
    rows = [r for r in cl.evaluate_claims(preset, tmp_path) if r["claim"] == "C9"]
    assert [r["b"] for r in rows] == ["Male alone", "Smiling alone"]
    assert [r["a_mean"] for r in rows] == [pytest.approx(2.5 / 3)] * 2
    assert rows[0]["b_mean"] == 0.25 and rows[1]["b_mean"] == pytest.approx(0.25 / 3)
    assert [r["part_verdict"] for r in rows] == ["reproduced", "reproduced"]
    assert rows[0]["verdict"] == "reproduced"


# ---- torch-fidelity's Inception weights (the Inception Score) ---------------------------------------

def test_paper_preset_reads_the_inception_score_and_uses_torch_fidelity_weights():
    paper = yaml.safe_load(PAPER.read_text())
    assert pf.isc_claims(paper) == ["C7"]
    assert paper["inception_weights"] == TORCH_FIDELITY


def test_preflight_reports_missing_is_weights_with_the_path_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / TORCH_FIDELITY_FILE
    value, problem, note = pf.inception_weights_arg(TORCH_FIDELITY, ROOT, ["C7"])
    assert value == TORCH_FIDELITY and note is None
    text = problem.text()
    assert str(cached) in text and "make stage-is" in text and "needed by claim C7" in text
    assert "Inception Score" in text
    # The paper preset as a whole: the same problem among its others (no datasets here).
    paper = yaml.safe_load(PAPER.read_text())
    problems, _ = pf.preset_problems(paper, {}, ROOT)
    assert any(str(cached) in p.text() for p in problems)
    # Without a claim that reads the IS, jobs may still download: a note, no problem.
    _, problem, note = pf.inception_weights_arg(TORCH_FIDELITY, ROOT)
    assert problem is None and "will download" in note and "make stage-is" in note
    # Staged (only presence is checked while planning): nothing to report.
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert pf.inception_weights_arg(TORCH_FIDELITY, ROOT, ["C7"]) == (TORCH_FIDELITY, None, None)


def test_preflight_notes_that_fid_port_weights_give_no_inception_score(tmp_path, monkeypatch):
    stand_in = tmp_path / "fid-port.pth"
    stand_in.write_bytes(b"")
    monkeypatch.setenv("CDRL_INCEPTION_WEIGHTS", str(stand_in))
    value, problem, note = pf.inception_weights_arg("fid-port", ROOT, ["C7"])
    assert value == str(stand_in) and problem is None
    assert "C7" in note and "inception_weights: torch-fidelity" in note
    assert pf.inception_weights_arg("fid-port", ROOT) == (str(stand_in), None, None)


def _fake_torch_fidelity_file(path: Path, with_fc: bool = True) -> Path:
    state = {"Conv2d_1a_3x3.conv.weight": torch.zeros(2)}
    if with_fc:
        state |= {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save(state, path)
    return path


def test_staging_checks_the_hash_and_the_classifier(tmp_path, monkeypatch):
    fake = _fake_torch_fidelity_file(tmp_path / "copy.pth")
    with pytest.raises(ValueError, match="does not start with 6726825d"):
        iw.stage_torch_fidelity(tmp_path / "dest", source=fake)
    assert not (tmp_path / "dest" / TORCH_FIDELITY_FILE).exists()
    # With the expected prefix set to this stand-in's, the rest of the step runs as for the
    # real file: copied, the classifier found, a sidecar written; a second call keeps it.
    monkeypatch.setattr(iw, "TORCH_FIDELITY_SHA256_PREFIX", iw.sha256_file(fake)[:8])
    dest = iw.stage_torch_fidelity(tmp_path / "dest", source=fake)
    assert dest == tmp_path / "dest" / TORCH_FIDELITY_FILE and dest.read_bytes() == \
        fake.read_bytes()
    side = json.loads(iw.sidecar_path(dest).read_text())
    assert side["has_fc"] and side["sha256"] == iw.sha256_file(dest)
    mtime = dest.stat().st_mtime_ns
    assert iw.stage_torch_fidelity(tmp_path / "dest", source=fake) == dest
    assert dest.stat().st_mtime_ns == mtime
    no_fc = _fake_torch_fidelity_file(tmp_path / "nofc.pth", with_fc=False)
    monkeypatch.setattr(iw, "TORCH_FIDELITY_SHA256_PREFIX", iw.sha256_file(no_fc)[:8])
    with pytest.raises(ValueError, match="no 1008-way classifier"):
        iw.stage_torch_fidelity(tmp_path / "other", source=no_fc)
    # The default folder is torch's hub cache, where inception_weights: torch-fidelity reads.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(iw, "TORCH_FIDELITY_SHA256_PREFIX", iw.sha256_file(fake)[:8])
    assert iw.stage_torch_fidelity(source=fake) == \
        tmp_path / "th" / "hub" / "checkpoints" / TORCH_FIDELITY_FILE


# ---- the workflow --------------------------------------------------------------------------------

@pytest.mark.slow
def test_paper_dry_run_plans_the_classifier_before_the_compose_scores(tmp_path):
    """`snakemake -n -p` of paper.yaml: one attribute_classifier job (celeba64), a compose and a
    compose_score job per seed of celeba64_compose, the scores reading the classifier."""
    stage_dataset_stand_ins(tmp_path)
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
                           "-p", "all", "--configfile", str(PAPER), "--config", "preflight=False"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=subprocess_env(TORCH_HOME=str(tmp_path / "torch")))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    weights = "results/classifiers/celeba64-attributes.pth"
    assert "rule attribute_classifier:" in out and weights in out
    assert "--attributes Male,Smiling,Young" in out
    for seed in (0, 1, 2):
        assert f"results/downstream/compose/celeba64_compose-seed{seed}.json" in out, seed
    assert out.count(f"--attribute-classifier {weights}") == 3
    assert "--num 256" in out
    stats = [line.split() for line in out[out.index("Job stats:"):].splitlines()]
    assert ["attribute_classifier", "1"] in stats and ["compose_score", "3"] in stats
    # The Inception Score's weights: torch-fidelity's, read from torch's hub cache.
    assert "--extractor inception --weights torch-fidelity" in out


@pytest.mark.slow
def test_toy_composition_is_scored_by_its_own_step(tmp_path):
    """The tiny preset's toy composition through the workflow: sampled by compose, scored by
    compose_score without a classifier, in the JSON shape C9 and the compose table read."""
    cfg = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
    cfg["experiments_dir"] = str(ROOT / cfg.get("experiments_dir", "workflow/config/experiments"))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = cfg["downstream"]["compose"]["run"]
    target = f"results/downstream/compose/{run}-seed0.json"
    proc = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                           "--cores", "1", target, "--configfile", str(tmp_path / "test.yaml"),
                           "--config", "preflight=False"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "rule compose_score:" in out or "localrule compose_score:" in out
    assert "attribute_classifier" not in out
    res = json.loads((tmp_path / target).read_text())
    assert set(res["settings"]) >= {"composed", "unconditional", *cfg["downstream"]["compose"][
        "conditions"]}
    assert all(0 <= v["frac_intersection"] <= 1 for v in res["settings"].values())
    assert "classifier" not in res


# The composition through the workflow on fake CelebA (attribute_classifier, compose,
# compose_score) runs in the paper preset's rehearsal: tests/test_slurm.py checks its file.
