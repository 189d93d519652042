# Chapter 6 labs. Two commands for a new user: `make lab` (opens your copies of the labs, in my-labs/) and
# `make test` (passes the tests). Both create .venv and install the pinned stack first when needed.
# `make check-mine` grades the notebooks in my-labs/.
#
# Options:  ACTIVE=1     use the active Python (conda env, Colab, a GPU cluster) and keep its torch/triton
#           OFFLINE=1    install only from ./wheelhouse (made earlier by `make wheelhouse`), no network
#           PORT=8888    JupyterLab's port for `make lab`
#           FORCE=1      `make labs` overwrites labs/ notebooks even where they hold changes of your own
#           TIMEOUT=900  seconds each notebook may run in `make check-mine`
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8888
LAB_ARGS ?=
MY_LABS := my-labs
LAB_DIR ?= $(MY_LABS)
TIMEOUT ?= 900
WHEELHOUSE ?= wheelhouse
MAMBA_PIN := mamba-ssm==2.3.2.post1

ifeq ($(ACTIVE),1)
  PY := $(shell command -v $(PYTHON))
  STAMP := .active-env.stamp
  REQS := <(grep -vE '^(torch|triton)==' requirements.txt)
else
  PY := $(VENV)/bin/python
  STAMP := $(VENV)/.stamp
  REQS := requirements.txt
endif
ifeq ($(OFFLINE),1)
  PIP_SRC := --no-index --find-links $(WHEELHOUSE)
endif
PIP := $(PY) -m pip install --disable-pip-version-check $(PIP_SRC)

.PHONY: help setup lab test unit validate nbval labs check-labs badges execute lint gpu-setup wheelhouse clean browser check-mine grade

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/\t/' | expand -t 14

setup: $(STAMP)  ## create the environment (.venv) with the pinned stack

$(STAMP): requirements.txt pyproject.toml
ifneq ($(ACTIVE),1)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
endif
	$(PIP) -q -r $(REQS)
	@# mamba-ssm from source, skipping its CUDA build (30-60 min, ten architectures): its Python and
	@# Triton parts are all the CPU labs need; `make gpu-setup` builds the CUDA scan for this GPU only.
	MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE $(PIP) -q --no-build-isolation --no-deps $(MAMBA_PIN)
	$(PIP) -q --no-build-isolation --no-deps -e .
	@$(PY) -c "import course_utils, fla; from course_utils.mamba_import import import_mamba; import_mamba()" 2>/dev/null \
	  && echo "environment ready: $(PY)"
	@touch $@

lab: setup  ## open your labs (my-labs/, new ones copied in from labs/) in JupyterLab, token auth on
	@# labs/ is generated (`make labs` rewrites it); my-labs/ is yours and git-ignored: each labs/ notebook is
	@# copied there once, when my-labs/ has no notebook of that name, and no course command writes over it.
	$(if $(filter $(MY_LABS),$(LAB_DIR)),@$(PY) -m course_utils.authoring workspace)
	@# Jupyter refuses to start as root unless told (containers, CI); the token stays on either way.
	@# No "Would you like to get notified about official Jupyter news?" pop-up: the announcements plugin is
	@# disabled as JupyterLab documents (`jupyter labextension disable`), but in a config dir of this project
	@# put first on JUPYTER_CONFIG_PATH, so that neither the environment nor ~/.jupyter is changed.
	@mkdir -p build/jupyter-config/labconfig && echo \
	  '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}' \
	  > build/jupyter-config/labconfig/page_config.json
	JUPYTER_CONFIG_PATH=$(CURDIR)/build/jupyter-config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH} \
	  $(PY) -m jupyter lab --notebook-dir=$(LAB_DIR) --ip=127.0.0.1 --port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

test: setup lint check-labs unit validate  ## everything CI runs: lint, labs check, unit tests, nbval over solutions
	@echo "make test: all checks passed"

unit: setup  ## pytest over course_utils (includes the JupyterLab and labs smoke tests)
	$(PY) -m pytest -q tests

browser: setup  ## every solution notebook run in JupyterLab in headless Chromium (also part of `unit`)
	PY=$(PY) bash scripts/browser_deps.sh
	$(PY) -m pytest -q tests/test_browser.py

validate: setup  ## nbval: every solution notebook runs top to bottom and its graded cells match
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  -p no:cacheprovider solutions/

nbval: validate

labs: setup  ## regenerate labs/ from solutions/ (deterministic)
	$(PY) -m course_utils.authoring labs $(if $(filter 1,$(FORCE)),--force)

check-labs: setup  ## fail if labs/ are stale or contain solution code or outputs
	$(PY) -m course_utils.authoring check

badges: setup  ## rewrite every notebook's Colab badge and setup cell from course_utils/project.py
	$(PY) -m course_utils.authoring badges

execute: setup  ## re-run solutions in place (commit them with the outputs of a CPU run)
	$(PY) -m course_utils.authoring execute $(NB)

lint: setup  ## ruff over course_utils, tests and notebooks
	$(PY) -m ruff check course_utils tests solutions labs scripts

gpu-setup: setup  ## on a CUDA machine: build mamba-ssm's selective-scan CUDA extension for this GPU only
	PY=$(PY) bash scripts/build_mamba_cuda.sh

wheelhouse: setup  ## download every pinned package (and mamba-ssm's source) into ./wheelhouse for offline setup
	$(PY) -m pip download -q -d $(WHEELHOUSE) -r requirements.txt
	@# reading mamba-ssm's metadata runs its setup.py, which imports torch: use this environment's
	MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE $(PY) -m pip download -q -d $(WHEELHOUSE) --no-deps \
	  --no-binary :all: --no-build-isolation $(MAMBA_PIN)
	@echo "now: make setup OFFLINE=1"

clean:  ## remove the environment and caches (keeps notebooks)
	rm -rf $(VENV) .active-env.stamp .pytest_cache .hypothesis .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

check-mine: setup  ## run your notebooks in my-labs/ (a copy of each; yours are untouched) and grade every exercise
	$(PY) -m course_utils.checkmine $(MY_LABS) --timeout $(TIMEOUT)

# Tests and nbval grade the course's own solutions and stubs: their grade() calls go to a file of their own,
# never into your progress record (progress(), ~/.cache/chapter6-labs/progress.json).
unit validate: export CHAPTER6_PROGRESS = $(CURDIR)/build/test-progress.json

# Grading a class (course_utils.gradebook): every notebook in its own process, verdicts decided outside it.
OUT ?= build/gradebook
grade: setup  ## grade students' notebooks: make grade SUBMISSIONS=dir [OUT=dir] [SCHEDULER=tcp://host:8786]
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir [OUT=build/gradebook]" \
	  "[SCHEDULER=tcp://host:8786] [WORKERS=n] [GRADE_ARGS='--timeout 60 --memory 2GiB']" >&2; exit 2; }
	$(PY) -m course_utils.gradebook '$(SUBMISSIONS)' '$(OUT)' $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
	  $(if $(WORKERS),--workers $(WORKERS)) $(GRADE_ARGS)
