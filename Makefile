# The two commands at the top of README.md. Both create the virtual environment only when it is missing
# or requirements.txt / setup.py changed, so a second run is quick and changes nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
DEMO := out/demo
# No trained weights can be downloaded everywhere (and they are licensed for non-commercial use only), so
# the demo runs the official architectures with random weights, flagged on every output. WEIGHTS=real
# downloads EPFL-VILAB/4M-21_B and its tokenizers (about 5 GB) and runs them instead.
WEIGHTS ?= random
WEIGHT_ARGS := $(if $(filter random,$(WEIGHTS)),--random-weights,)
# torch, not the CPU default ONNX Runtime: that one first exports ~4 GB of ONNX graphs into the cache.

.PHONY: demo test

$(STAMP): requirements.txt setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/fourm-ros sample-bag $(DEMO)/sample_bag
	$(if $(WEIGHT_ARGS),,$(VENV)/bin/fourm-ros download)
	$(VENV)/bin/fourm-ros replay $(DEMO)/sample_bag -o $(DEMO)/output_bag --run-node $(WEIGHT_ARGS) \
		--set backend=torch --pictures $(DEMO)/pictures
	@echo "node outputs: $(DEMO)/output_bag (ros2 bag info / play), pictures: $(DEMO)/pictures"

test: $(STAMP)
	$(VENV)/bin/python -m pytest
