# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PRESET ?= default
ARGS   ?=

.PHONY: train test bench data clean help browser fonts

help:
	@echo "make train   set up $(VENV), fetch MNIST, train the '$(PRESET)' preset, print the result"
	@echo "make test    set up $(VENV) with the test extra, run the whole suite"
	@echo "make bench   speed benchmarks (see benchmarks/)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned in requirements.txt (the CPU wheel); the package itself keeps a loose range.
$(VENV)/.core: $(PY) requirements.txt pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# the test extra pulls in the serve and export extras (FastAPI, uvicorn, ONNX, onnxruntime), Playwright and ruff
$(VENV)/.test: $(VENV)/.core
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# the browser test drives Debian's Chromium; without it that one test skips and says why
browser:
	@bash scripts/ensure-chromium.sh

# the handwriting benchmark's fonts (Debian packages); without them its tests skip and say why
fonts:
	@bash scripts/ensure-fonts.sh

data: $(VENV)/.core
	$(PY) -m tinymnist data fetch

train: data
	$(PY) -m tinymnist train --preset $(PRESET) $(ARGS)

# lint first (pyflakes rules, configured in pyproject.toml): a second or two, and it names the line
test: $(VENV)/.test browser fonts
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest $(ARGS)

bench: data
	PY=$(PY) bash benchmarks/speed.sh

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
