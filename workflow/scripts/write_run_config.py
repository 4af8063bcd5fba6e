"""Write one run's resolved config (rule run_config); the preset resolved it while planning."""

import sys
from pathlib import Path

import yaml

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821  (snakemake injects this object)

from cdrl.io import atomic_write_text  # noqa: E402

cfg = snakemake.params.cfg  # noqa: F821
atomic_write_text(Path(snakemake.output[0]), yaml.safe_dump(cfg, sort_keys=False))  # noqa: F821
