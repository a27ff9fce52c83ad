# Fresh machine: `make demo` or `make test`. Both create .venv, pin the CPU build of torch and install the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is a CPU wheel on this project's machines; override for a GPU box: make test TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,data,analysis
export OMP_NUM_THREADS ?= 2
export HF_HUB_DISABLE_TELEMETRY = 1

.PHONY: install test demo clean

$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
