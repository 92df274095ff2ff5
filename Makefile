# gpufleet: `make demo` runs the local fleet story; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := prometheus haproxy

.PHONY: setup setup-all setup-torch system-packages demo test bench lint typecheck unit integration down clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Core install: what the local fleet needs (a few minutes on a fresh machine).
$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Everything, cloud layer included (cdktf providers ≈ 1.4 GB): what `make test` checks.
$(VENV)/.all-installed: pyproject.toml $(VENV)/.core-installed
	$(BIN)/pip install -q -e '.[dev,cloud]'
	touch $@

# The PyTorch exporter's optional extra (source: torch:<file.py>:<function>). PyPI's default torch
# wheel is a multi-GB CUDA build, so setup-all adds the pinned CPU build only where it already lies
# on this machine's disk (its exporter tests skip otherwise); `make setup-torch` installs it anywhere.
TORCH_PIN := torch==2.13.0
TORCH_CPU_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-*.whl))
$(VENV)/.torch-checked: $(VENV)/.core-installed
	@if [ -n "$(TORCH_CPU_WHEEL)" ]; then $(BIN)/pip install -q '$(TORCH_CPU_WHEEL)' 'onnxscript>=0.5'; \
	else echo "no local CPU wheel of $(TORCH_PIN): the PyTorch exporter tests will skip (make setup-torch)"; fi
	touch $@

setup-torch: $(VENV)/.core-installed
	$(BIN)/pip install -q '$(TORCH_PIN)' 'onnxscript>=0.5'

# checkov pins an old boto3 and networkx: it lives in its own venv, apart from the project's.
.venv-tools/bin/checkov:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install -q 'checkov>=3.2,<4'

# The cdktf CLI (Node), pinned in package.json to the Python cdktf release, installed into the repo.
node_modules/.bin/cdktf: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

system-packages:
	bash scripts/ensure-debian-packages.sh $(DEBIAN_PACKAGES)

setup: $(VENV)/.core-installed system-packages
setup-all: $(VENV)/.all-installed $(VENV)/.torch-checked .venv-tools/bin/checkov node_modules/.bin/cdktf system-packages

demo: setup
	$(BIN)/gpufleet demo

lint: setup-all
	$(BIN)/ruff check .

typecheck: setup-all
	$(BIN)/mypy

unit: setup-all
	$(BIN)/pytest -q -m "not integration" tests

integration: setup-all
	$(BIN)/pytest -q -m integration tests

test: setup-all
	$(BIN)/ruff check .
	$(BIN)/mypy
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-playbook --syntax-check -i localhost, playbooks/site.yml
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --profile production playbooks
	$(BIN)/pytest -q tests

# Speed and memory figures, printed as ratios measured side by side (plus reports/synth.html):
# synth time/memory, engine push throughput vs a raw s3transfer upload of the same bytes, and canary
# time to rollback vs Flagger/Argo-style analysis (reports/canary-benchmark.html).
bench: setup-all
	$(BIN)/python benchmarks/synth.py
	$(BIN)/python benchmarks/push.py
	$(BIN)/python benchmarks/canary.py

down:
	-$(BIN)/gpufleet down

clean: down
	rm -rf .gpufleet
