"""Seeds per side for a two-run claim, from a pilot's per-seed values (cdrl.report.power).

    python scripts/power_seeds.py --a 45.1 47.9 --b 60.2 58.0 [--effect 0.10] [--power 0.8]
        [--max-width 0.10] [--alpha 0.05] [--min-n 5]

``--a``/``--b``: the pilot's metric per seed for each run (at least 2 each; one group may be
repeated for a one-run pilot). The effect to detect and the widest acceptable interval are
fractions of the mean of ``--a`` (e.g. 10 % of CDRL's FID). Prints the pooled spread and, for
n = min-n .. the plan, the power and the interval width, then the plan.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdrl.report.power import ci_width, pooled_sd, power, seeds_needed  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=float, nargs="+", required=True, help="run a's value per seed")
    p.add_argument("--b", type=float, nargs="+", required=True, help="run b's value per seed")
    p.add_argument("--effect", type=float, default=0.10, help="difference to detect, x mean(a)")
    p.add_argument("--max-width", type=float, default=0.10,
                   help="widest 95 %% interval of the difference, x mean(a)")
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--min-n", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        sd = pooled_sd(args.a, args.b)
    except ValueError as err:
        p.error(str(err))
    mean_a = sum(args.a) / len(args.a)
    delta, width = args.effect * mean_a, args.max_width * mean_a
    try:
        plan = seeds_needed(sd, delta, width, args.alpha, args.power, args.min_n)
    except ValueError as err:
        print(f"power_seeds: {err}", file=sys.stderr)
        return 1
    out = {"pooled_sd": sd, "mean_a": mean_a, "delta": delta, "max_width": width,
           "alpha": args.alpha, "target_power": args.power, "n": plan.n, "power": plan.power,
           "width": plan.width, "set_by": plan.by}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"pooled sd {sd:.4g} (pilot: {len(args.a)} + {len(args.b)} seeds); mean(a) "
          f"{mean_a:.4g}; detect {delta:.4g} ({args.effect:.0%}) with power {args.power:g}; "
          f"interval width at most {width:.4g} ({args.max_width:.0%})")
    print("n per side | power | 95 % interval width")
    for n in range(2, plan.n + 1):
        print(f"{n:>10} | {power(sd, delta, n, args.alpha):.3f} | "
              f"{ci_width(sd, n, args.alpha):.4g}")
    print(f"plan: {plan.n} seeds per side (set by {plan.by})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
