# Two commands matter: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := mosquitto mosquitto-clients redis-server python3-venv gcc make cmake pkg-config \
	libmosquitto-dev libmbedtls-dev libcmocka-dev

.PHONY: setup apt venv run test pytest lint bench eval fuzz firmware-test firmware-size clean

setup: apt venv

# Idempotent: installs only the Debian packages that are missing.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: setup
	$(PY) -m daemons.up

test: setup lint pytest firmware-test

pytest:
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

firmware-test: apt
	@if [ -f esp-idf-firmware/Makefile ]; then $(MAKE) -C esp-idf-firmware test; fi

firmware-size:
	@dpkg-query -W -f='$${Status}\n' gcc-riscv64-unknown-elf 2>/dev/null | grep -q 'install ok installed' || \
		($(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		 $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf)
	$(MAKE) -C esp-idf-firmware size

bench: setup
	$(PY) -m bench.run

eval: setup
	$(PY) -m bench.eval_health

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
