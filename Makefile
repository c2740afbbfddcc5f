# The two quickstart commands: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Extras `make test` installs; CI adds `torch` (PyTorch references of the
# converter tests, ~5 GB), which are skipped without it.
TEST_EXTRAS ?= test
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(TEST_EXTRAS))
DEMO_WORKDIR ?= workdirs/demo_vit_digits
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo demo-siglip test install benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m big_vision_like.train --config configs/vit_digits.py \
	    --workdir $(DEMO_WORKDIR)

demo-siglip: $(STAMP)
	$(PY) -m big_vision_like.train --config configs/siglip_shapes.py \
	    --workdir workdirs/demo_siglip_shapes

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

benchmark: $(STAMP)
	$(PY) -m big_vision_like.tools.benchmark

clean:
	rm -rf $(VENV) build *.egg-info
