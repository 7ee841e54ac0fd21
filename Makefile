# Each target installs what it needs into .venv (created on first use), then runs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := runs/demo

.PHONY: demo test bench lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,onnx]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded synthetic dataset: data -> train -> evaluate -> predict.
demo: $(STAMP)
	$(BIN)/digitdet synth --out $(DEMO)/data --train 3000 --valid 300 --test 300 --seed 0
	$(BIN)/digitdet train --data $(DEMO)/data --out $(DEMO)/run --config cpu_fast
	$(BIN)/digitdet evaluate --weights $(DEMO)/run/best.pt --data $(DEMO)/data --split valid --tune-decoder
	$(BIN)/digitdet predict --weights $(DEMO)/run/best.pt --images $(DEMO)/data/test --out $(DEMO)/pred
	$(BIN)/digitdet evaluate --pred $(DEMO)/pred/pred.json --data $(DEMO)/data --split test
	@echo "demo done: predictions in $(DEMO)/pred/pred.json and $(DEMO)/pred/pred.csv"

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) runs
