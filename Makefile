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
# llama.cpp (the test extra llama-cpp-python, the real tool that checks our GGUF exports) builds from source with
# this CPU's instruction sets named one by one (tools/llama_cmake_args.sh says why not -march=native, nor a fixed
# set). The wheel is built once per flag set and lock pin into LLAMA_WHEELS, then installed from there: pip's own
# cache keys a built wheel by its source only, so a wheel built on another CPU would be reused (and die of SIGILL)
export CMAKE_ARGS ?= $(shell sh tools/llama_cmake_args.sh) -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF
# the lock: every Python package any install below makes, transitive ones and build tools included, pinned
# (compiled by pip-tools from pyproject.toml, holding pins.txt; `make lock` refreshes it)
LOCK := constraints.txt
PIP := $(PY) -m pip install --disable-pip-version-check -q -c $(LOCK)
PORT ?= 8888
CHROMIUM ?= /usr/bin/chromium
LLAMA_PIN := $(shell grep -m1 '^llama-cpp-python==' $(LOCK))
LLAMA_WHEELS := $(HOME)/.cache/aigc_lab/wheels/llama-$(shell printf '%s %s' '$(LLAMA_PIN)' '$(CMAKE_ARGS)' | sha1sum | cut -c1-12)

TS_SOURCES := $(shell find src style schema -type f 2>/dev/null) package.json tsconfig.json
PY_SOURCES := $(shell find aigc_lab -name '*.py' -not -path '*/labextension/*')

BASE_STAMP := $(VENV)/.stamp-base
NODE_STAMP := node_modules/.stamp
EXT_BUILT := aigc_lab/labextension/package.json
DEPS_STAMP := $(VENV)/.stamp-deps
PKG_STAMP := $(VENV)/.stamp-pkg
KERNEL_STAMP := $(VENV)/.stamp-kernel

.PHONY: lab setup setup-steps test test-py test-nb test-ts test-ui test-lower test-latest lock lint clean bench screenshots

# The Python side (4, 5) and the JavaScript side (2, 3) need only step 1, so they run side by side (pip is
# mostly one core, jlpm fetches and bundles), each target's output shown in one piece when it ends.
setup:
	@$(MAKE) --no-print-directory -j2 --output-sync=target setup-steps
setup-steps: $(PKG_STAMP) $(KERNEL_STAMP)
	@:

# 1. the virtual environment with the build tooling (jlpm comes with jupyterlab; scikit-build-core builds
#    llama-cpp-python where pip's cache holds no wheel of it), versions from the lock
$(BASE_STAMP): $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) jupyterlab hatchling hatch-jupyter-builder editables scikit-build-core
	@touch $@

# 2. JavaScript dependencies, exactly as yarn.lock has them (a package.json change needs `make lock`)
$(NODE_STAMP): $(BASE_STAMP) package.json yarn.lock .yarnrc.yml
	$(JLPM) install --immutable
	@touch $@

# 3. the built labextension (TypeScript strict compile + production bundle)
$(EXT_BUILT): $(NODE_STAMP) $(TS_SOURCES)
	$(JLPM) build:prod
	@touch $@

# 4. the Python package (editable) with every dependency; then, once 3 is built too, the extension linked into
#    the venv and the server extension enabled (an editable install does not copy the wheel's shared data)
$(DEPS_STAMP): $(BASE_STAMP) pyproject.toml $(LOCK) tools/llama_cmake_args.sh
	@ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || { rm -rf $(LLAMA_WHEELS).tmp && \
	  echo "building $(LLAMA_PIN) for this CPU ($(CMAKE_ARGS)): about 6 minutes on 2 cores, once" && \
	  $(PY) -m pip wheel --disable-pip-version-check -q -c $(LOCK) --no-deps --no-build-isolation --no-cache-dir \
	    -w $(LLAMA_WHEELS).tmp "$(LLAMA_PIN)" && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); }
	$(PIP) --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	SKIP_JUPYTER_BUILDER=1 $(PIP) --no-build-isolation -e ".[test]"
	@touch $@

$(PKG_STAMP): $(DEPS_STAMP) $(EXT_BUILT) jupyter-config/server-config/aigc_lab.json
	$(VENV)/bin/jupyter-builder develop --overwrite . >/dev/null
	install -D -m 644 jupyter-config/server-config/aigc_lab.json $(VENV)/etc/jupyter/jupyter_server_config.d/aigc_lab.json
	@touch $@

# 5. the engine's CPU kernels (aigc_lab/infer/cpu_kernels.cpp, built by infer/kernel_build.py; ~30 s once, cached in ~/.cache/aigc_lab):
#    generation uses it once it is built and never builds it itself. Without a compiler, torch's path is used.
$(KERNEL_STAMP): $(DEPS_STAMP) aigc_lab/infer/kernel_build.py aigc_lab/infer/cpu_kernels.cpp
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

# The lower-bound venv (test-lower's, below) is built in the background, niced, while the other layers run:
# pip there mostly unpacks wheels (I/O) where the layers are CPU-bound. test-lower joins it; a failed build
# fails `make test` with its log shown. A failing layer still stops `make test` (once the build has ended).
test: setup $(CHROMIUM)
	@mkdir -p $(LOWER_VENV); \
	  { s=$$(date +%s); nice -n 10 $(MAKE) --no-print-directory $(LOWER_VENV)/.stamp && \
	    echo "make test: $(LOWER_VENV) was built in the background in $$(( $$(date +%s) - s )) s"; } \
	    > $(LOWER_LOG) 2>&1 & lower=$$!; \
	  echo "make test: building $(LOWER_VENV) in the background (log: $(LOWER_LOG))"; \
	  $(MAKE) --no-print-directory lint test-py test-nb test-ts test-ui; status=$$?; \
	  if ! wait $$lower; then echo "make test: building $(LOWER_VENV) failed; its log:"; cat $(LOWER_LOG); exit 1; fi; \
	  tail -n 1 $(LOWER_LOG); [ $$status = 0 ] && $(MAKE) --no-print-directory test-lower
	@echo "make test: every layer passed"

# Python: ruff; frontend: the extension template's trio (stylelint, prettier --check, eslint), run by
# `jlpm lint:check` even when one fails, so every report shows; the target fails if either side does.
lint: setup
	@status=0; \
	  $(VENV)/bin/ruff check aigc_lab tests ui-tests benchmarks tools || status=1; \
	  $(JLPM) lint:check || status=1; \
	  exit $$status

test-py: setup
	$(PY) -m pytest tests -q --durations=20

test-nb: setup
	@for nb in notebooks/*.ipynb; do start=$$(date +%s); \
	  $(PY) -m pytest --nbval "$$nb" -q || exit 1; \
	  echo "nbval: $$nb passed in $$(( $$(date +%s) - start )) s"; done

test-ts: setup
	$(JLPM) test

test-ui: setup $(CHROMIUM)
	$(PY) -m pytest ui-tests -v -s

# refresh the committed screenshots in docs/ (the UI tests write theirs to the ignored ui-tests/artifacts/)
screenshots: setup $(CHROMIUM)
	AIGC_UI_SCREENSHOTS=docs $(PY) -m pytest ui-tests/test_panel.py ui-tests/test_studio_ui.py \
	  ui-tests/test_chat_panel.py \
	  -k "overlay or loss_curve or dark_theme or studio or token_inspector or chat_turns or eval_metrics" -q

# The lower bounds pyproject.toml declares (for people who `pip install aigc-lab` into their own environment):
# a second venv with transformers, tokenizers, safetensors, peft and accelerate AT those bounds (the rest from
# the lower-bound lock, compiled by `make lock`) runs the engine's and the trainer's tests.
LOWER_VENV := .venv-lower
LOWER_LOCK := constraints-lower.txt
LOWER_TESTS := tests/test_compat.py tests/test_generate.py tests/test_models_roundtrip.py tests/test_train_finetune.py
LOWER_LOG := $(LOWER_VENV)/build.log
$(LOWER_VENV)/.stamp: $(LOWER_LOCK) pyproject.toml
	@test -x $(LOWER_VENV)/bin/python || $(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python -m pip install --disable-pip-version-check -q -c $(LOWER_LOCK) \
	  hatchling hatch-jupyter-builder editables jupyterlab
	SKIP_JUPYTER_BUILDER=1 $(LOWER_VENV)/bin/python -m pip install --disable-pip-version-check -q -c $(LOWER_LOCK) \
	  --no-build-isolation -e . pytest
	@touch $@

test-lower: setup $(LOWER_VENV)/.stamp
	@$(LOWER_VENV)/bin/python -c "import transformers, peft, accelerate, tokenizers; \
	  print('lower bounds:', *(f'{m.__name__} {m.__version__}' for m in (transformers, tokenizers, peft, accelerate)))"
	$(LOWER_VENV)/bin/python -m pytest $(LOWER_TESTS) -q

# The canary, not part of `make test`: the newest releases of every dependency (torch held by pins.txt), pytest
# and nbval there, then what moved against the lock and what failed. Its output is what a `make lock` will meet.
LATEST_VENV := .venv-latest
test-latest: $(EXT_BUILT)
	rm -rf $(LATEST_VENV) && $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --disable-pip-version-check -q -c pins.txt \
	  hatchling hatch-jupyter-builder editables jupyterlab
	SKIP_JUPYTER_BUILDER=1 $(LATEST_VENV)/bin/python -m pip install --disable-pip-version-check -q -c pins.txt \
	  --no-build-isolation -e ".[test]"
	@echo "== test-latest: what moved against $(LOCK) =="; $(LATEST_VENV)/bin/python tools/versions.py moved $(LOCK)
	@status=0; \
	  PATH="$(CURDIR)/$(LATEST_VENV)/bin:$$PATH" $(LATEST_VENV)/bin/python -m pytest tests -q -rf --ignore=tests/test_lock.py || status=1; \
	  for nb in notebooks/*.ipynb; do \
	    PATH="$(CURDIR)/$(LATEST_VENV)/bin:$$PATH" $(LATEST_VENV)/bin/python -m pytest --nbval "$$nb" -q -rf \
	      || status=1; done; \
	  echo "== test-latest: $$( [ $$status = 0 ] && echo 'everything passed on the newest releases' || \
	    echo 'FAILURES above: fix them (or hold the package back in pyproject.toml) before the next make lock')"; \
	  exit $$status

# Refresh the locks: the newest releases pyproject.toml's ranges allow (torch held by pins.txt), the
# lower-bound lock, yarn.lock for a changed package.json, and the README's tested-versions line.
COMPILE := -q --upgrade --strip-extras --allow-unsafe --all-build-deps --extra test --extra dev \
  --no-emit-find-links --no-emit-index-url
lock: $(BASE_STAMP)
	$(PIP) pip-tools
	$(VENV)/bin/pip-compile $(COMPILE) -c pins.txt -o $(LOCK) pyproject.toml
	$(PY) tools/versions.py lower pyproject.toml > .lower.txt
	$(VENV)/bin/pip-compile $(COMPILE) -c pins.txt -c .lower.txt -o $(LOWER_LOCK) pyproject.toml
	rm -f .lower.txt
	$(PY) tools/versions.py readme $(LOCK) README.md
	$(JLPM) install
	@echo "make lock: $(LOCK), $(LOWER_LOCK), yarn.lock and the README refreshed; run make test (and make test-latest)"

bench: setup
	$(PY) benchmarks/comm_batching.py

clean:
	rm -rf $(VENV) $(LOWER_VENV) $(LATEST_VENV) node_modules lib aigc_lab/labextension tsconfig.tsbuildinfo
