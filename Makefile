# One command each: `make demo` sets up and runs the main job, `make test` sets up and
# runs every test (the default suite plus the slow and real-data ones, as CI does).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
# On Linux PyPI's torch is the CUDA build: TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes the CPU build from PyTorch's own index instead (see the README).
TORCH_INDEX ?=

.PHONY: install browser clang demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: install
	$(VENV)/bin/leukolearn demo

# tests/test_report_browser.py opens the HTML report in headless Chromium; it skips without
# one, but fails under CI=true, so install it when missing (CI runs as root on Debian).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  command -v google-chrome >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# tests/test_speed_equivalence.py builds the fused kernels with gcc and with clang (as on
# macOS); it skips a compiler that is missing, so CI installs clang when it is not there.
clang:
	@command -v clang >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang)

# Training tests that run again on PyTorch's own layers, as on a machine without a C compiler.
TRAINING_TESTS := tests/test_train.py tests/test_batched.py tests/test_experiment.py \
	tests/test_sweep.py tests/test_old_runs.py tests/test_determinism.py

# Two test processes (pytest-xdist): the tests are independent, each in its own folders.
PYTEST := $(PY) -m pytest -n 2

test: install browser clang
	$(VENV)/bin/lint-imports
	$(PYTEST) -m "slow or not slow"
	LEUKOLEARN_KERNELS=0 $(PYTEST) -m "slow or not slow" $(TRAINING_TESTS)

test-fast: install
	$(VENV)/bin/lint-imports
	$(PYTEST)

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis
