"""Tables and figures for people: cdrl.report.render (Markdown via tabulate, LaTeX via the pandas
Styler), the downstream and speed views, and image grids via torchvision's make_grid."""

import numpy as np
import pandas as pd
import pytest
import torch

from cdrl.measure.bench import COLUMNS
from cdrl.report import downstream_tables as dt
from cdrl.report.figures import image_grid
from cdrl.report.render import View, fmt, latex, markdown, measured, write_table
from cdrl.report.speed_table import speed_view
from cdrl.report.tables import Published
from tests.conftest import ROOT, markdown_rows

PUBLISHED = ROOT / "workflow" / "data" / "published.csv"


def test_measured_cells():
    assert measured(5.0, 1.0, 3) == "5 ± 1 (3 seeds)"
    assert measured(0.123456, None, 1) == "0.1235 (1 seed)"
    assert measured(float("nan"), None, 2) == "n/a"


def test_fmt_is_the_one_number_formatter():
    """render's cells, bench's CSV, the claims' evidence and the GPU summary all format with it:
    integers and whole floats below 1e6 as integers, else ``digits`` significant digits."""
    assert [fmt(v) for v in (91, np.int64(7), 180.0, 12345.0, 2e6, 0.0123456, -61.4712)] == [
        "91", "7", "180", "12345", "2e+06", "0.01235", "-61.47"]
    assert fmt(np.float32(0.123456789)) == "0.1235" and fmt(0.123456, 3) == "0.123"
    # Missing values: None, NaN, infinities, pandas' NA; the GPU summary says n/a.
    assert [fmt(v) for v in (None, float("nan"), float("inf"), pd.NA)] == ["", "", "", ""]
    assert fmt(None, missing="n/a") == fmt(float("nan"), 3, "n/a") == "n/a"
    # Text verbatim, even when it looks like a number (a CUDA version "13.0" stays so).
    assert [fmt(v) for v in ("T*K+1", "13.0", "", True)] == ["T*K+1", "13.0", "", "True"]


def test_markdown_and_latex_writers(tmp_path):
    view = View(pd.DataFrame({"method": ["A|B", "C_1"], "FID": ["5 ± 1 (3 seeds)", 4.0],
                              "FID difference": ["–", None]}),
                ["[1] Zhu et al. 2024, arXiv 2309.05153, Table 1", "100% & more"])
    md = markdown(view, "Main")
    header, rows = markdown_rows(md)
    assert md.startswith("## Main\n") and header == ["method", "FID", "FID difference"]
    assert rows == [["A\\", "B", "5 ± 1 (3 seeds)", "–"], ["C_1", "4", ""]]  # A\|B escaped
    assert "- [1] Zhu et al. 2024" in md
    tex = latex(view, "Main_table")
    assert r"\caption{Main\_table}" in tex and r"5 $\pm$ 1 (3 seeds)" in tex
    assert r"C\_1 & 4 & " in tex and "--" in tex and r"100\% \& more" in tex
    assert "\\\\\n[" not in tex and r"{\footnotesize [1] Zhu" in tex  # \\ would eat "[1]"
    write_table(pd.DataFrame({"x": [1.5]}), tmp_path / "t", "Main", view)
    assert (tmp_path / "t.csv").read_text() == "x\n1.5\n"
    assert (tmp_path / "t.md").read_text() == md
    assert "no rows" in markdown(View(pd.DataFrame()), "Empty").lower()


def _guidance_frame(pub: Published, dataset: str, fid_column: str) -> pd.DataFrame:
    rows = []
    for w, fid in ((0.0, 9.0), (1.0, 7.0)):
        row = {"run": "cond", "method": "CDRL", "dataset": dataset, "w": w, "n_samples": 20,
               "seeds": 1, fid_column: fid, "class_accuracy": 0.5, "published_dataset": "imagenet32"}
        for metric, label in (("fid", "FID"), ("is", "IS")):
            row[f"published_{label}"], row[f"published_{label}_source"] = pub.get(
                "CDRL-cond", "imagenet32", metric, f"cfg:{w:.1f}")
        rows.append(row)
    return pd.DataFrame(rows)


def test_guidance_view_cites_the_figure_and_differences_only_like_for_like():
    pub = Published(PUBLISHED)
    other = dt.guidance_view(_guidance_frame(pub, "digits16", "FID (digits CNN)"))
    assert list(other.df["FID paper"]) == ["8.28 on ImageNet 32x32 [1]",
                                           "6.67 on ImageNet 32x32 [1]"]
    assert list(other.df["FID difference"]) == ["–", "–"] and "IS difference" not in other.df
    assert any("read off the plot" in n and "panel c" in n for n in other.notes)
    same = dt.guidance_view(_guidance_frame(pub, "imagenet32", "FID (Inception)"))
    assert list(same.df["FID paper"]) == ["8.28 [1]", "6.67 [1]"]
    assert list(same.df["FID difference"]) == ["+0.72", "+0.33"]


def test_ood_view_is_the_papers_shape():
    pub = Published(PUBLISHED)
    value, source = pub.get("CDRL", "cifar10", "auroc", "ood:cifar100")
    df = pd.DataFrame([
        {"run": "c", "method": "CDRL", "in_dist": "cifar10:test", "ood": "cifar100:test",
         "auroc": 0.8, "published": value, "published_setting": "CIFAR-10 vs cifar100",
         "published_source": source, "seeds": 1, "difference": 0.8 - value},
        {"run": "c", "method": "CDRL", "in_dist": "cifar10:test", "ood": "noise",
         "auroc": 1.0, "published": None, "published_setting": "", "published_source": "",
         "seeds": 1, "difference": None}])
    view = dt.ood_view(df)
    assert list(view.df.columns) == ["method", "run", "in-distribution", "cifar100:test AUROC",
                                     "cifar100:test paper", "cifar100:test difference",
                                     "noise AUROC"]
    row = view.df.iloc[0]
    assert row["cifar100:test paper"] == "0.78 for CIFAR-10 vs CIFAR-100 [1]"
    assert row["cifar100:test difference"] == "+0.02" and row["noise AUROC"] == "1 (1 seed)"
    assert dt._ood_same("cifar10:test", "cifar100:test", "cifar100")
    assert not dt._ood_same("digits16:test", "lfw16", "celeba64")


def test_inpaint_and_compose_views():
    inp = pd.DataFrame([{"run": "r", "dataset": "digits16:test", "mask": m, "fill": f,
                         "psnr_db": 10.0, "mse": 0.1, "num": 8}
                        for m in ("center", "random")
                        for f in ("inpaint", "baseline_known_mean", "baseline_dataset_mean")])
    view = dt.inpaint_view(inp)
    assert list(view.df["method"]) == ["CDRL inpainting", "fill: mean of the known pixels",
                                       "fill: training-set mean image"]
    assert list(view.df.columns)[1:] == ["center PSNR (dB)", "center MSE", "random PSNR (dB)",
                                         "random MSE"]
    comp = pd.DataFrame([{"run": "q", "setting": "composed", "guidance": 3.0, "num": 64,
                          "frac_right": 0.9, "frac_intersection": 0.8}])
    assert list(dt.compose_view(comp).df.columns) == [
        "setting", "guidance w", "samples", "fraction in right", "fraction in all conditions"]


def test_speed_view_has_methods_as_rows():
    rows = [dict(zip(COLUMNS, [q, "count", c, d, d / c, 2.0, "T*K+1", "T*K", "", "", "cpu", 1, 4,
                                4, 3, "random init"], strict=True))
            for q, c, d in (("EBM gradient evaluations per image", 91.0, 180.0),)]
    df = pd.DataFrame(rows)
    df.insert(0, "case", "digits")
    view = speed_view(df)
    assert list(view.df["method"]) == ["CDRL", "DRL", "DRL / CDRL", "DRL / CDRL, paper's claim"]
    assert list(view.df["EBM gradients / image"]) == ["91 (T*K+1)", "180 (T*K)", "1.978",
                                                      "2 [1]"]
    assert any("arXiv 2309.05153v1, abstract" in n for n in view.notes)
    assert any(n.startswith("digits: cpu, 1 threads") and "median of 3 timed calls" in n
               for n in view.notes)


def _hand_tiled(x: np.ndarray) -> np.ndarray:
    """The hand-written tiling that image_grid replaced: 1-pixel white lines, square layout."""
    side = int(np.ceil(np.sqrt(len(x))))
    h, w, c = x.shape[1:]
    grid = np.full((side * (h + 1) + 1, side * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, img in enumerate(x):
        r, q = divmod(i, side)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = img
    return grid


@pytest.mark.parametrize("channels", [3, 1])
def test_image_grid_matches_the_hand_tiling(channels):
    x = np.random.default_rng(0).integers(0, 256, (64, 5, 7, channels), dtype=np.uint8)
    grid = image_grid(x)
    want = _hand_tiled(x)
    assert grid.dtype == np.uint8 and grid.shape == (*want.shape[:2], 3)
    np.testing.assert_array_equal(grid, np.repeat(want, 3 // channels, axis=2))


def test_task_figures_draw_image_rows(tmp_path):
    from cdrl.tasks.compose import _figure as compose_figure
    from cdrl.tasks.inpaint import _figure as inpaint_figure

    x = torch.rand(4, 1, 8, 8) * 2 - 1
    compose_figure(tmp_path / "c.png", {"composed": x, "unconditional": x}, num=3)
    inpaint_figure(tmp_path / "i.png", {"center": {k: x for k in ("observed", "mask",
                                                                  "inpainted", "truth")}})
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "i.png").stat().st_size > 1000
