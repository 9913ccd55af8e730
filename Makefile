# make          install into .venv, then run the default (quick) pipeline -> results/report/index.html
# make test     install, then run the test suite (what CI runs)
# make smoke    the smoke preset end to end (seconds)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The PyTorch build to install. On this project's machines torch==2.13.0 is a local CPU build;
# elsewhere choose what fits your machine, e.g. `make TORCH=torch` for PyPI's default build.
TORCH ?= torch==2.13.0
CORES ?= all
# The rules run `python -m trainfail`: put the venv first on PATH, as `source .venv/bin/activate` does.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all quick smoke test bench install clean
all: quick

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,slurm]"
	touch $@

install: $(VENV)/.installed

quick: install
	$(VENV)/bin/snakemake --cores $(CORES)

smoke: install
	$(VENV)/bin/snakemake --configfile presets/smoke.yaml --cores $(CORES)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_loop.py
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_pipeline.py --preset smoke

clean:
	rm -rf results .snakemake
