# ros_fusion — pip-mode workflow. `make demo` and `make test` each create or
# refresh the virtual environment they need, from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV_ABS)/bin/python
STAMP := $(VENV_ABS)/.ros_fusion-installed
TRAIN_STAMP := $(VENV_ABS)/.ros_fusion-train-installed
# DDS stays on this machine; ament_index finds the package in the venv.
RUNENV := AMENT_PREFIX_PATH=$(VENV_ABS) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
          FASTDDS_DEFAULT_PROFILES_FILE=$${FASTDDS_DEFAULT_PROFILES_FILE:-$(CURDIR)/config/fastdds.xml}

.PHONY: help venv venv-train system-deps demo run test lint docs bench colcon clean

help:
	@echo "make demo    simulate a drive, run it live through the node graph, print what the node saw"
	@echo "make test    lint + the test suite (what CI runs)"
	@echo "make run ARGS='eval drive.mcap'   any ros-fusion command in the venv"
	@echo "make docs    regenerate the parameter file, its schema and the README table from ros/params.py"
	@echo "make bench   conversion and simulator benchmarks (pytest-benchmark)"
	@echo "make colcon  colcon build of the package (ROS mode) into build/ install/"

# open3d's wheel links libusb-1.0 (Debian package libusb-1.0-0).
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  echo "installing libusb-1.0-0 (needed by open3d)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libusb-1.0-0; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq libusb-1.0-0; fi; \
	fi

$(STAMP): requirements.txt requirements-dev.txt setup.py setup.cfg package.xml
	@echo "setting up $(VENV): pip install -r requirements.txt -r requirements-dev.txt, then this package (editable)"
	@start=$$(date +%s); \
	test -x $(PY) || $(PYTHON) -m venv $(VENV_ABS) || exit 1; \
	$(PY) -m pip install -q --upgrade pip && \
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt && \
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . || exit 1; \
	echo "virtual environment $(VENV) ready in $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

venv: system-deps $(STAMP)

# torch (CPU, pinned) + onnx for training/export, nuscenes-devkit for the converters;
# what the tests need beyond the runtime, never needed to run the node.
$(TRAIN_STAMP): $(STAMP) requirements-train.txt requirements-datasets.txt
	$(PY) -m pip install -q -r requirements-train.txt -r requirements-datasets.txt
	$(PY) -m pip install -q --no-deps nuscenes-devkit==1.2.0
	@touch $(TRAIN_STAMP)

venv-train: venv $(TRAIN_STAMP)

demo: venv
	$(RUNENV) $(PY) -m ros_fusion.cli demo $(ARGS)

run: venv
	$(RUNENV) $(PY) -m ros_fusion.cli $(ARGS)

lint: venv
	$(VENV_ABS)/bin/ruff check .
	$(RUNENV) $(PY) -m ros_fusion.ros.param_docs --check
	$(PY) -m ros_fusion.layers

docs: venv
	$(RUNENV) $(PY) -m ros_fusion.ros.param_docs --write

test: venv-train lint
	$(RUNENV) $(PY) -m pytest -q $(ARGS)
	@# benchmarks run once each (no timing) so they cannot rot; `make bench` times them
	$(RUNENV) $(PY) -m pytest -q benchmarks --benchmark-disable

bench: venv
	$(RUNENV) $(PY) -m pytest -q benchmarks --benchmark-only $(ARGS)

colcon: venv
	$(RUNENV) $(VENV_ABS)/bin/colcon build --base-paths . --build-base build --install-base install

clean:
	rm -rf build install log .pytest_cache .benchmarks
