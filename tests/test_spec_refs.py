"""Every ``spec X.Y`` cited in code, configs and docs names a numbered heading of docs/method.md.

``spec X.Y`` means section X.Y of docs/method.md (its header says so). The scan reads the source
and documentation files of the repository and accepts the forms in use: ``spec 2.4``,
``Spec 5.1``, ``spec section 11``, ``spec sections 1-7``, ``spec §4``, and lists or ranges after
one ``spec`` such as ``spec 7.1, 7.2``, ``spec 7.1/7.2``, ``spec 1.1-1.3`` or
``spec 1.2 and 1.3`` (each number of a list or range is checked). A reference may wrap onto
the next line. The headings of docs/method.md are checked too: ``## N. Title`` and
``### N.M Title``, numbered from 1 upwards without gaps, each subsection under its own section;
unnumbered front matter may precede section 1 and lettered appendices (``## A. Title``) may
follow the last numbered section.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

SCAN_DIRS = ("cdrl", "baselines", "workflow", "scripts", "tests", "docs")
SCAN_FILES = ("README.md", "Snakefile")
SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".rst", ".md", ".sh", ".txt"}
SKIP_PARTS = {"__pycache__", ".venv", ".git", "results"}

_NUM = r"\d+(?:\.\d+)*"
_SEP = r"(?:\s*[/\u2013-]\s*|,[ \t]*\n?[ \t#]*|\s+and\s+)"
REF = re.compile(
    rf"\bspec(?:\s+sections?\s+|\s*\u00a7\s*|\s+)(?P<nums>{_NUM}(?:{_SEP}{_NUM})*)",
    re.IGNORECASE)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
_NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)(\.?)\s+\S")
_LETTERED = re.compile(r"^([A-Z])\.\s+\S")


def spec_refs(text: str) -> list[tuple[int, str, str]]:
    """``(line, number, reference as written)`` for every section number ``text`` cites."""
    out = []
    for m in REF.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        written = " ".join(m.group(0).split())
        out.extend((line, num, written) for num in re.findall(_NUM, m.group("nums")))
    return out


def heading_numbers(markdown: str) -> tuple[set[str], list[str]]:
    """The section numbers of a page's headings, and what is wrong with its headings."""
    numbers: set[str] = set()
    problems: list[str] = []
    stack: list[int] = []          # current numbered position, e.g. [3, 2] inside 3.2
    phase = "front"                # front matter -> numbered sections -> lettered appendices
    last_letter = ""
    in_fence = False
    titles = 0
    for lineno, line in enumerate(markdown.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or not line.startswith("#"):
            continue
        m = _HEADING.match(line)
        if not m:
            problems.append(f"line {lineno}: malformed heading {line!r} (no space after the #s)")
            continue
        level, title = len(m.group(1)), m.group(2)
        if level == 1:
            titles += 1
            if titles > 1 or numbers or phase != "front":
                problems.append(f"line {lineno}: a second or late page title {line!r}")
            continue
        num = _NUMBERED.match(title)
        letter = _LETTERED.match(title)
        if num is None:
            if level == 2 and letter and phase in ("numbered", "appendix"):
                if letter.group(1) <= last_letter:
                    problems.append(f"line {lineno}: appendix {letter.group(1)} after "
                                    f"{last_letter}")
                phase, last_letter = "appendix", letter.group(1)
            elif phase == "numbered":
                problems.append(f"line {lineno}: unnumbered heading {line!r} among the "
                                f"numbered sections")
            elif level == 2 and letter:
                problems.append(f"line {lineno}: appendix {line!r} before section 1")
            continue
        if phase == "appendix":
            problems.append(f"line {lineno}: numbered heading {line!r} after the appendices")
            continue
        parts = [int(p) for p in num.group(1).split(".")]
        text = num.group(1)
        if len(parts) != level - 1:
            problems.append(f"line {lineno}: {text} has {len(parts)} part(s) but is a "
                            f"level-{level} heading (want {level - 1})")
            continue
        if level == 2 and num.group(2) != ".":
            problems.append(f"line {lineno}: write a section as '## {text}. Title'")
        if level > 2 and num.group(2) == ".":
            problems.append(f"line {lineno}: write a subsection as '{'#' * level} {text} Title'")
        expected = (stack[:len(parts) - 1] + [stack[len(parts) - 1] + 1]
                    if len(stack) >= len(parts) else stack + [1])
        if len(stack) < len(parts) - 1 or parts != expected:
            want = ".".join(map(str, expected)) if len(stack) >= len(parts) - 1 else "?"
            problems.append(f"line {lineno}: heading {text} out of order (expected {want})")
        if text in numbers:
            problems.append(f"line {lineno}: heading {text} appears twice")
        numbers.add(text)
        stack = parts
        phase = "numbered"
    if in_fence:
        problems.append("unclosed code fence")
    if titles != 1:
        problems.append(f"expected one '# ' page title, found {titles}")
    return numbers, problems


def scanned_files(root: Path = ROOT) -> list[Path]:
    files = [root / name for name in SCAN_FILES if (root / name).is_file()]
    for d in SCAN_DIRS:
        files += sorted(p for p in (root / d).rglob("*")
                        if p.is_file() and p.suffix in SUFFIXES
                        and not SKIP_PARTS.intersection(p.relative_to(root).parts))
    return files


def unresolved(files: dict[str, str], numbers: set[str]) -> list[str]:
    """``path:line: reference`` for each cited number that no heading carries."""
    return [f"{path}:{line}: {written!r} cites {num}, which docs/method.md has no heading for"
            for path, text in files.items()
            for line, num, written in spec_refs(text) if num not in numbers]


def _repo_texts() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8", errors="replace")
            for p in scanned_files()}


# ------------------------------------------------------------------------------ the repository

def test_every_spec_reference_has_a_section():
    numbers, _ = heading_numbers(METHOD.read_text(encoding="utf-8"))
    texts = _repo_texts()
    cited = [r for text in texts.values() for r in spec_refs(text)]
    assert len(cited) > 100, f"the scan found only {len(cited)} references; is it reading files?"
    bad = unresolved(texts, numbers)
    assert not bad, "unresolved spec references:\n" + "\n".join(bad)


def test_method_headings_are_well_formed_and_in_order():
    numbers, problems = heading_numbers(METHOD.read_text(encoding="utf-8"))
    assert not problems, "docs/method.md headings:\n" + "\n".join(problems)
    missing = [str(n) for n in range(1, 12) if str(n) not in numbers]
    assert not missing, f"docs/method.md lacks sections {missing}"


def test_method_page_explains_the_references():
    head = METHOD.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "spec X.Y" in head and "section X.Y" in head


# ------------------------------------------------------------------------------ the checkers

def test_reference_forms_are_all_read():
    text = ("a (spec 6.1); b spec 7.1/7.2, c Spec 5.1: d\n"
            "# e spec section 11 and spec sections 1-7\n"
            "f spec \u00a74 g spec 1.2 and 1.3 h spec 7.1, 7.2, 7.3, 6.1)\n"
            "i spec 3.4 step 3, spec 2.4, in y-space, (spec\n    8)\n"
            "j spec 1.1\u20131.3, then 2.3.")
    got = [(line, num) for line, num, _ in spec_refs(text)]
    assert got == [(1, "6.1"), (1, "7.1"), (1, "7.2"), (1, "5.1"), (2, "11"), (2, "1"),
                   (2, "7"), (3, "4"), (3, "1.2"), (3, "1.3"), (3, "7.1"), (3, "7.2"),
                   (3, "7.3"), (3, "6.1"), (4, "3.4"), (4, "2.4"), (4, "8"), (6, "1.1"),
                   (6, "1.3")]
    assert spec_refs("inspect 3, respec 2, specs, the spec's reconstruction") == []


def test_a_missing_section_fails_naming_file_and_line():
    numbers = {"1", "1.1", "2"}
    fake = "x = 1\n# a wrong one: spec " + "1.9" + "\n# fine: spec 1.1, 2\n# spec 2-" + "3\n"
    bad = unresolved({"cdrl/fake.py": fake}, numbers)
    assert len(bad) == 2
    assert bad[0].startswith("cdrl/fake.py:2: ") and "1.9" in bad[0]
    assert bad[1].startswith("cdrl/fake.py:4: ") and "cites 3," in bad[1]
    assert unresolved({"ok.md": "see spec 1.1 and 2"}, numbers) == []


def test_heading_checker_accepts_a_good_page():
    page = ("# T\n\n## Sources\n\n## 1. A\n\n### 1.1 a\n\n### 1.2 b\n\n```sh\n# not a heading\n"
            "```\n\n## 2. B\n\n## 3. C\n\n### 3.1 c\n\n## A. Extra\n\n## B. More\n")
    numbers, problems = heading_numbers(page)
    assert problems == []
    assert numbers == {"1", "1.1", "1.2", "2", "3", "3.1"}


def test_heading_checker_catches_bad_pages():
    cases = {
        "## 2. B\n## 1. A\n": "out of order",
        "## 1. A\n## 3. C\n": "out of order",
        "## 1. A\n### 1.2 b\n": "out of order",
        "## 1. A\n### 2.1 b\n": "out of order",
        "## 1. A\n## 2 B\n": "write a section as",
        "## 1. A\n### 1.1. a\n": "write a subsection as",
        "## 1. A\n## 1.1 a\n": "part(s)",
        "## 1. A\n## Loose\n": "unnumbered heading",
        "## 1. A\n##2. B\n": "malformed heading",
        "## 1. A\n## A. X\n## 2. B\n": "after the appendices",
        "## 1. A\n## B. X\n## A. Y\n": "appendix A after B",
    }
    for body, message in cases.items():
        _, problems = heading_numbers("# T\n" + body)
        assert any(message in p for p in problems), (body, problems)
    _, problems = heading_numbers("## 1. A\n")
    assert any("page title" in p for p in problems)
