# gitferry: `make demo` and `make test` are the two commands that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help venv lock base-prereqs prereqs test-prereqs controlplane gitea test-gitea lint typecheck unit e2e test cluster-up cluster-down demo demo-down bench clean

help:
	@echo "make demo          start a local control plane + gitferry, sync examples/ (make demo-down stops it)"
	@echo "make test          lint, type check, unit and e2e tests (builds the control plane and Gitea on first use)"
	@echo "make cluster-up    start the local control plane in the background (make cluster-down stops it)"
	@echo "make image         build the operator image gitferry:dev (no registry needed)"

# Every install comes from a lock of exact versions with hashes
# (requirements/*.lock): a new release of a dependency never changes a run.
# `make lock` refreshes the locks from the ranges in pyproject.toml.
LOCK := requirements/test.lock
UV_VERSION := 0.13.8
LOCK_ARGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet

$(VENV)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

venv: $(VENV)/.installed

# `make bench` adds matplotlib (the plot) from its own lock: the test lock plus
# the `bench` extra, the shared packages at the same versions.
BENCH_LOCK := requirements/bench.lock
$(VENV)/.bench-installed: $(BENCH_LOCK) $(VENV)/.installed
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(BENCH_LOCK)
	$(PY) -m pip check
	touch $@

lock:
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra test $(LOCK_ARGS) -o requirements/test.lock
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_ARGS) -o requirements/runtime.lock
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra test --extra bench $(LOCK_ARGS) -o requirements/bench.lock
	@rm -f $(VENV)/.installed
	@echo "locks refreshed: review the diff of requirements/*.lock, then make test"

# git and openssl for everything; sshd serves git over SSH in the tests
# (Debian's openssh-server). `test-prereqs` adds Docker, which builds and runs
# the operator image in tests/e2e/test_image.py (hack/image/docker-up.sh); the
# demo needs neither sshd nor Docker.
prereqs: base-prereqs
	@if [ ! -x /usr/sbin/sshd ]; then \
	  echo "installing openssh-server (for the SSH git server in tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server >/dev/null; \
	fi

base-prereqs:
	@command -v git >/dev/null || { echo "git is required" >&2; exit 1; }
	@command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }

test-prereqs: prereqs
	@bash hack/image/docker-up.sh

controlplane:
	@bash hack/controlplane/build.sh >/dev/null

# Gitea, the real forge of tests/e2e/test_commit_status_gitea.py (hack/gitea/build.sh:
# from the Go module proxy with cgo SQLite, cached outside the repo; about 5 minutes
# cold). For `make test` a failed build fails CI; elsewhere those tests skip, saying why.
gitea:
	@bash hack/gitea/build.sh >/dev/null

test-gitea:
	@bash hack/gitea/build.sh >/dev/null || { [ "$$CI" != true ] && \
	  echo "Gitea was not built: the real-Gitea tests will skip (\`make gitea\` shows why)" >&2; }

# The operator image that manifests/ run (gitferry:dev), built on a Debian base
# that hack/image/build-base.sh bootstraps and caches: no registry needed.
# `make image BASE=python:3.11-slim` builds on the public image instead.
.PHONY: image image-base
IMAGE ?= gitferry:dev
image-base:
	@bash hack/image/docker-up.sh --required
	@bash hack/image/build-base.sh

image:
	@bash hack/image/docker-up.sh --required
	@BASE="$(BASE)" PYTHON="$(PYTHON)" bash hack/image/build.sh $(IMAGE)

# ruff, and import-linter holding the layers (pyproject.toml [tool.importlinter]).
lint: venv
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q

e2e: venv test-prereqs controlplane test-gitea
	$(PY) -m pytest tests/e2e -q

# One pytest run for everything: one closing line that counts every test.
test: venv test-prereqs controlplane test-gitea lint typecheck
	$(PY) -m pytest tests -q -p no:cacheprovider

cluster-up: venv controlplane
	@$(PY) -m tests.harness.controlplane up --dir $(CLUSTER_DIR)

cluster-down: venv
	@$(PY) -m tests.harness.controlplane down --dir $(CLUSTER_DIR)
	@rm -rf $(CLUSTER_DIR)

demo: venv base-prereqs controlplane
	@bash hack/demo.sh

demo-down: venv
	@bash hack/demo.sh down

bench: venv $(VENV)/.bench-installed controlplane
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CLUSTER_DIR) .mypy_cache .ruff_cache .pytest_cache
