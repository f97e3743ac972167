# make demo: crawl the example site end to end (offline) and print where everything is.
# make demo-scrapyd: the same crawl as a scheduled Scrapyd job (a local Scrapyd on a free port).
# make test: check the import contracts, lint (ruff), type-check (mypy --strict), then run the test suite.
# Both install what they need first (scripts/bootstrap.sh), apt packages included.
PYTHON_VENV := .venv/bin/python

.PHONY: setup demo demo-scrapyd test check docs bench-gate bench-faces bench-ledger clean

setup:
	./scripts/bootstrap.sh

demo: setup
	$(PYTHON_VENV) example_project/demo.py

demo-scrapyd: setup
	$(PYTHON_VENV) example_project/demo_scrapyd.py

test: setup
	.venv/bin/lint-imports
	.venv/bin/ruff check .
	.venv/bin/mypy scrapy_gdpr
	$(PYTHON_VENV) -m pytest

# The three static checks alone (make test runs them first).
check: setup
	.venv/bin/lint-imports
	.venv/bin/ruff check .
	.venv/bin/mypy scrapy_gdpr

docs: setup
	$(PYTHON_VENV) -m sphinx -q -W -b html docs docs/_build/html

bench-gate: setup
	$(PYTHON_VENV) benchmarks/gate_overhead.py

bench-faces: setup
	$(PYTHON_VENV) benchmarks/face_recall.py
	$(PYTHON_VENV) benchmarks/face_throughput.py

bench-ledger: setup
	$(PYTHON_VENV) benchmarks/ledger.py

clean:
	rm -rf example_project/output docs/_build .pytest_cache
