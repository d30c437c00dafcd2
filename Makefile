# Two commands matter: `make dev` (the whole system on embedded defaults) and `make test`.
# Each installs what it needs into .venv and node_modules; nothing is assumed installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
CONTRACTS_STAMP := contracts/node_modules/.installed
DOCS_STAMP := app/static/node_modules/.installed

.PHONY: install chromium prometheus test dev bench clean

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(CONTRACTS_STAMP): contracts/package.json contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Swagger UI and ReDoc (served offline at /docs and /redoc) and uPlot (the /transparency chart).
$(DOCS_STAMP): app/static/package.json app/static/package-lock.json
	cd app/static && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Headless Chromium for the browser test of /transparency (tests/transparency): Debian's package,
# driven by Playwright through the system binary (no browser download). Installed only when
# missing and only by root; elsewhere the browser test skips and says why.
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-liberation >/dev/null; \
	else echo "chromium is missing and cannot be installed here (not root, or no apt-get):" \
	  "the browser test will skip"; fi

# promtool (the alert rules' unit tests) and prometheus (a real server scraping `mia serve` in a
# test), from Debian's package, the way chromium is installed: only when missing and only by
# root; elsewhere those tests skip and say why.
PROMTOOL := /usr/bin/promtool

prometheus:
	@if [ -x $(PROMTOOL) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's prometheus for the alert-rule and scrape tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; \
	else echo "prometheus is missing and cannot be installed here (not root, or no apt-get):" \
	  "the promtool and scrape tests will skip"; fi

install: $(PY_STAMP) $(CONTRACTS_STAMP) $(DOCS_STAMP) chromium prometheus

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
# TEST_WORKERS: pytest-xdist processes (worksteal: a worker left with the long tests at the end
# hands some to the other); TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= 2

test: install
	@$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

dev: install
	$(BIN)/mia dev

# The coordinator under load (bench/README.md): steady, half-load, hold and chaos runs, each a
# table on stdout and bench/results/<name>.json. BENCH_ARGS="steady --db sqlite" for one run.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) contracts/node_modules app/static/node_modules .dev
