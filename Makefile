# circuitbook: `make book` (main job) and `make test` (what CI runs). Both set up .venv if it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
BOOK_ARGS := --config _config.yml --toc book/_toc.yml

.PHONY: venv book notebooks html browser test lint unit nbval lab sync bench readme clean-ci

venv: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "circuitbook needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]" > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	rm -f $(VENV)/.installed-* && touch $@

## The main job: execute every chapter (profile full, shipped artifacts; missing ones are trained), build the HTML.
book: venv notebooks readme sysdeps html

# Chapters run JOBS at a time (one thread each): artifacts are shared read-only, and a missing one is trained
# once under its training lock (artifacts.training_lock). Each chapter's wall time goes to _build/chapter_times.tsv
# (`make bench` prints it).
JOBS ?= 2
# Longest first (make bench's chapter times), so that no long chapter starts last; chapters not listed come after.
SLOW_FIRST := 07 03 04 06 05 02 01
BOOK_ORDER := $(foreach n,$(SLOW_FIRST),$(filter notebooks/$(n)_%,$(NOTEBOOKS))) \
              $(filter-out $(foreach n,$(SLOW_FIRST),notebooks/$(n)_%),$(NOTEBOOKS))
notebooks: export OMP_NUM_THREADS ?= 1
notebooks: venv
	@mkdir -p _build && : > _build/chapter_times.tsv && echo "notebooks: start $$(date -u +%T), $(JOBS) at a time"
	@printf '%s\n' $(BOOK_ORDER) | xargs -P $(JOBS) -I{} sh -c 'nb={}; b=$$(basename $$nb); s=$$(date +%s); \
	  $(VENV)/bin/jupytext --to ipynb --update $${nb%.ipynb}.py -o $$nb >/dev/null && \
	  (cd notebooks && ../$(VENV)/bin/papermill --log-level WARNING $$b $$b -p profile full) && \
	  t=$$(( $$(date +%s) - s )) && printf "%s\t%s\n" $$b $$t >> _build/chapter_times.tsv && echo "== $$b: $$t s"'
	@echo "notebooks: done $$(date -u +%T)"

html: venv
	@echo "html: start $$(date -u +%T)"
	$(VENV)/bin/jupyter-book build . $(BOOK_ARGS) --warningiserror --quiet
	@echo "HTML book: _build/html/index.html"

# Every chapter page opened from disk in headless Chromium with no network (tests/test_browser.py); screenshots
# in _build/screenshots/. Needs Debian's chromium (.ci/run installs it).
browser: venv html
	@echo "browser: start $$(date -u +%T)"
	CIRCUITBOOK_BROWSER=required $(PY) -m pytest -q -p no:cacheprovider -m browser tests/test_browser.py

## Debian packages for the HTML build (npm: MathJax, require.js and the widget manager, vendored so the book works
## offline) and the browser test (chromium): installed when missing if we are root with apt (CI), else named.
sysdeps:
	@for p in npm chromium; do command -v $$p >/dev/null && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "sysdeps: installing $$p"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p >/dev/null; \
	  else echo "sysdeps: $$p is missing (Debian: apt-get install $$p); the browser test needs chromium"; fi; done

readme: venv
	$(PY) scripts/claims_table.py

## What CI runs (.ci/run): lint, unit tests, every chapter at the ci profile, nbval of the committed notebooks, HTML build,
## the HTML in headless Chromium.
## One torch/OpenMP thread per process (unless OMP_NUM_THREADS is set) and two pytest workers: OpenMP threads spin
## while they wait, so beside one busy neighbour two threads run 3-4x slower (scripts/bench_threads.py) and chapter 3
## at ci more than 10x; one thread per process loses only the neighbour's share.
test: venv lint unit nbval sysdeps html browser
	@echo "make test: done $$(date -u +%T)"

unit nbval: export OMP_NUM_THREADS ?= 1

lint: venv
	$(VENV)/bin/ruff check lib tests scripts book/_ext notebooks/*.py

unit: venv
	@echo "unit: start $$(date -u +%T), OMP_NUM_THREADS=$$OMP_NUM_THREADS"
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=12 -m "not browser" tests

# nbval re-executes the committed notebooks; their results files go to a scratch dir, not data/results, and
# then every claim they wrote is compared with data/results/*.json (tests/test_results.py: a changed exact
# claim fails, naming it with both values).
nbval: venv
	@echo "nbval: start $$(date -u +%T), OMP_NUM_THREADS=$$OMP_NUM_THREADS"
	R=$$(mktemp -d) && (cd notebooks && CIRCUITBOOK_RESULTS=$$R ../$(PY) -m pytest -q -p no:cacheprovider \
	  --nbval-lax --nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout=1200 -n 2 --dist loadfile $(notdir $(NOTEBOOKS))) && \
	CIRCUITBOOK_NBVAL_RESULTS=$$R $(PY) -m pytest -q -p no:cacheprovider tests/test_results.py -k rerun

lab: venv
	$(VENV)/bin/jupyter lab notebooks/

## Pair and update: the .py (jupytext percent) is the source; the .ipynb keeps its outputs.
sync: venv
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.py

bench: venv
	$(PY) scripts/bench.py
