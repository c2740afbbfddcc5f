# The two quickstart commands: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Extras `make test` installs (`cloud`: gcsfs and the local GCS server of the
# object-store test; `notebooks`: the Jupyter kernel that runs colabs/); CI
# adds `torch` (PyTorch references of the converter tests, ~5 GB), which are
# skipped without it.
TEST_EXTRAS ?= test,cloud,notebooks
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(TEST_EXTRAS))
DEMO_WORKDIR ?= workdirs/demo_siglip_shapes
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo demo-digits test test-slow install benchmark notebooks clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# SigLIP pretraining from scratch on the built-in shapes captions; prints
# zero-shot top-1, retrieval recall and where the checkpoints and logs are.
# On a CPU the batch is split over DEMO_CPU_DEVICES host devices (data
# parallel): for these small steps, faster than one device using every core.
# Without effect on a GPU or TPU.
DEMO_CPU_DEVICES ?= 2
# Small steps fed by tf.data on the same cores: malloc arenas per thread
# (host_memory's keep_arenas) train the demos faster than the one arena
# (make demo 1.45x; see host_memory.py).
DEMO_HOST_MEMORY = BIG_VISION_LIKE_HOST_MEMORY=$${BIG_VISION_LIKE_HOST_MEMORY:-keep_arenas}
demo: $(STAMP)
	$(DEMO_HOST_MEMORY) XLA_FLAGS="--xla_force_host_platform_device_count=$(DEMO_CPU_DEVICES) \
	    $$XLA_FLAGS" $(PY) -m big_vision_like.train \
	    --config configs/siglip_shapes.py --workdir $(DEMO_WORKDIR)

# A small ViT classifier on the built-in digits (about two minutes).
demo-digits: $(STAMP)
	$(DEMO_HOST_MEMORY) $(PY) -m big_vision_like.train --config configs/vit_digits.py \
	    --workdir workdirs/demo_vit_digits

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15 \
	    -m "not benchmark and not slow"

# The multi-process runs (two jax.distributed processes training, SIGTERM to
# one of them, gathering evaluators), the kill-and-resume on a gs:// workdir
# bf16 training, the NFNet recipe run, benchmark --compare big_vision and the
# six notebooks in Jupyter kernels: a few minutes, run by CI after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=10 -m slow

# Re-executes every notebook in place (their committed outputs and figures).
notebooks: $(STAMP)
	$(PY) -m big_vision_like.tools.run_notebooks colabs/*.ipynb --inplace

benchmark: $(STAMP)
	$(PY) -m big_vision_like.tools.benchmark

clean:
	rm -rf $(VENV) build *.egg-info
