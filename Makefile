# gitferry: `make demo` and `make test` are the two commands that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv prereqs controlplane lint typecheck unit e2e test cluster-up cluster-down demo demo-down bench clean

help:
	@echo "make demo          start a local control plane + gitferry, sync examples/ (make demo-down stops it)"
	@echo "make test          lint, type check, unit and e2e tests (builds the control plane on first use)"
	@echo "make cluster-up    start the local control plane in the background (make cluster-down stops it)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# sshd serves git over SSH in the tests; Debian's openssh-server.
prereqs:
	@command -v git >/dev/null || { echo "git is required" >&2; exit 1; }
	@command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
	@if [ ! -x /usr/sbin/sshd ]; then \
	  echo "installing openssh-server (for the SSH git server in tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server >/dev/null; \
	fi

controlplane:
	@bash hack/controlplane/build.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q

e2e: venv prereqs controlplane
	$(PY) -m pytest tests/e2e -q

# One pytest run for everything: one closing line that counts every test.
test: venv prereqs controlplane lint typecheck
	$(PY) -m pytest tests -q -p no:cacheprovider

cluster-up: venv controlplane
	@$(PY) -m tests.harness.controlplane up --dir $(CLUSTER_DIR)

cluster-down: venv
	@$(PY) -m tests.harness.controlplane down --dir $(CLUSTER_DIR)
	@rm -rf $(CLUSTER_DIR)

demo: venv prereqs controlplane
	@bash hack/demo.sh

demo-down: venv
	@bash hack/demo.sh down

bench: venv controlplane
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) $(CLUSTER_DIR) .mypy_cache .ruff_cache .pytest_cache
