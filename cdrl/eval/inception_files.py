"""Which Inception weights file an evaluation uses, without importing torch (the workflow plans
with it on the login node).

    inception_weights: fid-port          # preset key (default); or torch-fidelity, or a file path

- ``fid-port``: TF inception-2015-12-05 staged offline by ``python scripts/stage_inception.py
  --dest resources/weights`` (``make stage``); pool features only, so FID/KID/PRC but no
  Inception Score. ``$CDRL_INCEPTION_WEIGHTS`` names another copy.
- ``torch-fidelity``: torch-fidelity's own ``weights-inception-2015-12-05-6726825d.pth``, the
  same network with its 1008-way classifier, so the Inception Score too. Read from torch's hub
  cache (``$TORCH_HOME/hub/checkpoints``), where ``make stage-is`` (``python
  scripts/stage_torch_fidelity.py``) puts it, checked, from a machine with internet; else
  downloaded into it by the job (clusters whose compute nodes reach the internet). The
  pre-flight reports it missing when a claim of the preset reads the Inception Score.
- a path: a torch-fidelity ``inception-v3-compat`` state dict; with ``fc`` it gives IS.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FID_PORT", "TORCH_FIDELITY", "FID_PORT_FILE", "TORCH_FIDELITY_FILE",
           "TORCH_FIDELITY_URL", "TORCH_FIDELITY_SHA256_PREFIX", "INCEPTION_ENV",
           "torch_hub_checkpoints", "fid_port_candidates"]

FID_PORT, TORCH_FIDELITY = "fid-port", "torch-fidelity"
FID_PORT_FILE = "pt_inception-2015-12-05-fid-port.pth"
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_SHA256_PREFIX = "6726825d"  # torch.hub's naming convention: file-<sha256[:8]>
TORCH_FIDELITY_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                      + TORCH_FIDELITY_FILE)
INCEPTION_ENV = "CDRL_INCEPTION_WEIGHTS"


def torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir()/checkpoints``, by torch's own rule: ``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def fid_port_candidates(*folders: str | os.PathLike) -> list[Path]:
    """Where the staged FID port is looked for: ``$CDRL_INCEPTION_WEIGHTS`` alone when set,
    else ``<folder>/resources/weights/<file>`` for each folder in turn."""
    if os.environ.get(INCEPTION_ENV):
        return [Path(os.environ[INCEPTION_ENV])]
    return [Path(f) / "resources" / "weights" / FID_PORT_FILE for f in folders]
