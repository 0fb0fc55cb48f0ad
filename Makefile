# facefit set-up, demo and tests. `make demo` and `make test` work on a fresh Debian machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FACEFIT := $(VENV)/bin/facefit
SHARED_MODEL ?= ../shared/models/ICT-FaceKit.tar.xz
DEB_PACKAGES := libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libsuitesparse-dev libopenblas0-pthread libusb-1.0-0 python3-venv
TEST_DEB_PACKAGES := chromium fonts-dejavu-core
OUT ?= out

.PHONY: setup demo test test-all bench system-packages test-packages venv model clean

## setup: Debian packages, ./.venv with the pinned dependencies and facefit, the default model (idempotent)
setup: system-packages venv model

# the Debian packages named in $(1) that are not installed yet, installed
define install_debs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

system-packages:
	$(call install_debs,$(DEB_PACKAGES))

## test-packages: what the tests need beyond the library: headless Chromium opens the batch reports
test-packages:
	$(call install_debs,$(TEST_DEB_PACKAGES))

$(VENV)/.deps-installed: requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(VENV)/.deps-installed

model: venv
	@if $(FACEFIT) model info ict >/dev/null 2>&1; then echo "model 'ict' already installed"; \
	elif [ -f "$(SHARED_MODEL)" ]; then $(FACEFIT) model install ict --from "$(SHARED_MODEL)"; \
	else $(FACEFIT) model install ict; fi

## demo: the main job on the built-in example photo (matplotlib's Grace Hopper portrait)
demo: setup
	$(FACEFIT) fit --example -o $(OUT)
	$(FACEFIT) model show ict --yaw 45 -o $(OUT)/model_preview_yaw45.png
	@echo "outputs in $(OUT)/grace_hopper/ (mesh.obj, texture.png, params.json, overlay.png, preview.png, landmarks.json, depth_refined.png, normals.png, detail.obj)"

## test: the default (fast) test suite
test: setup test-packages
	$(PY) -m pytest -q tests

## test-all: also the slow tests (full model install from the archive, embedding accuracy)
test-all: setup test-packages
	$(PY) -m pytest -q -m "slow or not slow" tests

## bench: benchmarks; results go to BENCHMARKS.md by hand with the command that made them
bench: setup
	$(FACEFIT) bench foundation
	$(FACEFIT) bench coarse --scans ../shared/data
	$(FACEFIT) bench medium --scans ../shared/data
	$(FACEFIT) bench register --scans ../shared/data
	$(FACEFIT) bench fine --scans ../shared/data

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
