# vtc — `make setup` then `make test` on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup lock test test-fast lint format demo bench gpu clean

setup:  ## create .venv and install vtc with every dependency (CPU torch pinned)
	bash scripts/setup.sh

lock:  ## re-resolve every dependency into requirements/lock.txt (after changing one; review the diff)
	bash scripts/lock.sh

test:  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q

test-fast:  ## unit tests only, without the end-to-end pipeline tests
	$(PY) -m pytest -q -m "not slow"

lint:
	$(VENV)/bin/ruff check vtc tests benchmarks scripts
	$(VENV)/bin/ruff format --check vtc tests benchmarks scripts

format:
	$(VENV)/bin/ruff format vtc tests benchmarks scripts
	$(VENV)/bin/ruff check --fix vtc tests benchmarks scripts

demo:  ## the whole pipeline offline on a synthetic video and tiny random models
	$(VENV)/bin/vtc demo

bench:
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/reducers.py
	$(PY) benchmarks/eval_latency.py

gpu:  ## the lent-GPU checks: CUDA tests, compress on CUDA, full-size extract and 0.5B eval figures
	$(PY) benchmarks/gpu.py

clean:
	rm -rf .pytest_cache build *.egg-info vtc-demo
