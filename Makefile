# breastcad: `make demo` runs the main job, `make test` the test suite. Both create .venv
# (pip + venv, Python 3.11) and install the pinned versions from requirements.lock when missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
LOCK_HASH := $(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
RUN ?= runs/wdbc-demo

.PHONY: demo test lint format bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-base-$(LOCK_HASH): | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	touch $@

$(VENV)/.stamp-dev-$(LOCK_HASH): | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(VENV)/.stamp-base-$(LOCK_HASH) $@

## The main job: every WDBC model under the published split and 10x10 repeated CV; report,
## plots and the best model's bundle in $(RUN).
demo: $(VENV)/.stamp-base-$(LOCK_HASH)
	$(BIN)/breastcad train --out $(RUN) --jobs 2 --overwrite

## Lint, format check and the whole test suite (what CI runs).
test: $(VENV)/.stamp-dev-$(LOCK_HASH)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(VENV)/.stamp-dev-$(LOCK_HASH)
	$(BIN)/ruff check src tests benchmarks

format: $(VENV)/.stamp-dev-$(LOCK_HASH)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(VENV)/.stamp-base-$(LOCK_HASH)
	$(BIN)/python benchmarks/bench_tabular.py
	$(BIN)/python benchmarks/bench_wdbc_protocol.py
	$(BIN)/python benchmarks/bench_image_cache.py
	$(BIN)/python benchmarks/bench_dicom_decode.py
	$(BIN)/python benchmarks/bench_bootstrap.py
	$(BIN)/python benchmarks/bench_idc_speed.py
	$(BIN)/python benchmarks/bench_allocator.py
	$(BIN)/python benchmarks/bench_image_models.py
	$(BIN)/python benchmarks/bench_tta.py
	$(BIN)/python benchmarks/bench_operating_point.py --runs runs/bench runs/bench-cvflip runs/bench-s16 --exclude shift bench/breastmnist-probe-128-flip bench/breastmnist-probe-3-128-flip bench-s16/breastmnist-probe-3-128-flip
	$(BIN)/python benchmarks/bench_mias_bilateral.py
	$(BIN)/python benchmarks/bench_mias_detector_variants.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_training_overlap.py

## Re-pin every installed package after changing pyproject.toml.
lock: $(VENV)/.stamp-dev-$(LOCK_HASH)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^breastcad' > requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
