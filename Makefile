# make            install into .venv, then run the default (quick) pipeline -> results/report/index.html
# make test       install, then run the whole test suite on every core (what CI runs)
# make test-fast  the tests without pipeline runs and slow ones, on every core (while you work)
# make smoke      the smoke preset end to end (a few minutes on 2 cores)
# make clean      remove results/ and .snakemake/ (every run, table, figure and report)
# make pdfs       the figures again with a PDF beside every PNG (for papers; the full preset always has them)
# make profile    where the quick preset's CPU-seconds go, per experiment and phase (a fresh copy; minutes)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The PyTorch build to install. On this project's machines torch==2.13.0 is a local CPU build;
# elsewhere choose what fits your machine, e.g. `make TORCH=torch` for PyPI's default build.
TORCH ?= torch==2.13.0
CORES ?= all
# pytest-xdist workers for the tests (tests sharing a fixture run on one worker: tests/conftest.py)
TEST_WORKERS ?= auto
# The rules run `python -m trainfail`: put the venv first on PATH, as `source .venv/bin/activate` does.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all quick smoke test test-fast bench profile pdfs install clean constraints
all: quick

# constraints.txt pins every package to the versions CI tested (the results' environment)
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test,slurm]"
	touch $@

install: $(VENV)/.installed

quick: install
	$(VENV)/bin/snakemake --cores $(CORES)

smoke: install
	$(VENV)/bin/snakemake --configfile presets/smoke.yaml --cores $(CORES)

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not e2e and not slurm and not slow"

bench: install
	$(PY) benchmarks/bench_loop.py
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_pipeline.py --preset smoke
	$(PY) benchmarks/profile_pipeline.py --preset smoke

profile: install
	$(PY) benchmarks/profile_pipeline.py --preset quick

# figure_formats is an analysis input: the analyses re-render their figures (no run is retrained);
# a plain `make` afterwards renders them again as PNG only
pdfs: install
	$(VENV)/bin/snakemake --cores $(CORES) --config 'figure_formats=[png,pdf]'

clean:
	rm -rf results .snakemake

constraints: install
	( sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/' ) > constraints.new
	mv constraints.new constraints.txt
