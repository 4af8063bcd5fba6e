"""GPU-hours of a workflow preset, per run and per claim, and the requeue budget of its training jobs.

    python scripts/preset_budget.py                                    # paper.yaml, Markdown
    python scripts/preset_budget.py --tflops 120                       # your throughput per GPU
    python scripts/preset_budget.py --gpu-check results/gpu_check/results.json   # measured
    python scripts/preset_budget.py --write-docs docs/cluster.md       # the documented block
    python scripts/preset_budget.py --check-docs docs/cluster.md       # exit 1 if it is stale

The cost model is ``cdrl.plan.budget`` (FLOPs counted on each run's own networks by
``cdrl.measure.run_flops``, times what the preset plans), the tables ``cdrl.plan.budget_table``.
Prints the Markdown, then any run that cannot finish within its requeues (``plan_warnings``);
``--json`` writes every row. The documented block uses the default throughput, so ``--write-docs``
and ``--check-docs`` take no ``--tflops`` or ``--gpu-check``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdrl.io import atomic_write_text  # noqa: E402
from cdrl.plan.budget import (  # noqa: E402
    DEFAULT_THROUGHPUT,
    Throughput,
    claim_costs,
    plan_warnings,
    throughput_from_gpu_check,
)
from cdrl.plan.budget_table import budget_markdown, read_block, replace_block  # noqa: E402

DEFAULT_PRESET = "workflow/config/paper.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=DEFAULT_PRESET, help="relative to the repository")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--tflops", type=float, help="achieved TFLOP/s per GPU (train and sample)")
    how.add_argument("--gpu-check", help="results.json of scripts/gpu_check.py")
    docs = ap.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", metavar="DOC", help="replace DOC's budget block")
    docs.add_argument("--check-docs", metavar="DOC", help="exit 1 if DOC's block is stale")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)
    if (args.write_docs or args.check_docs) and (args.tflops or args.gpu_check):
        ap.error("the documented budget uses the default throughput: leave out --tflops and "
                 "--gpu-check with --write-docs or --check-docs")
    return args


def throughput(args) -> Throughput:
    if args.tflops:
        return Throughput.tflops(args.tflops)
    if args.gpu_check:
        return throughput_from_gpu_check(json.loads(Path(args.gpu_check).read_text()))
    return DEFAULT_THROUGHPUT


def render(preset_name: str, tp: Throughput = DEFAULT_THROUGHPUT, doc: str = "docs/cluster.md"
           ) -> tuple[str, dict, list[str]]:
    """(Markdown, claim_costs' result, warnings) of the preset at ``ROOT / preset_name``."""
    preset = yaml.safe_load((ROOT / preset_name).read_text())
    exp = ROOT / preset.get("experiments_dir", "workflow/config/experiments")
    costs = claim_costs(preset, tp, exp)
    text = budget_markdown(preset, preset_name, costs, exp, doc)
    return text, costs, plan_warnings(preset, tp, exp)


def _jsonable(costs: dict) -> dict:
    def conv(x):
        if isinstance(x, Throughput):
            return dataclasses.asdict(x)
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, list):
            return [conv(v) for v in x]
        return x

    return conv(costs)


def main(argv=None) -> int:
    args = parse_args(argv)
    doc = args.write_docs or args.check_docs or "docs/cluster.md"
    text, costs, warnings = render(args.preset, throughput(args), doc)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(_jsonable(costs), indent=1) + "\n")
    if args.check_docs:
        current = read_block(Path(args.check_docs).read_text())
        if current != text:
            print(f"{args.check_docs}: the budget block is stale; run "
                  f"python scripts/preset_budget.py --preset {args.preset} --write-docs "
                  f"{args.check_docs}", file=sys.stderr)
            return 1
        print(f"{args.check_docs}: the budget block is current")
        return 0
    if args.write_docs:
        path = Path(args.write_docs)
        atomic_write_text(path, replace_block(path.read_text(), text))
        print(f"wrote the budget block of {path}")
    else:
        print(text)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
