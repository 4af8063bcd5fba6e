"""The speed table for people, from ``cdrl bench``'s rows (``cdrl.measure.bench``): methods as
rows, quantities as columns, the measured DRL/CDRL ratio with its interval and the paper's
claimed one. The bench writes it beside its CSV; the workflow's downstream tables read it too."""

from __future__ import annotations

from cdrl.report.render import Sources, View, fmt

__all__ = ["speed_view", "CLAIM_SOURCE", "RATIO_COLUMNS"]

CLAIM_SOURCE = ("Zhu et al. 2023, arXiv 2309.05153v1, abstract: \"with a 2x speedup over DRL\", "
                "on the basis of Langevin steps per level, K = 15 against 30 (the ICLR abstract "
                "no longer states the factor)")
# After COLUMNS in the CSV: the 95 % interval of a time's paired DRL/CDRL ratio (empty for counts).
RATIO_COLUMNS = ["drl_over_cdrl_low", "drl_over_cdrl_high"]
SHORT = {"EBM parameters": "EBM params (M)", "initializer parameters": "initializer params (M)",
         "EBM gradient evaluations per image": "EBM gradients / image",
         "initializer forwards per image": "initializer forwards / image",
         "sampling time per image": "sampling s / image",
         "EBM gradient evaluations per training example": "EBM gradients / training example",
         "training time per iteration": "training s / iteration"}


def _speed_cell(value, formula, spread) -> str:
    """``91 (T*K+1)`` for a count, ``0.0123 (0.0120-0.0130)`` for a median time and its range."""
    extra = next((str(x) for x in (formula, spread) if isinstance(x, str) and x), "")
    return fmt(value) + (f" ({extra})" if extra and extra != fmt(value) else "")


def _speed_rows(df, sources: Sources) -> list[dict]:
    """CDRL, DRL, their measured ratio and the claimed ratio, one column per quantity."""
    rows = {"CDRL": {}, "DRL": {}, "DRL / CDRL": {}, "DRL / CDRL, paper's claim": {}}
    for _, r in df.iterrows():
        col = SHORT.get(r["quantity"], r["quantity"])
        rows["CDRL"][col] = _speed_cell(r["cdrl"], r["cdrl_formula"], r["cdrl_spread"])
        rows["DRL"][col] = _speed_cell(r["drl"], r["drl_formula"], r["drl_spread"])
        low, high = (fmt(r.get(c, "")) for c in RATIO_COLUMNS)
        rows["DRL / CDRL"][col] = fmt(r["drl_over_cdrl"]) + (f" [{low}, {high}]" if low else "")
        claimed = fmt(r["claimed"])
        rows["DRL / CDRL, paper's claim"][col] = (
            f"{claimed} {sources.ref(CLAIM_SOURCE)}" if claimed else "")
    return [{"method": name, **cells} for name, cells in rows.items()]


def speed_view(df) -> View:
    """The speed table for people: methods as rows, quantities as columns, per ``case`` when the
    frame has that column (the workflow's speed table), with each case's settings as notes."""
    import pandas as pd

    if df.empty:
        return View(pd.DataFrame())
    df = df.astype(object).where(df.notna(), "")
    cases = df.groupby("case", sort=False) if "case" in df else [("", df)]
    sources, rows, notes = Sources(), [], []
    for case, g in cases:
        rows += [({"case": case} if case else {}) | r for r in _speed_rows(g, sources)]
        h = g.iloc[0]
        calls = f"{fmt(h['repeats'])} timed call" + ("" if fmt(h["repeats"]) == "1" else "s")
        notes.append(f"{case + ': ' if case else ''}{h['device']}, {fmt(h['threads'])} threads, "
                     f"sampling batch {fmt(h['batch'])}, training batch {fmt(h['train_batch'])}; "
                     f"times are the median of {calls} after a warm-up (min-max in parentheses), "
                     "one call per method in each interleaved round; a time's DRL / CDRL is the "
                     "geometric mean of the per-round ratios [95 % t-interval]; "
                     f"weights: {h['weights']}.")
    notes.append("Counts are per image or training example; T levels, K Langevin steps per "
                 "level, +1 for CDRL's final Tweedie step.")
    return View(pd.DataFrame(rows), notes + sources.notes())
