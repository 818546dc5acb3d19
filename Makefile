# Set-up and everyday commands. `make test` and `make demo` create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast lint demo install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# One pytest-xdist worker per core; a test module's tests stay in one worker (--dist
# loadscope), so its module-scoped fixtures are built once.
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadscope

test: lint
	$(PYTEST) --durations=15

# The edit-test loop: skips the multi-process (gloo) tests and those marked slow.
test-fast: $(STAMP)
	$(PYTEST) -m "not distributed and not slow"

demo: $(STAMP)
	$(BIN)/loce demo --out runs/demo --data data/synthetic

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
