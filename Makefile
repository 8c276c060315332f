# Set-up and entry points. `make run` and `make test` work on a fresh machine (Python ≥3.10 + pip).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.scrapbench-installed
# torch is installed first, on its own: this pair lies on the build machines' local disk; elsewhere pip
# falls back to the newest release it finds (the project itself only asks for torch>=2.1).
TORCH ?= torch==2.14.1 torchvision==0.29.1
# --jobs auto: one run per core with one torch thread each (as far as memory allows), so the main job keeps
# every core busy and its numbers do not depend on the core count (README, "Running").
# --track mlflow: every run also logged to the MLflow store $(OUT)/mlflow.db (README, "Tracking with MLflow").
RUN_ARGS ?= --methods all --seeds 3 --jobs auto --track mlflow
# pytest-xdist workers for `make test` (each test file runs whole on one worker; see tests/conftest.py).
TEST_JOBS ?= 2
OUT ?= runs

.PHONY: setup run test lint reference bench gpu-check wheelhouse clean

setup: $(STAMP)

# setuptools' "Editable installation" note is InformationOnly (a folder named like the package would shadow
# it; this layout has none): -W "ignore:Editable installation" keeps that one note out of pip's output.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) || $(BIN)/python -m pip install --quiet torch torchvision
	$(BIN)/python -W "ignore:Editable installation" -m pip install --quiet -e ".[dev,ray,track]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/scrapbench run $(RUN_ARGS) --out $(OUT)
	$(BIN)/scrapbench report $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check .

# The reference report in results/: the default run on the synthetic dataset, then the report.
reference: $(STAMP)
	$(BIN)/python scripts/reference_report.py

bench: $(STAMP)
	$(BIN)/python scripts/bench_run.py

# The GPU path in one command (scripts/gpu_check.py): results/gpu_check.json and .md. On a CPU-only machine:
# make gpu-check GPU_CHECK_ARGS="--quick --device cpu --out /tmp/check"
GPU_CHECK_ARGS ?= --budget-s 480
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

# The wheels an offline GPU server with Python $(PY) lacks, into wheelhouse/ (README, "Offline GPU server");
# then checked offline in fresh virtual environments. Needs python$(PY) here and network.
PY ?= 3.12
wheelhouse:
	$(PYTHON) scripts/wheelhouse.py download --python-version $(PY)
	$(PYTHON) scripts/wheelhouse.py verify --python-version $(PY)

clean:
	rm -rf $(VENV) runs .pytest_cache
