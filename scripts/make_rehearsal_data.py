"""Write tiny fake CIFAR-10, CIFAR-100, ImageNet 32 and CelebA in their real on-disk formats.

    python scripts/make_rehearsal_data.py --root /scratch/rehearsal/resources/datasets

For rehearsing the paper preset (docs/cluster.md, "Rehearsing the paper preset"): the workflow
reads them like the real files. Seeded random pixels, so the numbers mean nothing. Refuses a
non-empty folder it did not write (``cdrl.data.fake_formats``).
"""

from __future__ import annotations

import argparse
import sys

from cdrl.data.fake_formats import write_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the datasets root folder (empty or fake)")
    ap.add_argument("--per-file", type=int, default=8,
                    help="images per CIFAR pickle, ImageNet npz and CelebA split")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        root = write_all(args.root, args.per_file, args.seed)
    except (FileExistsError, ValueError) as err:
        print(f"make_rehearsal_data: error: {err}", file=sys.stderr)
        return 1
    print(f"fake datasets written to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
