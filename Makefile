# The two commands of the README: `make demo` and `make test`.
# Each creates .venv and installs what it needs by itself.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test bench notebooks install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[bench]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-notebooks: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[notebooks]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/stagevox demo --out out

# Test files run in parallel, one worker a core (at most 4; the tests of one
# file stay in one worker, so a file's fixtures start once), then the
# real-time tests of the live engine one at a time, beside nothing else of
# the suite's.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile -m "not realtime"
	$(BIN)/python -m pytest -m realtime

# JupyterLab on notebooks/, in reading order (01_quickstart first).
notebooks: $(VENV)/.installed-notebooks
	$(BIN)/jupyter lab notebooks

bench: $(VENV)/.installed-bench
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) out build dist *.egg-info
