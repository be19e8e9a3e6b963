# make run   create .venv, install, start the app on the default model (localhost only)
# make test  the same set-up plus test requirements (and Debian's chromium), then every test
# make bench the speed and memory benchmarks (need ../shared for the real-size checkpoint)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: run test bench deps test-deps chromium clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements.txt | $(PY)
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements-test.txt $(VENV)/.deps
	$(PY) -m pip install -r requirements-test.txt
	touch $@

deps: $(VENV)/.deps

test-deps: $(VENV)/.test-deps chromium

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "Browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)."; fi; \
	fi

run: $(VENV)/.deps
	$(PY) -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

test: test-deps
	$(PY) -m pytest

bench: test-deps
	$(PY) bench/trace.py
	$(PY) bench/attribution.py
	$(PY) bench/patching.py
	$(PY) bench/probes.py
	$(PY) bench/ui.py
	$(PY) bench/finetune.py
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) .pytest_cache tests/screenshots
