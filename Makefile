# fxlower: the two set-up commands are `make demo` and `make test`; both create the venv if missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fxlower-installed

.PHONY: demo test test-slow bench lint fuzz corpus onnx-corpus targets-table targets-corpus quant-table clean install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on every machine's disk; an unpinned torch pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m fxlower demo

# Two workers, one file per worker at a time (a file's module fixtures run once, its tests in
# order); TEST_WORKERS=auto on a bigger machine. The slow tests (the benchmark's smoke run)
# are `make test-slow`; CI (.ci/run) runs both.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST) -m "not slow" tests

test-slow: $(STAMP)
	$(PYTEST) -m slow tests

bench: $(STAMP)
	$(PY) benchmarks/bench.py

# Differential fuzzing of every pass (issue 8): 10,000 random cases against eager PyTorch
# (and onnxruntime every 100th); shrunk failures are written to tests/regressions/.
# The fuzzer is a development tool in tools/fuzz/, not part of the installed package.
fuzz: $(STAMP)
	$(PY) -m tools.fuzz --cases 10000

# Every model of the corpus (models/corpus/, real transformers architectures) lowered,
# exported, checked and run in onnxruntime against its plain export; the table goes to
# build/corpus.md and the command fails when a model breaks a rule of issue 12.
corpus: $(STAMP)
	$(PY) tools/corpus.py

# The corpus through the ONNX path: each entry exported by both exporters, lowered from the
# file alone (fxlower.lower_onnx); the README's table of "ONNX files in, ONNX files out".
onnx-corpus: $(STAMP)
	$(PY) tools/onnx_corpus.py --markdown

# The README's per-target table: each zoo model exported for every profile and the file
# re-checked with `fxlower check --target T` in a fresh process.
targets-table: $(STAMP)
	$(PY) tools/target_table.py

# The same table for the corpus (models/corpus/): each (model, target) cell in a fresh
# process, two at a time (--jobs), 600 s each at most; the table goes to build/targets-corpus.md.
targets-corpus: $(STAMP)
	$(PY) tools/target_table.py --corpus --out build/targets-corpus.md

# The README's int8 table (issue 17): zoo gather models and four corpus models quantized by
# onnxruntime's quantize_static (the original) and fxlower.quantize_static (the lowered file),
# and the quantized original lowered from the file; fails when a ratio exceeds 1.1 or a file
# keeps a forbidden op. The table goes to build/quant.md (~3 min).
quant-table: $(STAMP)
	$(PY) tools/quant_table.py

lint: $(STAMP)
	$(PY) -m ruff check src passes tests models tools benchmarks
	$(PY) -m mypy  # strict on src/fxlower and passes: see [tool.mypy] in pyproject.toml
	MYPYPATH=src:. $(PY) -m mypy --explicit-package-bases tools/fuzz tools/target_table.py tools/quant_table.py benchmarks  # the dev tools, as strictly

clean:
	rm -rf build dist .pytest_cache .hypothesis
