# Every target creates .venv when missing and installs the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow lint format demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The suite minus what is marked slow (real servers, clusters, a browser, long trainings):
# under 10 minutes on 2 cores. CI (.ci/run) runs both targets.
test: lint
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

# The main job on embedded defaults: a local Ray, the sqlite MLflow store under ./mlruns,
# the synthetic dataset and the tiny encoder (no GPU, no network).
demo: $(STAMP)
	$(VENV)/bin/orch search --dataset synthetic --trials 8 --quick --max-concurrent 2
	$(VENV)/bin/orch best

clean:
	rm -rf $(VENV) .pytest_cache
