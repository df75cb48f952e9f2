# `make demo`: set up the environment and run the main job on the built-in model.
# `make test`: set up the environment and run the whole test suite (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/causal-unlearn demo

test: setup
	$(BIN)/python -m pytest -q causal_unlearn tests notebooks --nbmake

clean:
	rm -rf $(VENV) .pytest_cache
