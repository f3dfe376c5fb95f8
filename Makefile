# sen2naip-hub: every target sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SAMPLE_DIR ?= ../shared/sample
MODELS_DIR ?= models
DEMO_OUT ?= demo_output

export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install demo test lint format bench models space clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: convert the published weights (if missing) and degrade the real NAIP sample.
demo: $(STAMP)
	$(BIN)/sen2naip demo --sample-dir $(SAMPLE_DIR) --models-dir $(MODELS_DIR) --out $(DEMO_OUT)
	SEN2NAIP_SAMPLE_DIR=$(SAMPLE_DIR) $(BIN)/sen2naip build --config dataset_builder/configs/demo.yaml --models $(MODELS_DIR)

## The Gradio Space, locally (http://127.0.0.1:7860): the demo dataset's ROIs or your own upload.
space: $(STAMP)
	$(BIN)/python spaces/sen2naip-degradation/app.py

models: $(STAMP)
	$(BIN)/sen2naip convert-reference --out $(MODELS_DIR)

## ruff, then the whole offline test suite (GPU tests are deselected by the `gpu` marker).
test: $(STAMP)
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "no chromium: the real-browser test will skip"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_degradation.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
