"""Stage torch-fidelity's Inception weights, which have the classifier the Inception Score needs
(a set-up step, run once on a machine with internet: the cluster's login node).

    python scripts/stage_torch_fidelity.py [--dest DIR] [--source FILE] [--force]    # make stage-is

Without ``--source`` it downloads ``weights-inception-2015-12-05-6726825d.pth`` from
torch-fidelity's GitHub release; with it, it takes a copy fetched elsewhere. Either way the
sha256 prefix (6726825d) and the 1008-way classifier are checked before the file lands in
``--dest`` (default torch's hub cache, ``$TORCH_HOME/hub/checkpoints``, where the preset key
``inception_weights: torch-fidelity`` reads it) with a ``.json`` sidecar. Nothing is done if an
intact copy is already there (``--force`` redoes it). The compute nodes must see that folder:
set ``TORCH_HOME`` to a shared path for this step and for the workflow alike if ``~/.cache`` is
not shared (docs/cluster.md, "Inception Score").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cdrl.eval.inception_files import torch_hub_checkpoints
from cdrl.eval.inception_weights import stage_torch_fidelity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=None,
                    help=f"folder for the weights file (default: {torch_hub_checkpoints()})")
    ap.add_argument("--source", default=None, help="a copy of the file fetched elsewhere")
    ap.add_argument("--force", action="store_true", help="stage again even if already there")
    args = ap.parse_args()
    dest = stage_torch_fidelity(args.dest and Path(args.dest),
                                args.source and Path(args.source), force=args.force)
    print(f"{dest}: torch-fidelity's Inception weights with the classifier (Inception Score)")


if __name__ == "__main__":
    main()
