# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geoseg-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -c "import segmentation_models_pytorch, torch, torchvision, rasterio; print('geoseg env ok: torch', torch.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/run_demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) demo-output
