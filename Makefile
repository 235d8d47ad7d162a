# vidworker — the README's commands. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# A local weights mirror (files + SHA256SUMS); CI and this workplace have ../shared/weights.
WEIGHTS_MIRROR ?= $(if $(wildcard ../shared/weights/SHA256SUMS),$(abspath ../shared/weights),)
export WEIGHTS_MIRROR
# Models fetched by setup. Real hosts add the default model: make setup MODELS="realesr-animevideov3 realesrgan-x4plus"
MODELS ?= realesr-animevideov3

.PHONY: setup system venv weights demo test lint typecheck pytest bench soak clean

setup: system venv weights

system:
	@bash scripts/setup_system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt -r requirements-dev.txt
	touch $@

weights: venv
	$(PY) -m models download $(MODELS)

demo: setup
	$(PY) -m worker.demo

lint: venv $(VENV)/bin/promtool
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile.cpu Dockerfile.gpu
	$(VENV)/bin/cfn-lint deploy/aws/vidworker.yaml
	$(VENV)/bin/promtool check config deploy/prometheus/prometheus.yml
	$(VENV)/bin/promtool check rules deploy/prometheus/vidworker-rules.yml
	$(PY) scripts/check_dashboard.py deploy/grafana/vidworker.json --promtool $(VENV)/bin/promtool

# promtool for the rule, config and dashboard checks: Debian's binary, not its server.
$(VENV)/bin/promtool: scripts/install_promtool.sh | $(VENV)/.installed
	bash scripts/install_promtool.sh $@

typecheck: venv
	$(VENV)/bin/mypy

# One test file per worker process: the daemon's end-to-end tests (one file) run
# one at a time, as they were written to, beside the rest.
pytest: setup
	$(PY) -m pytest -n auto --dist loadfile

test: setup lint typecheck pytest

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PIP) install -r requirements-bench.txt
	$(PIP) install --no-deps --no-build-isolation basicsr==1.4.2 realesrgan==0.3.0
	touch $@

bench: setup $(VENV)/.bench-installed
	$(PY) -m bench.engine
	$(PY) -m bench.e2e
	$(PY) -m bench.startup
	$(PY) -m bench.reuse
	$(PY) -m bench.pipeline
	$(PY) -m bench.captions
	$(PY) -m bench.models
	$(PY) -m bench.scaleout

# The chaos soak (docs/reliability.md): 3 workers killed at random, S3 and callback faults, hostile
# and duplicate messages; one summary line. Replay a run: make soak SOAK_ARGS="--seed N".
soak: setup
	$(PY) -m tests.soak.chaos --jobs 120 $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
