# Two commands: `make lab` (set up, then open JupyterLab on the quickstart) and `make test`
# (set up, then every test layer). Set-up is a chain of stamp files, so a re-run with nothing
# changed does nothing and takes seconds.

SHELL := /bin/bash
.DEFAULT_GOAL := lab

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# the venv's tools (jlpm, jupyter-builder, jupyter) come first for every recipe
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
JLPM := $(VENV)/bin/jlpm
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
PORT ?= 8888
CHROMIUM ?= /usr/bin/chromium

TS_SOURCES := $(shell find src style schema -type f 2>/dev/null) package.json tsconfig.json
PY_SOURCES := $(shell find aigc_lab -name '*.py' -not -path '*/labextension/*')

BASE_STAMP := $(VENV)/.stamp-base
NODE_STAMP := node_modules/.stamp
EXT_BUILT := aigc_lab/labextension/package.json
PKG_STAMP := $(VENV)/.stamp-pkg
KERNEL_STAMP := $(VENV)/.stamp-kernel

.PHONY: lab setup test test-py test-nb test-ts test-ui lint clean bench

setup: $(PKG_STAMP) $(KERNEL_STAMP)

# 1. the virtual environment with the build tooling (jlpm comes with jupyterlab)
$(BASE_STAMP): constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "jupyterlab>=4.6,<5" "hatchling>=1.5" "hatch-jupyter-builder>=0.5" editables
	@touch $@

# 2. JavaScript dependencies
$(NODE_STAMP): $(BASE_STAMP) package.json yarn.lock .yarnrc.yml
	$(JLPM) install
	@touch $@

# 3. the built labextension (TypeScript strict compile + production bundle)
$(EXT_BUILT): $(NODE_STAMP) $(TS_SOURCES)
	$(JLPM) build:prod
	@touch $@

# 4. the Python package (editable) with every dependency, the extension linked into the venv, and the
#    server extension enabled (an editable install does not copy the wheel's shared data)
$(PKG_STAMP): $(BASE_STAMP) $(EXT_BUILT) pyproject.toml constraints.txt jupyter-config/server-config/aigc_lab.json
	SKIP_JUPYTER_BUILDER=1 $(PIP) --no-build-isolation -e ".[test]"
	$(VENV)/bin/jupyter-builder develop --overwrite . >/dev/null
	install -D -m 644 jupyter-config/server-config/aigc_lab.json $(VENV)/etc/jupyter/jupyter_server_config.d/aigc_lab.json
	@touch $@

# 5. the engine's CPU kernels (aigc_lab/infer/cpu_kernels.cpp, loaded by cpu_gemv.py; ~30 s once, cached in ~/.cache/aigc_lab):
#    generation uses it once it is built and never builds it itself. Without a compiler, torch's path is used.
$(KERNEL_STAMP): $(PKG_STAMP) aigc_lab/infer/cpu_gemv.py aigc_lab/infer/cpu_kernels.cpp
	@$(PY) -c "import aigc_lab.infer as i; print('aigc_lab:', i.build_kernel())" || \
	  echo "aigc_lab: WARNING: the CPU kernel could not be built; generation runs on torch's (slower) path"
	@touch $@

lab: setup
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then OPEN=""; else OPEN="--no-browser"; \
	  echo "No display: open the URL printed below in your browser."; fi; \
	exec $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --port-retries=0 $$OPEN \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) --ServerApp.root_dir="$(CURDIR)" \
	  --LabApp.default_url=/lab/tree/notebooks/01_quickstart.ipynb

$(CHROMIUM):
	@echo "Chromium is missing: installing Debian's chromium for the browser tests"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

test: setup $(CHROMIUM) lint test-py test-nb test-ts test-ui
	@echo "make test: every layer passed"

lint: setup
	$(VENV)/bin/ruff check aigc_lab tests ui-tests benchmarks

test-py: setup
	$(PY) -m pytest tests -q

test-nb: setup
	@for nb in notebooks/*.ipynb; do start=$$(date +%s); \
	  $(PY) -m pytest --nbval "$$nb" -q || exit 1; \
	  echo "nbval: $$nb passed in $$(( $$(date +%s) - start )) s"; done

test-ts: setup
	$(JLPM) test

test-ui: setup $(CHROMIUM)
	$(PY) -m pytest ui-tests -v -s

bench: setup
	$(PY) benchmarks/comm_batching.py

clean:
	rm -rf $(VENV) node_modules lib aigc_lab/labextension tsconfig.tsbuildinfo
