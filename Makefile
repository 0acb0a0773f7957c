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
# backend=torch whatever `auto` would pick: on a GPU machine TensorRT would first export and build engines.

# The JetPack lane: the whole suite on Python 3.10 with the oldest versions the README supports on JetPack 6
# (numpy 1.x, Pillow 9.0.1, onnxruntime 1.23, torch 2.5), every package of requirements.txt pinned by
# constraints/jetpack6.txt, in its own .venv-jp6. .ci/run runs it after `make test`.
# pip keeps no wheel cache (--no-cache-dir): the lane's torch 2.5.1 with its nvidia-* wheels is 2.6 GB of
# downloads on top of 5 GB installed, and a CI disk once ran out holding both.
JP6_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python3.10) $(shell command -v python3.10))
JP6_VENV := .venv-jp6
JP6_STAMP := $(JP6_VENV)/.installed

.PHONY: demo test test-jetpack

$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The RGB-D part: 3 frames of the synthetic room with registered depth, replayed with its depth topic, so
# the node also publishes depth/metric and the points cloud (depth and segmentation only: all the cloud uses).
demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/fourm-ros sample-bag $(DEMO)/sample_bag
	$(if $(WEIGHT_ARGS),,$(VENV)/bin/fourm-ros download)
	$(VENV)/bin/fourm-ros replay $(DEMO)/sample_bag -o $(DEMO)/output_bag --run-node $(WEIGHT_ARGS) \
		--set backend=torch --pictures $(DEMO)/pictures
	$(VENV)/bin/fourm-ros sample-bag --rgbd --frames 3 $(DEMO)/rgbd_sample_bag
	$(VENV)/bin/fourm-ros replay $(DEMO)/rgbd_sample_bag -o $(DEMO)/rgbd_output_bag --run-node $(WEIGHT_ARGS) \
		--depth-topic /camera/depth/image_raw --set backend=torch --set tasks.caption.enabled=false \
		--set tasks.human_pose.enabled=false --set tasks.normals.enabled=false
	@echo "node outputs: $(DEMO)/output_bag (ros2 bag info / play), pictures: $(DEMO)/pictures"
	@echo "RGB-D outputs (depth/metric, points): $(DEMO)/rgbd_output_bag"

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# requirements.txt names the packages, constraints/jetpack6*.txt their JetPack 6 versions (tests/test_packaging.py
# checks that every one has a pin there).
$(JP6_STAMP): requirements.txt constraints/jetpack6.txt constraints/jetpack6-ci.txt setup.py pyproject.toml
	@test -n "$(JP6_PYTHON)" || { echo "test-jetpack needs Python 3.10 (pyenv install 3.10.13)"; exit 1; }
	test -x $(JP6_VENV)/bin/python || $(JP6_PYTHON) -m venv $(JP6_VENV)
	sed -e 's/[=<>~!].*//' -e '/^#/d' -e '/^$$/d' requirements.txt > $(JP6_VENV)/packages.txt
	$(JP6_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir \
		-c constraints/jetpack6.txt -c constraints/jetpack6-ci.txt -r $(JP6_VENV)/packages.txt
	$(JP6_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --no-build-isolation -e .
	$(JP6_VENV)/bin/python -m pip check
	touch $(JP6_STAMP)

test-jetpack: $(JP6_STAMP)
	$(JP6_VENV)/bin/python -m pytest
