# Two entry points (see README): `make app` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STREAMLIT_FLAGS := --server.headless true --server.fileWatcherType none --browser.gatherUsageStats false

.PHONY: app test test-all lint install bundle

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -c "from routescope.models.layers.fused import main; main()"
	touch $@

app: install
	$(PY) -m routescope.app.serve $(STREAMLIT_FLAGS)

# the import contract, ruff (lint and format) and the default tests (pyproject's addopts leave out the tests
# marked slow or heavy): under 3 minutes on 2 cores
test: lint
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# every test, the slow and heavy ones too
test-all: lint
	$(PY) -m pytest -q -m ""

# Rebuild a bundled checkpoint from recipes/NAME.toml, replaying its chain of init_from links (those whose
# checkpoint exists in OUT are skipped): make bundle NAME=skipnet_resnet20_fmnist_a0.75_fta6kd [OUT=dir] [DRY_RUN=1]
bundle: install
	$(PY) -m models.zoo bundle $(NAME) $(if $(OUT),--out $(OUT)) $(if $(DRY_RUN),--dry-run)
