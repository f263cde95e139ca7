# make install: create .venv (if missing) and install the project with the tested pins.
# make test:    install, then the whole test suite (slow/GPU tests skipped), one pytest
#               worker per core (pytest-xdist): each test is single-threaded.
# make demo:    install, then `python run.py` (the micro RLVR study on the CPU), started afresh
#               each time (train.overwrite=true: the demo folder is replaced).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n auto

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/python run.py train.overwrite=true

clean:
	rm -rf outputs multirun .pytest_cache
