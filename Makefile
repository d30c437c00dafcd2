# Two commands matter: `make dev` (the whole system on embedded defaults) and `make test`.
# Each installs what it needs into .venv and node_modules; nothing is assumed installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
CONTRACTS_STAMP := contracts/node_modules/.installed
DOCS_STAMP := app/static/node_modules/.installed

.PHONY: install test dev bench clean

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(CONTRACTS_STAMP): contracts/package.json contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Swagger UI and ReDoc, served offline at /docs and /redoc.
$(DOCS_STAMP): app/static/package.json app/static/package-lock.json
	cd app/static && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(PY_STAMP) $(CONTRACTS_STAMP) $(DOCS_STAMP)

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
test: install
	@$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

dev: install
	$(BIN)/mia dev

# The coordinator under load (bench/README.md): steady, half-load, hold and chaos runs, each a
# table on stdout and bench/results/<name>.json. BENCH_ARGS="steady --db sqlite" for one run.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) contracts/node_modules app/static/node_modules .dev
