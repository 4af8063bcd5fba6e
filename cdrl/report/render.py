"""Tables for people: the cells, numbered sources, and the Markdown and LaTeX writers.

Every table of ``results/tables/`` is written three ways by ``write_table``: ``<name>.csv``, the
long form for programs (one row per number, columns never removed), and ``<name>.md`` /
``<name>.tex``, a ``View`` shaped like the paper's tables: one row per method, one column per
metric, each measured value as ``mean ± std (n seeds)`` with the published value and the
difference beside it, and the sources numbered under the table. Markdown comes from
``DataFrame.to_markdown`` (tabulate), LaTeX from ``Styler.to_latex`` (booktabs rules).
"""

from __future__ import annotations

import math
import numbers
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["View", "Sources", "DATASET_NAMES", "dataset_name", "number", "fmt", "measured",
           "seed_stats", "published_cell", "difference_cell", "markdown", "latex", "write_table"]

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet32": "ImageNet 32x32",
                 "celeba64": "CelebA 64x64", "digits16": "digits 16x16", "mnist": "MNIST 32x32",
                 "mnist28": "MNIST", "mnist16": "MNIST 16x16", "lfw25": "LFW 16x16"}
NOT_COMPARABLE = "–"


def dataset_name(name) -> str:
    """``cifar10`` -> ``CIFAR-10``; a ``NAME:SPLIT`` keeps its split."""
    base, sep, split = str(name).partition(":")
    return DATASET_NAMES.get(base, base) + (f" ({split})" if sep else "")


@dataclass
class View:
    """What people read: ``df`` (strings, one row per method) and notes printed under it."""

    df: pd.DataFrame
    notes: list[str] = field(default_factory=list)


class Sources:
    """Numbered citations: ``ref(text)`` gives ``[n]``, ``notes()`` the list under the table."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text) -> str:
        if not isinstance(text, str) or not text:
            return ""
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"

    def notes(self) -> list[str]:
        return [f"[{i}] {s}" for i, s in enumerate(self.items, 1)]


def number(v) -> float | None:
    """A finite float, or None for None, NaN, '' and other non-numbers."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(v, digits: int = 4, missing: str = "") -> str:
    """A value as report text, the one number formatter of ``cdrl.report``: integers as they are
    (whole floats below 1e6 too), other numbers to ``digits`` significant digits, ``missing``
    for None, NaN and infinities; strings verbatim, bools and anything else as ``str(v)``."""
    if v is None:
        return missing
    if isinstance(v, (str, bool)):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return missing if pd.isna(v) is True else str(v)   # pandas' NA and NaT are missing
    if not math.isfinite(x):
        return missing
    return str(int(x)) if x.is_integer() and abs(x) < 1e6 else f"{x:.{digits}g}"


def measured(mean, std=None, n: int = 1, unit: str = "seed") -> str:
    """``mean ± std (n seeds)``; the ± part only with two or more values."""
    m = number(mean)
    if m is None:
        return "n/a"
    s = number(std)
    spread = f" ± {s:.2g}" if s is not None and n > 1 else ""
    return f"{fmt(m)}{spread} ({n} {unit}{'' if n == 1 else 's'})"


def seed_stats(values) -> tuple[float | None, float | None, int]:
    """Mean, standard deviation (ddof = 1; None for one value) and count of the finite values."""
    vals = [x for x in map(number, values) if x is not None]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals)


def published_cell(value, source, sources: Sources, measured_on=None, published_on=None) -> str:
    """``4.31 [1]``, or ``4.31 on CIFAR-10 [1]`` when the paper's dataset is another."""
    v = number(value)
    if v is None:
        return ""
    where = ""
    if published_on and published_on != measured_on:
        where = f" on {dataset_name(published_on)}"
    ref = sources.ref(source)
    return f"{fmt(v)}{where}" + (f" {ref}" if ref else "")


def difference_cell(diff, published) -> str:
    """``+0.69`` (measured minus published), ``–`` where a published value is not comparable."""
    if number(published) is None:
        return ""
    d = number(diff)
    return NOT_COMPARABLE if d is None else f"{d:+.3g}"


# ----------------------------------------------------------------------------- writers
def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text: strings verbatim, numbers by ``fmt``, missing values empty."""
    return df.astype(object).map(lambda v: v if isinstance(v, str) else fmt(v))


def markdown(view: View, title: str) -> str:
    """``## title``, the table (tabulate's pipe format, cells verbatim) and the notes as a list."""
    if view.df.empty:
        body = "No rows: this preset has nothing for this table."
    else:
        cells = _cells(view.df).map(lambda s: s.replace("|", "\\|"))
        body = cells.to_markdown(index=False, disable_numparse=True)
    notes = "".join(f"- {n}\n" for n in view.notes)
    return f"## {title}\n\n{body}\n" + (f"\n{notes}" if notes else "")


def _tex(s: str) -> str:
    """Escape text outside the table body (caption, notes), which the Styler does not see."""
    s = s.replace("\\", "\0")
    for ch in "&%_#{}$":
        s = s.replace(ch, "\\" + ch)
    return _tex_symbols(s.replace("\0", r"\textbackslash{}").replace("~", r"\textasciitilde{}"))


def _tex_symbols(s: str) -> str:
    return s.replace("±", r"$\pm$").replace("–", "--").replace("−", "$-$")


def latex(view: View, title: str) -> str:
    """A booktabs ``table`` (``Styler.to_latex``, cells escaped) with the notes under it."""
    df = _cells(view.df) if not view.df.empty else pd.DataFrame({"": ["no rows"]})
    styler = df.style.hide(axis="index").format(escape="latex").format_index(escape="latex",
                                                                              axis=1)
    tex = styler.to_latex(caption=_tex(title), hrules=True, position="t",
                          position_float="centering", column_format="l" * len(df.columns))
    tex = _tex_symbols(tex)
    if view.notes:
        # \par between notes, not \\: a note may start with "[", which \\ takes as its option.
        body = "\\par\n".join(map(_tex, view.notes))
        notes = "\\par\\smallskip\n{\\footnotesize " + body + "\\par}\n"
        tex = tex.replace("\\end{table}", notes + "\\end{table}")
    return tex


def write_table(df: pd.DataFrame, stem: str | Path, title: str, view: View | None = None) -> None:
    """``<stem>.csv`` (``df``, the long form) and ``<stem>.md`` / ``<stem>.tex`` (``view``;
    by default ``df`` itself)."""
    from cdrl.io import atomic_write_text

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    view = view if view is not None else View(df)
    atomic_write_text(stem.with_suffix(".csv"), df.to_csv(index=False))
    atomic_write_text(stem.with_suffix(".md"), markdown(view, title))
    atomic_write_text(stem.with_suffix(".tex"), latex(view, title))
