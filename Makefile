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

test-native: $(STAMP)
	PYIMGOPT_EXPECT_BACKEND=native $(PY) -m pytest -q

test-pure: $(STAMP)
	PYIMGOPT_PURE=1 PYIMGOPT_EXPECT_BACKEND=pure $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest bench -q --benchmark-only

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check pyimgopt sidecar tests bench

clean:
	rm -rf $(VENV) build demo-out pyimgopt/_native.c pyimgopt/*.so *.egg-info
