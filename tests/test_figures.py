"""Figures people read (cdrl.report.figures, cdrl.report.curves): one colour per method in every
figure, the paper's FIDs never on an axis of another dataset's or feature space's numbers, and the
claims figure's rows and verdict colours. Drawn from the committed reference tables of the MNIST
preset's headline part, and from small tables written here."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer

from cdrl.report.curves import draw_learning_curves
from cdrl.report.figures import (
    VERDICT_COLOURS,
    claims_figure,
    draw_claims,
    draw_fid_vs_steps,
    draw_training_curves,
    method_colour,
    method_palette,
)
from tests.conftest import ROOT

REF = ROOT / "results" / "reference" / "mnist-headline" / "tables"


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def _method(label: str) -> str:
    """``CDRL, measured (5 seeds)`` / ``DRL (3 seeds)`` -> the run label."""
    return re.split(r", | \(", label)[0]


def _legend_colours(fig) -> dict[str, tuple]:
    """Legend label -> RGBA of its handle, over the figure's legends."""
    out = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            colour = handle.get_color() if hasattr(handle, "get_color") else None
            if colour is not None:
                out[text.get_text()] = to_rgba(colour)
    return out


def _line_colours(ax) -> set[tuple]:
    return {to_rgba(line.get_color()) for line in ax.get_lines()}


def _stats(tmp_path, labels: dict[str, str]) -> dict:
    runs = {}
    for key in labels:
        path = tmp_path / f"{key.replace('/', '-')}.jsonl"
        path.write_text("".join(json.dumps({"iteration": i, "loss_ebm": 1.0 / i,
                                            "loss_init": 50.0 + 1.0 / i}) + "\n"
                                for i in (10, 20, 30)))
        runs[key] = path
    return runs


# ------------------------------------------------------------------------- (a) one palette
def test_a_method_has_one_colour_in_every_panel_and_figure(tmp_path):
    assert method_colour("CDRL") != method_colour("DRL")
    assert method_colour("a label no preset uses") == method_colour("a label no preset uses")
    assert method_palette(["DRL", "CDRL", "DRL"]) == {"DRL": method_colour("DRL"),
                                                      "CDRL": method_colour("CDRL")}
    want = {m: to_rgba(method_colour(m)) for m in ("CDRL", "DRL")}
    seen: dict[str, set] = {"CDRL": set(), "DRL": set()}

    steps = draw_fid_vs_steps(pd.read_csv(REF / "sampling_steps.csv"))
    for ax in steps.axes:  # every panel: errorbar lines and plain lines, by their label
        for c in ax.containers:
            if isinstance(c, ErrorbarContainer):
                seen[_method(c.get_label())].add(to_rgba(c.lines[0].get_color()))
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                seen[_method(line.get_label())].add(to_rgba(line.get_color()))
    for label, colour in _legend_colours(steps).items():
        seen[_method(label)].add(colour)
    _close(steps)

    curves = draw_learning_curves(pd.read_csv(REF / "learning_curves.csv"))
    for ax in curves.axes:  # seaborn's lines: only the two methods' colours, both present
        assert _line_colours(ax) == set(want.values())
        for coll in ax.collections:  # the per-seed points and the interval bands
            assert {tuple(c) for c in np.round(coll.get_facecolor()[:, :3], 3)} <= {
                tuple(np.round(v[:3], 3)) for v in want.values()}
    for label, colour in _legend_colours(curves).items():
        if _method(label) in seen:
            seen[_method(label)].add(colour)
    _close(curves)

    labels = {f"{m}/seed{s}": m for m in ("DRL", "CDRL") for s in (0, 1)}  # DRL drawn first
    training = draw_training_curves(_stats(tmp_path, labels), labels)
    for ax in training.axes:  # a thin line per run and seed, in its method's colour
        assert _line_colours(ax) == set(want.values())
    for label, colour in _legend_colours(training).items():
        seen[_method(label)].add(colour)
    _close(training)

    assert seen == {m: {want[m]} for m in want}


# ------------------------------------------------------------------------- (b) published values
def test_published_fids_never_share_an_axis_with_mnist_fids():
    table = pd.read_csv(REF / "sampling_steps.csv")
    published = table["published"].dropna().to_numpy()
    measured = table["mean"].to_numpy()
    assert table["difference"].isna().all()  # CIFAR-10 Inception against 16x16 MNIST CNN
    fig = draw_fid_vs_steps(table)
    ratio_axes = []
    for ax in fig.axes:
        ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()])
        raw_published = np.isclose(ys[:, None], published[None, :]).any()
        assert not raw_published, ax.get_title()  # drawn at most normalised, never as FIDs
        if np.isclose(ys[:, None], measured[None, :]).any():
            assert ys.min() > 50, ax.get_title()  # only MNIST-CNN FIDs on a measured axis
        else:
            ratio_axes.append((ax, ys))
    assert len(ratio_axes) == 1
    ax, ys = ratio_axes[0]
    assert "relative" in ax.get_title()
    # The paper's CDRL at K = 3 relative to its K = 15: 9.67 / 4.31, on a readable scale.
    assert np.isclose(ys, 9.67 / 4.31).any()
    low, high = ax.get_ylim()
    assert low < 1.0 < 9.67 / 4.31 < high < 10
    _close(fig)


def test_published_fids_share_the_axis_where_dataset_and_features_match():
    """The paper preset on CIFAR-10 with Inception features: the table's difference is set, and
    the paper's FIDs go on the measured axis beside the run's."""
    rows = [{"dataset": "cifar10", "run": "cifar10_cdrl", "method": "CDRL", "extractor":
             "Inception", "steps": k, "seeds": 3, "mean": fid, "std": 0.2, "published": pub,
             "published_dataset": "cifar10", "difference": fid - pub, "total_steps": 6 * k,
             "seconds_per_image": 0.01 * k}
            for k, fid, pub in ((15, 4.5, 4.31), (8, 4.8, 4.58), (3, 10.1, 9.67))]
    fig = draw_fid_vs_steps(pd.DataFrame(rows))
    steps_ax = fig.axes[0]
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in steps_ax.get_lines()])
    assert np.isclose(ys, 4.31).any() and np.isclose(ys, 4.5).any()
    _close(fig)


# ------------------------------------------------------------------------- (c) claims figure
def _claim_rows(fig) -> list:
    return [sub for sub in fig.subfigs if (sub.get_gid() or "").startswith("claim:")]


def _badge(sub):
    (text,) = [t for t in sub.texts if t.get_gid() == "verdict"]
    return text.get_text(), to_rgba(text.get_bbox_patch().get_facecolor())


def _part_colours(sub) -> list[tuple[str, tuple]]:
    """(part verdict, colour) of each drawn part, top to bottom over the row's axes."""
    out = []
    for ax in sub.axes:
        for line in ax.get_lines():
            if (line.get_gid() or "").startswith("part:"):
                out.append((line.get_gid()[5:], to_rgba(line.get_color())))
    return out


def test_claims_figure_has_one_row_per_claim_in_its_verdict_colour(tmp_path):
    table = pd.read_csv(REF / "claims.csv")
    fig = draw_claims(table)
    claims = table[table["claim"] != "stability"]
    rows = _claim_rows(fig)
    assert [r.get_gid() for r in rows] == [f"claim:{c}" for c in dict.fromkeys(claims["claim"])]
    for sub in rows:
        parts = claims[claims["claim"] == sub.get_gid()[6:]]
        verdict = parts["verdict"].iloc[0]
        assert _badge(sub) == (verdict, to_rgba(VERDICT_COLOURS[verdict]))
        assert sum(len(ax.get_yticks()) for ax in sub.axes) == len(parts)  # a line per part
        assert _part_colours(sub) == [(v, to_rgba(VERDICT_COLOURS[v]))
                                      for v in parts["part_verdict"]]
        for ax in sub.axes:  # the rule's threshold is drawn, inside the x-range
            thresholds = [line.get_xdata()[0] for line in ax.get_lines()
                          if line.get_linestyle() == "--"]
            assert thresholds and all(ax.get_xlim()[0] < t < ax.get_xlim()[1]
                                      for t in thresholds)
    # C2's threshold is its minimum ratio, 1.5; C6's the bound 0.25.
    c2 = next(r for r in rows if r.get_gid() == "claim:C2")
    assert {line.get_xdata()[0] for ax in c2.axes for line in ax.get_lines()
            if line.get_linestyle() == "--"} == {1.5}
    (legend,) = fig.legends
    assert "CDRL 5 of 5, DRL 5 of 5" in legend.get_title().get_text()  # stability: a note
    _close(fig)
    claims_figure(table, tmp_path / "claims.png")
    assert (tmp_path / "claims.png").stat().st_size > 10_000 and (tmp_path / "claims.pdf").is_file()


def test_claims_figure_shows_each_verdict_and_a_claim_without_data():
    base = {"statement": "s", "published": "", "source": "", "a_n": 3, "b_n": 3,
            "rule": "welch", "decision": "", "alpha": 0.05, "p_value": 0.01, "reason": ""}
    rows = [
        {**base, "claim": "C1", "part": 1, "quantity": "FID", "a": "CDRL", "b": "DRL",
         "effect": "difference CDRL - DRL", "estimate": 5.0, "effect_low": 2.0,
         "effect_high": 8.0, "threshold": 0.0, "part_verdict": "not reproduced",
         "verdict": "not reproduced"},
        {**base, "claim": "C8", "part": 1, "quantity": "AUROC, in vs noise", "a": "noise",
         "b": "", "effect": "", "estimate": 0.6, "effect_low": 0.4, "effect_high": 0.8,
         "threshold": 0.5, "part_verdict": "inconclusive", "verdict": "inconclusive"},
        {**base, "claim": "C8", "part": 2, "quantity": "AUROC, in vs photos", "a": "photos",
         "b": "", "effect": "", "estimate": 0.9, "effect_low": 0.8, "effect_high": 0.95,
         "threshold": 0.5, "part_verdict": "reproduced", "verdict": "inconclusive"},
        {**base, "claim": "C9", "part": 1, "quantity": "", "a": "", "b": "", "effect": "",
         "estimate": None, "effect_low": None, "effect_high": None, "threshold": None,
         "part_verdict": "inconclusive", "verdict": "inconclusive",
         "reason": "no data in this preset"},
    ]
    fig = draw_claims(pd.DataFrame(rows))
    subs = _claim_rows(fig)
    assert [s.get_gid() for s in subs] == ["claim:C1", "claim:C8", "claim:C9"]
    assert [_badge(s)[0] for s in subs] == ["not reproduced", "inconclusive", "inconclusive"]
    assert _part_colours(subs[1]) == [("inconclusive", to_rgba(VERDICT_COLOURS["inconclusive"])),
                                      ("reproduced", to_rgba(VERDICT_COLOURS["reproduced"]))]
    assert any("no data in this preset" in t.get_text() for ax in subs[2].axes for t in ax.texts)
    assert not _part_colours(subs[2])
    _close(fig)


# ------------------------------------------------------------------------- the report
def test_the_report_opens_its_results_with_the_claims():
    """Snakemake's report sorts its categories by name: "Claims" comes first, without a number
    in front ("0 Claims" read as "no claims"), and holds the figure, the table and the CSV."""
    rules = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    categories = sorted(set(re.findall(r'category="([^"]+)"', rules)), key=str.casefold)
    assert categories[0] == "Claims" and not any(c[0].isdigit() for c in categories)
    claims = re.findall(r'"(results/[^"]+)",\s*caption="[^"]+",\s*category="Claims"', rules)
    assert sorted(claims) == ["results/figures/claims.png", "results/tables/claims.csv",
                              "results/tables/claims.html"]
    assert "`claims.png`_" in (ROOT / "workflow" / "report" / "workflow.rst").read_text()


@pytest.mark.parametrize("name", ["claims.png", "fid_vs_steps.png", "learning_curves.png"])
def test_the_reference_figures_are_committed(name):
    assert (ROOT / "results" / "reference" / "mnist-headline" / "figures" / name).stat().st_size \
        > 10_000
