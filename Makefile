# `make book` builds the HTML book (executing every notebook on the embedded default);
# `make test` runs the test suite (with the quick check of the recorded results); `make reproduce`
# recomputes every recorded result in full. Both create or reuse the virtual environment .venv/ and install
# the lock, requirements.txt (compiled from requirements.in: `make lock`).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Numbers in the book and the tests do not depend on the machine's core count.
export OMP_NUM_THREADS ?= 2
# Idle OpenMP threads sleep instead of spinning: two test workers of 2 threads each share the
# cores without starving each other (the thread count, not this, decides the numbers).
export OMP_WAIT_POLICY ?= PASSIVE

# The real data: `make reproduce` and the tests that read data look here.
DATA_ROOT ?= ../shared/data

.PHONY: help install book book-data test reproduce lock clean sync-notebooks

help:
	@echo "make book   build the book into _build/html (executes the notebooks)"
	@echo "make book-data DATA_ROOT=DIR   the same with every real benchmark computed from DIR"
	@echo "make test   run the test suite (recorded results: the quick check on seeded subsets)"
	@echo "make reproduce [DATA_ROOT=DIR]   recompute every recorded result in full and compare (hours on 2 cores)"
	@echo "make lock   recompile the lock requirements.txt from requirements.in (needs the network)"

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

# A regular (non-editable) install: tests and notebooks import the installed package.
install: $(STAMP)
	rm -rf build
	$(PY) -m pip install -q --no-deps --no-build-isolation --force-reinstall .

sync-notebooks: install
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*.py

# --all: every page is read and executed again, also when only ood_lib changed since the last build
book: install
	$(VENV)/bin/jupyter-book build --all -W -n --keep-going --path-output . .
	@echo "book: open _build/html/index.html"

# The same book with every real benchmark computed live from DATA_ROOT (on a 2-core CPU over an
# hour, on a GPU minutes), into _build/data/_build/html, then looked at in the browser when there is one.
book-data: install
	@test -n "$(DATA_ROOT)" || { echo "usage: make book-data DATA_ROOT=/path/to/data"; exit 2; }
	OOD_DATA_ROOT=$(abspath $(DATA_ROOT)) $(VENV)/bin/jupyter-book build --all -W -n --keep-going --path-output _build/data .
	if command -v chromium >/dev/null || command -v google-chrome >/dev/null; then \
	  $(PY) tools/browser_check.py _build/data/_build/html --screenshots _build/data/screenshots; fi
	@echo "book-data: open _build/data/_build/html/index.html"

# One pytest run over TEST_WORKERS processes (pytest-xdist): every test but the full reproduction,
# the book build (which executes each notebook once, at its default size) first, on one worker,
# while the other runs the rest. The workers read one model cache ($OOD_TEST_CACHE, a temporary
# folder), so the CNN is trained once. OMP_NUM_THREADS stays 2 per worker: a trained CNN depends
# on the thread count, and the recorded numbers were made with 2.
TEST_WORKERS ?= 2
test: install
	t=$$(mktemp -d) && export OOD_TEST_CACHE=$$t && \
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal -m "not reproduce" $(PYTEST_ARGS); s=$$?; rm -rf $$t; exit $$s

# Every recorded study and seed run recomputed in full from DATA_ROOT and compared to 1e-6; a
# missing data root fails. Not part of `make test` (on a 2-core CPU it takes over an hour).
reproduce: install
	OOD_TEST_DATA=$(abspath $(DATA_ROOT)) OOD_REQUIRE_DATA=1 $(VENV)/bin/pytest -m reproduce $(PYTEST_ARGS) tests/test_recorded.py

# pip-tools in a throwaway environment, so that .venv holds exactly the lock.
lock:
	d=$$(mktemp -d) && python3 -m venv $$d && $$d/bin/pip install -q pip-tools && \
	$$d/bin/pip-compile --allow-unsafe --no-emit-index-url --no-emit-find-links requirements.in -o requirements.txt; \
	s=$$?; rm -rf $$d; exit $$s

clean:
	rm -rf _build
