# Entry points for people and CI. Everything goes through scripts/setup.sh, which
# is idempotent and quick when nothing is missing, so every target can call it.

SHELL := /bin/bash
# CI may start make without HOME; the venv and cache live under it.
HOME ?= $(shell getent passwd $$(id -u) | cut -d: -f6)
export HOME
VENV ?= $(or $(REQUEST_PACK_VENV),$(HOME)/.cache/request-pack/venv)
PY := $(VENV)/bin/python
export REQUEST_PACK_VENV := $(VENV)
export DOCKER_API_VERSION := 1.41
PYTEST_ARGS ?=

.PHONY: help setup test unit integration demo doctor

help:
	@echo "make setup        install packages, virtualenv, start dockerd, register QEMU, configure nix"
	@echo "make test         setup, then the whole test suite with every capability required"
	@echo "make unit         unit tests only (no daemon, no network; seconds)"
	@echo "make integration  setup, then tests/integration"
	@echo "make demo         setup, then doctor/validate/lock/... the example artifact"
	@echo "make doctor       what this machine can and cannot do"
	@echo "venv: $(VENV)   (PYTEST_ARGS='-k ...' to filter)"

setup:
	bash scripts/setup.sh

# REQUEST_PACK_REQUIRE_ALL turns a missing docker/podman/emulation/nix into a
# failure instead of a skip (tests/conftest.py), so a broken set-up cannot pass.
test: setup
	REQUEST_PACK_REQUIRE_ALL=1 $(PY) -m pytest tests --durations=25 $(PYTEST_ARGS)

integration: setup
	REQUEST_PACK_REQUIRE_ALL=1 $(PY) -m pytest tests/integration $(PYTEST_ARGS)

# Unit tests need only the virtualenv; make it once if it is missing.
unit: | $(PY)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

$(PY):
	REQUEST_PACK_SKIP=docker,binfmt,nix bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

doctor: | $(PY)
	$(VENV)/bin/request-pack doctor
