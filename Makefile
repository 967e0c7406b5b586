# Two entry points (see README): `make app` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STREAMLIT_FLAGS := --server.headless true --server.fileWatcherType none --browser.gatherUsageStats false

.PHONY: app test test-all install

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

app: install
	$(VENV)/bin/streamlit run app/streamlit_app.py $(STREAMLIT_FLAGS)

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ""
