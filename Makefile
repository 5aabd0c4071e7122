# Two commands do all the set-up on a machine with Python 3.11+ and nothing else:
#   make run    create .venv on first use, install what running needs, migrate, start web + worker + beat
#               (SQLite, embedded broker)
#   make test   the same install plus the test extra, then the whole suite (PostgreSQL/Redis when
#               TEST_DATABASE_URL/TEST_REDIS_URL point at them)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamps, remade when pyproject.toml changes: what running needs, and that plus the test extra (pytest,
# playwright, schemathesis, ...), which `make run` never waits for. The second keeps the name it always had,
# so `make .venv/.installed` still sets up a development environment.
RUN_INSTALLED := $(VENV)/.installed-run
TEST_INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Aftercare needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Compiled here so the first `aftercare` after an install does not compile our modules itself.
$(RUN_INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q service tasks
	touch $@

$(TEST_INSTALLED): pyproject.toml $(RUN_INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(RUN_INSTALLED)
	$(BIN)/aftercare serve

test: $(TEST_INSTALLED)
	$(BIN)/ruff check service tasks tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(TEST_INSTALLED)
	$(BIN)/ruff check service tasks tests bench

bench: $(TEST_INSTALLED)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .data .pytest_cache
