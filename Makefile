# The two commands: `make run` and `make test`. Everything else supports them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The virtualenv is rebuilt when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

# Local server ports (deploy/local/*.sh) and the broker's settings derived from them.
export LOCAL_REDIS_PORT ?= 6379
export LOCAL_MONGO_PORT ?= 27017
export LOCAL_KAFKA_PORT ?= 9092
export LOCAL_KAFKA_CONTROLLER_PORT ?= 9093
export BROKER_REDIS_URL ?= redis://127.0.0.1:$(LOCAL_REDIS_PORT)/0
export BROKER_MONGO_URL ?= mongodb://127.0.0.1:$(LOCAL_MONGO_PORT)
export BROKER_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(LOCAL_KAFKA_PORT)
export BROKER_HTTP_HOST ?= 127.0.0.1
export BROKER_HTTP_PORT ?= 8080

.PHONY: help run demo-link test test-faults lint venv infra-up infra-down infra-status clean

help:
	@echo "make run          start the local servers and the broker on http://$(BROKER_HTTP_HOST):$(BROKER_HTTP_PORT)"
	@echo "make test         install what is missing, start the local servers, run every test"
	@echo "make lint         ruff and mypy --strict"
	@echo "make bench        credential reads, refresh throughput and schedule scale (docs/benchmarks.md)"
	@echo "make infra-up     start Redis, FerretDB and Kafka on loopback (idempotent)"
	@echo "make infra-down   stop exactly the servers infra-up started"

$(STAMP): pyproject.toml
	@echo "[venv] installing the broker and its dev dependencies into $(VENV)"
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

infra-up:
	bash deploy/local/infra.sh up

infra-down:
	bash deploy/local/demo.sh down
	bash deploy/local/infra.sh down

infra-status:
	bash deploy/local/infra.sh status

test: venv infra-up
	$(BIN)/python -m pytest

# Kills workers and stops Redis, FerretDB and Kafka in turn under load (about 2.5 minutes); CI runs it too.
test-faults: venv infra-up
	$(BIN)/python -m pytest tests/faults

lint: venv
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests
	$(BIN)/mypy --strict service

# Benchmarks against the same local servers (docs/benchmarks.md): tables on stdout, figures in
# .run/bench/results.json. BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--only reads".
# The load generator is wrk from Debian's packages when it can be installed, else a Python one.
BENCH_ARGS ?=
bench: venv infra-up
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "[bench] wrk could not be installed: using the Python load generator"
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# The local demo: a demo OAuth provider on :8090 (with a login page), its definitions loaded from an
# extra providers folder, local secrets in .run/dev.env, and a connect link printed once the broker is up.
DEMO_ENV = BROKER_EXTRA_PROVIDERS_DIR=deploy/local/demo-providers \
	BROKER_ALLOWED_REDIRECT_URIS=http://127.0.0.1:$(BROKER_HTTP_PORT)/landing/success,http://127.0.0.1:$(BROKER_HTTP_PORT)/landing/error

run: venv infra-up
	bash deploy/local/dev-env.sh
	bash deploy/local/demo.sh up
	@echo "Broker: http://$(BROKER_HTTP_HOST):$(BROKER_HTTP_PORT)   (Ctrl-C stops it; 'make infra-down' stops the servers)"
	set -a; . .run/dev.env; set +a; \
	(bash deploy/local/demo.sh link &); \
	$(DEMO_ENV) exec $(BIN)/python -m service serve

demo-link:
	set -a; . .run/dev.env; set +a; bash deploy/local/demo.sh link

clean: infra-down
	rm -rf .run $(VENV)
