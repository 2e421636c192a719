# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ringlet-installed

.PHONY: demo test lint setup data clean report

demo: setup data
	$(BIN)/ringlet demo

test: setup data lint
	$(BIN)/python -m pytest -q -x --durations=15

# style and errors (ruff), the layering of ARCHITECTURE.md (import-linter's contracts in
# pyproject.toml), and the type checker
lint: setup
	$(BIN)/ruff check ringlet tests scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m mypy

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the CPU build of torch lies on this machine's disk; install it first so nothing bigger is pulled
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# model libraries the front-door tests build models with, as users do (tests only: ringlet
	# imports none of them); torchvision's registry build asks for a newer torch than this CPU
	# build, so these come without their dependencies (the ones they need are in [dev])
	$(BIN)/pip install -q --no-deps timm==1.0.31 torchvision==0.29.1 onnx2torch==1.5.15
	touch $(STAMP)

data:
	@scripts/get_data.sh

# the evaluation suite on the shipped ResNet-20, its report, and the README's headline table
report: setup data
	$(BIN)/ringlet bench suite --models resnet20 --links lan,highbw,wan,wan-rtt --samples 64 --out results/suite.json
	$(BIN)/ringlet report results/suite.json --out results/report \
	    $$(for f in results/scale.json results/sharing.json results/activations.json; do [ -e $$f ] && echo --extra $$f; done)
	$(BIN)/python scripts/readme_report.py results/suite.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache
