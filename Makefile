# One command per developer task. `make demo` and `make test` are the README's
# Quick start: each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(wildcard csrc/*.c csrc/*.h pyimgopt/*.pyx pyimgopt/*.pxd)

.PHONY: demo test test-native test-pure bench lint clean

$(STAMP): $(SOURCES)
	@$(PYTHON) -m venv $(VENV) || { echo >&2 "'$(PYTHON) -m venv' failed: on Debian/Ubuntu run 'apt-get install python3-venv python3-dev'"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)  ## optimise the bundled sample folder into demo-out/ and print the savings
	@rm -rf demo-out
	$(VENV)/bin/pyimgopt optimize examples/sample -o demo-out

test: test-native test-pure  ## the whole suite, on the native backend and on the pure fallback

# Each pass runs its test files on up to 4 processes (pytest-xdist, one file per
# process at a time: a module's fixtures stay in one process), or on as many as
# there are cores when fewer; TEST_JOBS=0 runs in one process.
TEST_JOBS ?= auto
PYTEST := $(PY) -m pytest -q --durations=15 -n $(TEST_JOBS) --maxprocesses 4 --dist loadfile

test-native: $(STAMP)
	PYIMGOPT_EXPECT_BACKEND=native $(PYTEST)

test-pure: $(STAMP)
	PYIMGOPT_PURE=1 PYIMGOPT_EXPECT_BACKEND=pure $(PYTEST)

# pyvips (the sharp-task baseline) comes with the `bench` extra; without it the
# pyvips cases skip with a reason. The JSON is turned into bench/README.md's tables.
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_JSON  ?= .benchmarks/bench.json

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## pytest-benchmark suites in bench/, then regenerate bench/README.md's tables
	@mkdir -p $(dir $(BENCH_JSON))
	$(PY) -m pytest bench -o python_files='bench_*.py' --benchmark-only --benchmark-group-by=group -p no:cacheprovider --benchmark-json=$(BENCH_JSON)
	$(PY) bench/report.py $(BENCH_JSON) --update bench/README.md

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check pyimgopt sidecar tests bench

clean:
	rm -rf $(VENV) build demo-out pyimgopt/_native.c pyimgopt/*.so *.egg-info
