"""Copy a finished preset's key results into results/reference/<name>/ for committing.

    python scripts/collect_reference.py --workdir DIR --out results/reference/mnist \
        --command "snakemake --cores 2 all --configfile workflow/config/mnist.yaml" \
        --wall-s 5400 --commit abc1234

Takes the claims table, the main tables (Markdown and CSV), the learning curves and the key
figures (PNG only: the PDFs double the size), and writes a README.md with the command, commit,
machine and wall time, then the claims figure (when the preset drew it) and the claims table
itself, once, under the heading claims.md gives it. Refuses to start when a file it needs is
missing, naming it, so a half-finished run is never committed as a reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from pathlib import Path

TABLES = ["claims", "claims_curve", "main", "ablations", "sampling_steps", "training_cost",
          "learning_curves", "guidance", "ood", "inpaint", "compose", "speed"]
# Taken when the preset (or its part) drew them; the --figure ones are required.
FIGURES = ["claims.png", "learning_curves.png", "fid_vs_steps.png", "guidance.png",
           "training_curves.png"]
CLAIMS_FIGURE_CAPTION = ("Each claim's measured effect and 95 % interval against its rule's "
                         "threshold (dashed), coloured by verdict: green reproduced, red not "
                         "reproduced, amber inconclusive.")
SIZE_LIMIT = 5 * 2**20  # the reference stays "a few MB at most"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB"


def collect(workdir: Path, out: Path, figures_extra: list[str]) -> list[Path]:
    res = workdir / "results"
    wanted = []
    for name in TABLES:
        for ext in ("md", "csv"):
            path = res / "tables" / f"{name}.{ext}"
            if path.is_file() or name in ("claims", "main", "learning_curves"):
                wanted.append((path, out / "tables" / path.name))
    for rel in FIGURES + figures_extra:
        if rel in figures_extra or (res / "figures" / rel).is_file():
            wanted.append((res / "figures" / rel, out / "figures" / rel))
    missing = [str(src) for src, _ in wanted if not src.is_file()]
    if missing:
        raise SystemExit("collect_reference: missing " + ", ".join(missing) +
                         "; let the preset finish first")
    copied = []
    for src, dst in wanted:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    total = sum(p.stat().st_size for p in copied)
    if total > SIZE_LIMIT:
        raise SystemExit(f"collect_reference: {total / 2**20:.1f} MB is more than the "
                         f"{SIZE_LIMIT / 2**20:.0f} MB a reference may take; drop figures")
    return copied


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="where the preset ran")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--command", required=True, help="the command that ran the preset")
    p.add_argument("--commit", required=True)
    p.add_argument("--wall-s", type=float, required=True, help="measured wall time, seconds")
    p.add_argument("--note", default="", help="a paragraph for the README (load, machine)")
    p.add_argument("--figure", action="append", default=[],
                   help="another figure under results/figures/ to keep (repeatable)")
    args = p.parse_args(argv)
    copied = collect(args.workdir, args.out, args.figure)
    claims = (args.out / "tables" / "claims.md").read_text()
    h, rest = divmod(int(args.wall_s), 3600)
    lines = [
        f"# Reference results: {args.out.name} preset",
        "",
        "Made by one run of the preset on one machine; regenerate with the command below.",
        "",
        "| | |", "| --- | --- |",
        f"| command | `{args.command}` |",
        f"| commit | `{args.commit}` |",
        f"| machine | {_machine()} |",
        f"| wall time | {h} h {rest // 60:02d} min ({int(args.wall_s)} s), from the first job to "
        "the last |",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += ["Files: " + ", ".join(f"[`{p.relative_to(args.out)}`]({p.relative_to(args.out)})"
                                    for p in copied), ""]
    if (args.out / "figures" / "claims.png").is_file():
        lines += ["![The claims: effect and 95 % interval per claim, coloured by verdict]"
                  "(figures/claims.png)", "", f"*{CLAIMS_FIGURE_CAPTION}*", ""]
    # claims.md opens with its own heading ("## Claims of the paper"): the table comes once,
    # under that heading, not under a second "Claims" prefixed to it.
    lines += [claims]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(copied)} files and README.md to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
