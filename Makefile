# Two commands on a fresh machine:  make bench  (the benchmark suite)  and  make test  (the tests).
# Each creates .venv and installs persist with its extras the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: bench test lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dali,dev,docs]'
	touch $@

install: $(VENV)/.installed

bench: $(VENV)/.installed
	$(BIN)/pytest bench --benchmark-json out.json

test: $(VENV)/.installed
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check persist bench tests
	$(BIN)/ruff format --check persist bench tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks out.json
