# Two commands do everything on a fresh machine:  `make reproduce`  and  `make test`.
# Both create .venv and install into it when missing.  PROFILE = smoke | quick | full
# (empty: full where CUDA is present, else quick).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?=
PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)
# Debian packages: the Fashion-MNIST files, and what FFCV needs to build.
APT_PACKAGES := dataset-fashion-mnist libopencv-dev libturbojpeg0-dev pkg-config

.PHONY: help install sysdeps reproduce data test lint clean-results

help:
	@echo "make reproduce [PROFILE=smoke|quick|full]   data + every numbered notebook -> results/"
	@echo "make test                                    all tests, incl. a smoke run of every notebook"
	@echo "make data [PROFILE=...]                      fetch/decode the profile's dataset into data/"
	@echo "make lint                                    ruff"

# System packages: installed when we are root with apt (CI, fresh boxes); otherwise say what is missing.
sysdeps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: missing Debian packages: $$missing (sudo apt-get install $$missing)"; \
	fi

# uv (a maintained installer, from PyPI) fetches and unpacks the wheels in parallel: torch's CUDA libraries
# alone are ~4 GB. On clean clones here the install took 223-274 s with pip, 81 s with uv and an empty uv
# cache, FFCV built from source in both (issue 24).
UV := $(VENV)/bin/uv pip install -q --python $(PY)
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-ffcv.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(UV) -r requirements.txt -r requirements-dev.txt
	$(UV) -r requirements-ffcv.txt || echo "note: FFCV did not build; see README (backend 'ffcv' only)"
	@touch $@

install: sysdeps $(VENV)/.installed

data: install
	$(PY) -m utils.data --profile $(if $(PROFILE),$(PROFILE),auto)

# every notebook (a failing one is reported, the rest still run), then the report, whatever happened
reproduce: data
	@$(PY) -m utils.run_notebooks $(PROFILE_ARG); status=$$?; \
	$(PY) -m utils.report $(PROFILE_ARG); exit $$status

# one process: two pytest-xdist workers on 2 cores were slower, not faster (CI at 1651cc7: 2010 s of tests
# against 926 s in one process at 4bde60d; the rehearsal's 01 took 952 s instead of 133 s, its GEMM threads
# fighting the other worker's for the same cores)
test: install
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check utils tests benchmarks
