"""scripts/collect_reference.py: what a committed reference holds, and its refusal to copy a
half-finished run."""

from pathlib import Path

import pytest

from tests.conftest import load_script

collect_reference = load_script("collect_reference")


def _finished(work: Path, skip: str = "") -> None:
    for name in ("claims", "main", "learning_curves", "guidance"):
        for ext in ("md", "csv"):
            path = work / "results" / "tables" / f"{name}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"## {name}\n\n| a |\n| --- |\n| 1 |\n")
    for fig in collect_reference.FIGURES:
        path = work / "results" / "figures" / fig
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
    if skip:
        (work / skip).unlink()


def test_copies_tables_and_figures_and_writes_the_readme(tmp_path):
    _finished(tmp_path / "w")
    out = tmp_path / "ref" / "mnist"
    assert collect_reference.main(["--workdir", str(tmp_path / "w"), "--out", str(out),
                                   "--command", "snakemake all", "--commit", "abc1234",
                                   "--wall-s", "3725"]) == 0
    readme = (out / "README.md").read_text()
    assert "`snakemake all`" in readme and "`abc1234`" in readme and "1 h 02 min" in readme
    assert readme.count("## claims") == 1 and "## Claims: " not in readme  # the table once
    assert readme.index("![The claims") < readme.index("## claims")  # the figure above it
    assert (out / "tables" / "guidance.csv").is_file()  # optional tables come when present
    assert not (out / "tables" / "ood.md").exists()
    assert (out / "figures" / "learning_curves.png").read_bytes() == b"png"


def test_refuses_a_half_finished_run(tmp_path):
    _finished(tmp_path / "w", skip="results/tables/claims.md")
    with pytest.raises(SystemExit, match="missing .*claims.md; let the preset finish first"):
        collect_reference.main(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                                "--command", "c", "--commit", "c", "--wall-s", "1"])
