# Two commands do all the set-up on a machine with Python 3.11+ and nothing else:
#   make run    create .venv on first use, install, migrate, start web + worker + beat (SQLite, embedded broker)
#   make test   the whole suite (PostgreSQL/Redis when TEST_DATABASE_URL/TEST_REDIS_URL point at them)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Aftercare needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/aftercare serve

test: $(VENV)/.installed
	$(BIN)/ruff check service tasks tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check service tasks tests bench

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .data .pytest_cache
