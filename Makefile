# Two commands for a fresh machine: `make run` (the quickstart job) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install run run-mpi test bench
install: $(STAMP)

run: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/python -m dvla_hpc.main $(ARGS)

run-mpi: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/mpiexec -n 4 $(VENV)/bin/python -m dvla_hpc.main $(ARGS)

test: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/python -m pytest

bench: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/python -m dvla_hpc.bench quickstart
