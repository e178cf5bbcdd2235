# EarlySketch: `make run` launches the app, `make test` runs the whole suite. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: venv run study demo analyse scripted-study test test-fast lint chromium eslint js-lint bench reproduce rl-study default-model adapt clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .  # the project itself, editable: no sys.path edits anywhere
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# Scale-out extra (ray[serve], requirements-cluster.txt): for make test, serve-cluster and bench/load/bench_cluster.py only.
CLUSTER_STAMP := $(VENV)/.cluster-$(shell cksum requirements-cluster.txt | cut -d' ' -f1)
$(CLUSTER_STAMP): requirements-cluster.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-cluster.txt -c requirements.txt
	rm -f $(VENV)/.cluster-* && touch $@

cluster-venv: $(CLUSTER_STAMP)

# The retriever on a local Ray Serve cluster bound to 127.0.0.1 (docs/scaling.md); then `make run ARGS="--serve-url http://127.0.0.1:8000"`.
serve-cluster: cluster-venv
	$(BIN)/python -m retrieval.serving.serve_ray $(ARGS)

# Debian's chromium for the Playwright browser test (never `playwright install`: no browser downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

# Debian's eslint for the UI scripts (never npm at run time). Debian's node modules live in /usr/share/nodejs,
# which a node from elsewhere (NodeSource) does not search: NODE_PATH points there. --format unix needs no chalk.
eslint:
	@command -v eslint >/dev/null 2>&1 || { \
	  echo "installing Debian eslint for the UI script lint"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends eslint >/dev/null; }

js-lint: eslint
	NODE_PATH=/usr/share/nodejs eslint --format unix assets/ui/*.js

run: venv
	$(BIN)/python app.py $(ARGS)

# A user study; STUDY=assets/study_two_models.json compares two models (docs/app.md, "Conditions").
STUDY ?= assets/study_example.json
study: venv
	$(BIN)/python app.py --mode study --study $(STUDY) $(ARGS)

demo: venv
	$(BIN)/python app.py --mode demo $(ARGS)

# A scripted study through the browser (bench/load/scripted_study.py): docs/results/scripted_study.md.
scripted-study: venv chromium
	$(BIN)/python -m bench.load.scripted_study $(ARGS)

LOGDIR ?= study_logs
analyse: venv
	$(BIN)/python -m retrieval.study.analysis $(LOGDIR)

test: venv cluster-venv chromium js-lint
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest

# The edit-run loop: the suite without its slow, browser and cluster tests (markers in pyproject.toml), under a minute on 2 cores.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not browser and not cluster"

lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

# The product pipeline: the supervised model on every train photo but the val carve; the supervised head ships
# unless VERDICT names a `make rl-study` verdict.json whose ship rule passed another head; evaluated on the test
# split when the data has one (OUT/test/{supervised,shipped}/metrics.json), never selected on it.
DATA ?= procedural
OUT ?= runs/reproduce
VERDICT ?=
reproduce: venv
	$(BIN)/python -m pipeline.reproduce --data $(DATA) --out $(OUT) $(if $(VERDICT),--verdict $(VERDICT)) $(ARGS)

# Does any head beat the supervised one? A holdout carve, supervised + RL rewards + fair control, the ship rule
# -> STUDY_OUT/verdict.json (models of the study, never the product's).
STUDY_OUT ?= runs/rl-study
rl-study: venv
	$(BIN)/python -m rl.head_study --data $(DATA) --out $(STUDY_OUT) $(ARGS)

# The shipped default model: the product pipeline on the procedural dataset (20 min of supervised training).
default-model: venv
	$(BIN)/python -m pipeline.reproduce --data procedural --out runs/default --minutes-supervised 20 $(ARGS)
	rm -rf assets/model && cp -r runs/default/shipped/encoder assets/model

# Your photos, your model: sketch-free adaptation of MODEL to the photos in PHOTOS -> a checkpoint folder OUT.
MODEL ?= assets/model
MINUTES ?= 10
adapt: venv
	@test -n "$(PHOTOS)" -a "$(origin OUT)" != file || { echo "usage: make adapt PHOTOS=dir OUT=dir [MODEL=assets/model] [MINUTES=10]"; exit 2; }
	$(BIN)/python -m retrieval.adapt --model $(MODEL) --photos $(PHOTOS) --out $(OUT) --minutes $(MINUTES) $(ARGS)

# The default run of every speed and load bench (1k-1M galleries, encoder options, 50 users, browser): ~35 min on
# 2 cores. `make bench QUICK=1` for a short pass; accuracy benches and the other non-default ones run by name
# (ARGS="--only adapt"; bench/run_all.py lists them). Writes bench/results/<name>.{md,json} and bench/RESULTS.md.
bench: venv chromium
	$(BIN)/python -m bench.run_all $(if $(QUICK),--quick) $(ARGS)

# bench/RESULTS.md again from the result files in bench/results (runs nothing).
bench-summary: venv
	$(BIN)/python -m bench.run_all --collect-only

.PHONY: cluster-venv serve-cluster bench-summary

clean:
	rm -rf .cache runs .pytest_cache
