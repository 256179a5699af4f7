# Flotilla: `make up` for a running platform, `make test` for the suite. Both install what
# they need (Debian packages, FerretDB, the virtualenv) on a machine that has none of it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
LOCAL := deploy/local
PYTEST_ARGS ?=

.PHONY: help system venv infra up down status test soak unit lint format bench bench-deps clean
.PHONY: images

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

system: ## install Debian packages (RabbitMQ, Docker engine, busybox-static)
	@$(LOCAL)/install-system.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@echo "[flotilla] installing Python dependencies into $(VENV)"
	@mkdir -p .flotilla/logs
	@{ $(VPY) -m pip install --disable-pip-version-check --upgrade pip && \
	   $(VPY) -m pip install --disable-pip-version-check -e '.[test]'; } >.flotilla/logs/pip.log 2>&1 \
	 || { tail -30 .flotilla/logs/pip.log; echo "[flotilla] pip install failed (full log: .flotilla/logs/pip.log)"; exit 1; }
	@touch $@

venv: $(VENV)/.installed ## create .venv with the project installed (editable)

infra: system venv ## start FerretDB, RabbitMQ and Docker; build offline images
	@$(LOCAL)/ferretdb.sh start
	@$(LOCAL)/rabbitmq.sh start
	@$(LOCAL)/docker.sh start
	@$(LOCAL)/images.sh

up: infra ## everything above, then the services; writes .flotilla/env
	@$(LOCAL)/write-env.sh
	@$(LOCAL)/services.sh start
	@$(LOCAL)/ingress.sh start
	@source .flotilla/env; \
	 echo; echo "Flotilla is up. In a shell:  source .flotilla/env"; \
	 echo "  root URL      $$TASKCLUSTER_ROOT_URL (every API: /api/<service>/v1/)"; \
	 echo "  queue API     $$FLOTILLA_ROOT_URL/api/queue/v1/"; \
	 echo "  web console   $$FLOTILLA_ROOT_URL/ (the ingress serves it at the root URL)"; \
	 echo "  MongoDB       $$FLOTILLA_MONGO_URL"; \
	 echo "  RabbitMQ      $$FLOTILLA_AMQP_URL"; \
	 echo "  client id     $$TASKCLUSTER_CLIENT_ID (token in .flotilla/env)"; \
	 echo "  logs          .flotilla/logs/"

down: ## stop what `make up` started; data is kept
	@$(LOCAL)/ingress.sh stop
	@$(LOCAL)/services.sh stop
	@$(LOCAL)/ferretdb.sh stop
	@$(LOCAL)/rabbitmq.sh stop
	@$(LOCAL)/docker.sh stop

status: ## show which services run
	@$(LOCAL)/services.sh status
	@$(LOCAL)/ingress.sh status

test: infra ## start what tests need, then run the whole suite
	@$(VPY) -m pytest $(PYTEST_ARGS)

SOAK_TASKS ?= 1000
SOAK_ROUNDS ?= 3
soak: infra ## long crash loops: a 1,000-task graph while services are killed, 3 times
	@FLOTILLA_SOAK_TASKS=$(SOAK_TASKS) FLOTILLA_SOAK_ROUNDS=$(SOAK_ROUNDS) \
		$(VPY) -m pytest tests/integration/test_crash_recovery.py --timeout=3600 $(PYTEST_ARGS)

unit: venv ## only the unit tests (no servers needed)
	@$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv ## ruff: lint and formatting check
	@$(VPY) -m ruff check services shared tests bench cli flotilla_worker examples deploy
	@$(VPY) -m ruff format --check services shared tests bench cli flotilla_worker examples deploy

format: venv ## ruff: fix formatting
	@$(VPY) -m ruff format services shared tests bench cli flotilla_worker examples deploy

# Container images, one per service (deploy/images/): FROM BASE_IMAGE (python:3.11-slim)
# when it can be pulled, else FROM flotilla/python-base:bookworm made here with debootstrap.
images: system venv ## build flotilla/<service>:latest images (offline base if no registry)
	@$(LOCAL)/docker.sh start
	@deploy/images/build.sh

# The compose deployment for real (tests/integration/test_compose_stack.py, also in `make test`):
# images and stand-ins built, up, healthy, tasks, scale, restart, down/up with volumes kept.
.PHONY: compose-test
compose-test: system venv ## run deploy/compose.yaml for real on this engine, then tear it down
	@$(LOCAL)/docker.sh start
	@$(VPY) -m pytest tests/integration/test_compose_stack.py -s $(PYTEST_ARGS)

bench-deps: venv ## install the benchmark peer: Redis (Debian), celery[redis], matplotlib
	@bench/install-peer.sh

BENCH_PROFILE ?= standard
bench: infra bench-deps ## the benchmark suite (not tests): table, bench/results/latest.json, PNGs
	@$(VPY) -m bench suite --profile $(BENCH_PROFILE)

clean: down ## stop everything and delete local data (.flotilla)
	rm -rf .flotilla
