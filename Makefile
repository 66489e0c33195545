# Two commands for a fresh machine: `make app` and `make test`. `make install` is their bootstrap.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
STAMP := $(VENV)/.installed

.PHONY: install app serve test test-fast bench assets screenshots gpu-data gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -c "import torchvision.ops, torch, streamlit, umap; print('torch', torch.__version__, 'ok')"
	$(BIN)/python -c "from engine.projection import warm_up; print(f'umap compiled in {warm_up():.0f} s')" \
		|| echo "umap warm-up failed: the first map will compile it (about 35 s)"
	$(BIN)/python -c "from engine.evaluate import warm_up; print(f'evaluation step compiled in {warm_up():.0f} s')" \
		|| echo "evaluation warm-up failed: the first evaluation will compile its step (about 20 s)"
	touch $(STAMP)

install: $(STAMP)

app: install
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) --server.headless true \
		--browser.gatherUsageStats false

# A class on one server (docs/SERVE.md): make serve ADDRESS=0.0.0.0 PORT=8501 [LIMITS=limits.toml]
serve: install
	$(BIN)/python -m engine serve --address "$(ADDRESS)" --port $(PORT) $(if $(LIMITS),--limits "$(LIMITS)")

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: install
	$(BIN)/python -m bench

# The bundled example the dashboard shows before anything is computed (~10 min on 2 cores; docs/DASHBOARD.md)
assets: install
	$(BIN)/python -m engine example build

# README's screenshots, taken in Chromium from the bundled example (assets/screenshots)
screenshots: install
	$(BIN)/python -m bench.screenshots

# The GPU check runs with the GPU machine's own python3 (torch with CUDA; no .venv, no registry there).
# gpu-data copies Debian's Fashion-MNIST (~30 MB) into an ignored folder that travels with the tree.
gpu-data:
	mkdir -p .gpu-data/FashionMNIST/raw
	cp /usr/share/datasets/fashion-mnist/*-ubyte* .gpu-data/FashionMNIST/raw/

gpu-check:
	$(PY) -m bench.gpu_check --data-root .gpu-data --out gpu_check.json

clean:
	rm -rf $(VENV) .pytest_cache
