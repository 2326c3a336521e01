# The README's commands. Every target goes through `setup`, so any of them works first on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On this machine torch==2.13.0 is a CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DATA ?= data/dasher
RUN ?= runs/quickstart
QUICK_MINUTES ?= 10
QUICK_PRESET ?= quick

.PHONY: setup quickstart test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

quickstart: setup
	$(PY) -m nextchar quickstart --data $(DATA) --run $(RUN) --preset $(QUICK_PRESET) --minutes $(QUICK_MINUTES)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info
