# crmlab – the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := data/demo
JOBS ?= 2

.PHONY: run test lab bench demo-data lint clean

$(STAMP): requirements.lock pyproject.toml
	@echo "» Création de l'environnement $(VENV) (requirements.lock)…"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import duckdb, papermill, lifetimes" 
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@$(PY) -m ipykernel install --sys-prefix --name crmlab --display-name "crmlab (Python 3)" \
		$$($(PY) -c "from crmlab.runner import KERNEL_ENV; print(' '.join(f'--env {k} {v}' for k, v in KERNEL_ENV.items()))") >/dev/null
	@touch $(STAMP)

$(DEMO)/truth/model.json: | $(STAMP)
	$(BIN)/crmlab demo-data --out $(DEMO)

demo-data: $(DEMO)/truth/model.json

run: $(STAMP) $(DEMO)/truth/model.json
	$(BIN)/crmlab run params/demo.yaml

test: $(STAMP)
	MPLBACKEND=agg $(BIN)/python -m pytest -n $(JOBS) --dist loadgroup -q

lab: $(STAMP) $(DEMO)/truth/model.json
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check lib tests notebooks bench tools

clean:
	rm -rf runs data .pytest_cache
