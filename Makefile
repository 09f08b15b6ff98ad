# Executable Training Theory. Every target creates or reuses .venv by itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SIZE   ?= smoke
JOBS   ?=

.PHONY: all venv browser execute book html student test lint bench clean

all: book

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,cluster]' --config-settings editable_mode=compat
	@touch $(STAMP)

venv: $(STAMP)

browser:  ## Debian chromium for the browser tests (apt-get; sudo when not root; one line saying what to run otherwise)
	@bash scripts/ensure-browser.sh

execute: venv  ## run every chapter (cached) at $(SIZE)
	$(PY) -m dltheory run --size $(SIZE) $(if $(JOBS),--jobs $(JOBS))

book: execute  ## execute all chapters at smoke size and render _build/html
	$(PY) -m dltheory build

html: venv  ## render only (chapters must have been executed)
	$(PY) -m dltheory build

student: venv  ## student notebooks in _build/student
	$(PY) -m dltheory student

test: venv browser  ## library, chapters (smoke), student edition, rendered book in chromium
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check lib tests benchmarks

bench: venv  ## speed ratios measured side by side (benchmarks/)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build
