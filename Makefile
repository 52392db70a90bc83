# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hashmatch-installed
DEMO_DB := demo-out/demo.hmdb

.PHONY: install system-deps demo test bench clean

# Editable install: builds the Cython kernels in place; rebuilt when their sources change.
$(STAMP): pyproject.toml setup.py hashmatch/*.pyx $(wildcard hashmatch/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	@rm -rf demo-out && mkdir -p demo-out
	@echo "== 1. Fingerprint the known images (hash list: fake ID, chat screenshot, poster, photo)"
	$(VENV)/bin/hashmatch hash --recursive examples/known
	@echo "== 2. Index them"
	$(VENV)/bin/hashmatch index --db $(DEMO_DB) --recursive --label demo --source "bundled examples" examples/known
	@echo "== 3. Which of the later re-posts are copies of a known image?"
	-$(VENV)/bin/hashmatch query --db $(DEMO_DB) examples/reposts/*

system-deps:
	bash scripts/install-system-deps.sh

test: install system-deps
	$(PY) -m ruff check hashmatch tests benchmarks examples scripts
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/bench_hash.py

clean:
	rm -rf build demo-out hashmatch/*.so hashmatch/_hamming.c hashmatch/_imagecore.c *.egg-info
