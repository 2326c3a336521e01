# The README's commands. Every target goes through `setup`, so any of them works first on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On this machine torch==2.13.0 is a CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DATA ?= data/dasher
RUN ?= runs/quickstart
QUICK_MINUTES ?= 14
QUICK_PRESET ?= quick
QUICK_THREADS ?= 0

.PHONY: setup browser axe quickstart test clean

setup: $(VENV)/.installed

browser:
	@# tests/test_browser.py drives Debian's chromium (Playwright never downloads a browser): install it as
	@# root with apt when missing, refreshing stale package lists only if the first try fails; else it skips.
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (for the browser test)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } || \
	  echo "warning: chromium could not be installed; tests/test_browser.py will be skipped"; \
	fi

axe: node_modules/axe-core/axe.min.js

node_modules/axe-core/axe.min.js: package.json package-lock.json
	@# tests/test_browser.py injects axe-core into the keyboard page (the accessibility check): npm installs the
	@# version package-lock.json pins; Node.js and npm come from apt when missing (as root), else the check skips.
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing npm (for the accessibility check)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; } || true; \
	fi
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "warning: npm not found; the accessibility check in tests/test_browser.py will be skipped"; fi

$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

quickstart: setup
	$(PY) -m nextchar quickstart --data $(DATA) --run $(RUN) --preset $(QUICK_PRESET) --minutes $(QUICK_MINUTES) --threads $(QUICK_THREADS)

test: setup browser axe
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info node_modules test-artifacts
