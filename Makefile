# Two commands for a fresh machine: `make run` (the quickstart job) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
comma := ,
STAMP := $(VENV)/.installed

# $(call venv,DIR,EXTRAS): a venv with the CPU torch build from local disk and dvla_hpc[EXTRAS]
define venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet torch==2.13.0
	$(1)/bin/pip install --quiet -e '.[$(2)]'
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml
	$(call venv,$(VENV),test)

.PHONY: install run run-mpi test test-slurm bench gpu-check gpu-wheels install-libero test-libero
install: $(STAMP)

run: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/python -m dvla_hpc.main $(ARGS)

run-mpi: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/mpiexec -n 4 $(VENV)/bin/python -m dvla_hpc.main $(ARGS)

test: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/python -m pytest

# The job scripts under a real one-machine SLURM (jobs/local_slurm.sh): Debian's slurm-wlm and munge, as root.
test-slurm: $(STAMP)
	command -v slurmctld >/dev/null && command -v munged >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
	DVLA_REQUIRE_SLURM=1 MUJOCO_GL=egl $(VENV)/bin/python -m pytest tests/test_job_scripts.py -k slurm

bench: $(STAMP)
	MUJOCO_GL=egl $(VENV)/bin/python -m dvla_hpc.bench quickstart

# SimGrid's Python bindings for the scaling model (analysis/scaling_model; its tests skip without
# them): Debian's python3-simgrid, as root where apt-get exists; elsewhere it says so and goes on.
.PHONY: install-simgrid
install-simgrid:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q python3-simgrid || { apt-get update -q && apt-get install -y -q python3-simgrid; } \
		|| echo "install-simgrid: python3-simgrid not installed; the scaling-model tests will skip"; \
	else echo "install-simgrid: no apt-get as root here; the scaling-model tests will skip"; fi

# LIBERO (env.name=libero) pins mujoco<4, so it gets its own venv beside .venv.
LIBERO_VENV := .venv-libero
LIBERO_STAMP := $(LIBERO_VENV)/.installed

$(LIBERO_STAMP): pyproject.toml
	$(call venv,$(LIBERO_VENV),test$(comma)libero)

install-libero: $(LIBERO_STAMP)

test-libero: $(LIBERO_STAMP)
	MUJOCO_GL=egl $(LIBERO_VENV)/bin/python -m pytest -m libero

# On a machine with an NVIDIA GPU whose image has torch but lacks our simulator and MPI wheels
# (the device tool's machines): `make gpu-check OUT=dir`, with the folder .whl made here by
# `make gpu-wheels` carried along; GPU_ARGS passes options (e.g. "--seconds 45"). Writes OUT/gpu_check.json; see dvla_hpc/bench/gpu_check.py.
GPU_SITE := /tmp/dvla-site
GPU_WHEELS := mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw==2.11.0 PyOpenGL==3.1.10 gymnasium==1.4.0 \
	Farama-Notifications==0.0.6 mpich==5.0.2 mpi4py==4.1.2
gpu-check:
	@test -n "$(OUT)" || { echo "usage: make gpu-check OUT=dir"; exit 2; }
	if [ -d .gl ]; then for f in .gl/*.deb; do dpkg -x $$f /; done; ldconfig; fi
	if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
		--upgrade --target $(GPU_SITE) .whl/*.whl; fi
	# pip --target drops a wheel's lib/ data, where mpich keeps libmpi: unpack it beside its mpiexec.
	if ls .whl/mpich-*.whl >/dev/null 2>&1; then rm -rf /tmp/mpich-wheel && python3 -m zipfile -e .whl/mpich-*.whl /tmp/mpich-wheel \
		&& cp -r /tmp/mpich-wheel/mpich-*.data/data/. $(GPU_SITE)/ && chmod +x $(GPU_SITE)/bin/*; fi
	EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; if [ -f $$EGL ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$$EGL; fi; \
	if [ -f $(GPU_SITE)/lib/libmpi.so.12 ]; then export MPI4PY_LIBMPI=$(GPU_SITE)/lib/libmpi.so.12; fi; \
	PATH=$(GPU_SITE)/bin:$$PATH PYTHONPATH=$(GPU_SITE):$(CURDIR) MUJOCO_GL=egl PYTHONUNBUFFERED=1 \
		python3 -m dvla_hpc.bench gpu_check --out $(OUT) $(GPU_ARGS)

gpu-wheels:
	python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $(GPU_WHEELS)
	mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'; \
		apt-get $$o update && cd .gl && apt-get $$o download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2
