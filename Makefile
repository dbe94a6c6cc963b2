# Each target sets itself up: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("pg-cutover needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,aws]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Two test processes (pytest-xdist): most tests wait on PostgreSQL, subprocesses or Prefect, not the CPU.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2

# Everything but the end-to-end tier (flows against a Prefect API): unit and integration tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not e2e"

# issues 8 and 20's benchmark: the runbook by hand against `cutover run`, both strategies, on a 1 GB pilot (see BENCHMARKS.md)
bench: $(STAMP)
	$(BIN)/python bench/cutover_bench.py --size-mb 1000 --pairs 3

clean:
	rm -rf $(VENV) .demo backups
