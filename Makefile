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

# Two pytest-xdist workers, one GEMM thread each (tests/conftest.py sets it for them and every process they
# start), the notebook runs first: two workers with two threads each on two cores ran 7x slower (CI at
# 1651cc7). --maxschedchunk 1: a free worker takes the next test, never a batch queued behind a long one.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 1

lint: install
	$(PY) -m ruff check utils tests benchmarks
