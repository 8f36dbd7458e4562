# Two commands matter: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := mosquitto mosquitto-clients redis-server python3-venv gcc make cmake pkg-config \
	libmosquitto-dev libmbedtls-dev libcmocka-dev systemd prometheus chromium

.PHONY: setup apt venv s3rver run test pytest lint bench eval fuzz chaos firmware-test firmware-size clean

setup: apt venv s3rver

# Idempotent: installs only the Debian packages that are missing. systemd (systemd-analyze) and
# prometheus (promtool) serve the tests of the units and of deploy/prometheus; the Prometheus server
# the package would start at install is stopped and disabled at once.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	if printf '%s\n' $$missing | grep -qx prometheus; then \
		$(SUDO) sh -c 'systemctl disable --now prometheus || service prometheus stop' >/dev/null 2>&1 || true; \
	fi

# s3rver: a real S3-protocol server for the S3 tests (it checks SigV4 pre-signed URLs itself).
# Idempotent: npm runs only when this exact version is missing; node/npm come from apt if absent.
S3RVER_VERSION := 4.0.4
S3RVER_DIR := .cache/s3rver
S3RVER_PKG := $(S3RVER_DIR)/node_modules/@20minutes/s3rver/package.json
s3rver:
	@if ! grep -qs '"version": "$(S3RVER_VERSION)"' $(S3RVER_PKG); then \
		if ! command -v npm >/dev/null; then \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; \
		fi; \
		echo "installing @20minutes/s3rver@$(S3RVER_VERSION) into $(S3RVER_DIR)"; \
		npm install --prefix $(S3RVER_DIR) --no-audit --no-fund --ignore-scripts --loglevel=error \
			@20minutes/s3rver@$(S3RVER_VERSION); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: setup
	$(PY) -m daemons.cli.up

test: setup lint pytest firmware-test

pytest:
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

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

# Faults under load (bench/chaos): the whole system and 2,000 simulated devices, each daemon killed
# with -9, redis-server and mosquitto restarted; writes its table into bench/RESULTS.md (~10 min).
chaos: setup
	$(PY) -m bench.run bench.chaos.run

# Six hypothesis-driven targets, 100,000 cases each, then schemathesis response conformance; the
# counts go to bench/RESULTS.md (FUZZ_ARGS="--cases 1000 --only codec" for a short run).
fuzz: setup
	$(PY) -m bench.fuzz $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
