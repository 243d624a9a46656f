# distilshot: `make train-export` installs and runs the main job; `make test` runs the test suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium
# The PostgreSQL store's tests start a throw-away cluster with Debian's server binaries.
POSTGRES := /usr/lib/postgresql/15/bin/initdb
# The browser edge app's pinned npm packages (onnxruntime-web, onnxruntime-node), from its lock file.
WEB_APP := examples/web_app/node_modules/.package-lock.json
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# What `make train-export` trains (override on the command line: make train-export METHOD=pretrain ...)
METHOD ?= bml
DATASET ?= omniglot
BACKBONE ?= convnet4
PRESET ?= quick
ARGS ?=

# Use an existing copy of the datasets when one sits beside the checkout; otherwise the loaders
# download the public archives into ~/.cache/distilshot.
ifneq ($(wildcard ../shared/data),)
export DISTILSHOT_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install train-export test test-fast lint bench results results-refilled results-generators reproduce-cifar-fs clean demo

install: $(STAMP) $(CHROMIUM) $(POSTGRES) $(WEB_APP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "distilshot needs Python 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[train,cpu,openvino,demo,postgres,dev]'
	@touch $@

# The demo's browser test (`make test` only) drives Debian's chromium through Playwright (never
# `playwright install`).
$(CHROMIUM):
	$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium

$(POSTGRES):
	$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql

$(WEB_APP): examples/web_app/package-lock.json
	npm ci --prefix examples/web_app --no-audit --no-fund

train-export: $(STAMP)
	$(BIN)/distilshot train-export --method $(METHOD) --dataset $(DATASET) --backbone $(BACKBONE) --preset $(PRESET) $(ARGS)

demo: $(STAMP)
	$(BIN)/distilshot demo $(ARGS)

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# The fast subset: no test that trains or exports a model, runs for long, or drives the browser (the
# markers are applied in tests/conftest.py)
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not browser"

# Engine and serving benchmarks -> bench/results.md and bench/results.json (BENCH_ARGS=--quick for a short check)
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Every method (quick preset) on Omniglot and CIFAR-FS -> reproduce/results.md (hours on 2 CPU cores; resumable)
results: $(STAMP)
	$(BIN)/python reproduce/run.py

# REFILLED (issue 4): the students' learning rate on validation tasks, the middle-shot table and compress
# mode, on CIFAR-FS; needs `make results` first
results-refilled: $(STAMP)
	$(BIN)/python reproduce/tune_middle_shot.py reproduce/runs/cifar-fs-pretrain/checkpoints/best.pt
	$(BIN)/python reproduce/middle_shot.py reproduce/runs/cifar-fs-pretrain/checkpoints/best.pt
	$(BIN)/python reproduce/compress.py

# Feature generators (issue 4): plain vs augmented prototypes; needs `make results` first
results-generators: $(STAMP)
	$(BIN)/python reproduce/generators.py

# Every method at its paper schedule, ConvNet-4 on CIFAR-FS -> reproduce/cifar-fs-convnet4-paper.md (many
# hours on 2 CPU cores; resumable: run it again after an interruption)
reproduce-cifar-fs: $(STAMP)
	$(BIN)/python reproduce/cifar_fs_paper.py $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check train/*.py train/backbones train/methods export distilshot

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
