# Two commands for a new user: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo demo-full demo-ranking shipped-base test test-all lint bench clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the whole pipeline on the embedded default, small sizes (minutes)
	$(BIN)/reczero demo --quick --out $(DEMO_OUT)

demo-full: $(STAMP)  ## the full demo (about an hour on 2 cores)
	$(BIN)/reczero demo --out $(DEMO_OUT)-full

demo-ranking: $(STAMP)  ## the full demo's ranking part: R2ec-tiny against popularity, SASRec and the ceiling
	$(BIN)/reczero demo --task ranking --out $(DEMO_OUT)-full

shipped-base: $(STAMP)  ## rebuild the tiny base the quick demo starts from (default world, configs/cpu/base-recworld.yaml; ~25 min)
	$(BIN)/python -m reczero.models.shipped

test: $(STAMP)  ## the default test suite (no network, no GPU)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build *.egg-info src/*.egg-info
