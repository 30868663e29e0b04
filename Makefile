# The README's two commands: `make demo` runs the whole system, `make test` runs the tests.
# Both create .venv and install the pinned requirements themselves.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Demo credentials (printed by `make demo`); override from the environment.
export DEMO_ADMIN_USERNAME ?= admin
export DEMO_ADMIN_PASSWORD ?= emailsys-demo
export FLOWER_BASIC_AUTH ?= admin:emailsys-demo
export PYTHONUNBUFFERED := 1
PYTEST_WORKERS ?= 2

.PHONY: demo test install install-demo install-dev lint format clean bench browser email-corpus imap-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever a requirements file changes. Three nested sets: runtime (requirements.txt, the production
# image's), demo (+ honcho, aiosmtpd, moto's server) and dev (+ test and lint tools); a bigger set marks the smaller.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-demo: requirements.txt requirements-demo.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-demo.txt
	touch $@ $(VENV)/.installed

$(VENV)/.installed-dev: requirements.txt requirements-demo.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-demo $(VENV)/.installed

install: $(VENV)/.installed
install-demo: $(VENV)/.installed-demo
install-dev: $(VENV)/.installed-dev

# make demo publishes events through moto's SQS server (Procfile: moto, sqs-bridge); make test configures its own.
MOTO_PORT ?= 5000
demo: export MOTO_PORT := $(MOTO_PORT)
demo: export SQS_ENDPOINT_URL ?= http://127.0.0.1:$(MOTO_PORT)
demo: export SQS_QUEUE_NAME ?= emailsys-events.fifo
demo: export AWS_ACCESS_KEY_ID ?= demo
demo: export AWS_SECRET_ACCESS_KEY ?= demo
# The archiver (Procfile: archiver) files every inbound message under var/archive, through moto's SQS.
demo: export ARCHIVE_ENABLED ?= true
demo: export POLL_INTERVAL_SECONDS ?= 5

demo: install-demo
	$(BIN)/python manage.py demo_setup
	exec $(BIN)/honcho start -f Procfile

# The browser tests (Content-Security-Policy) drive Debian's Chromium through Playwright; Playwright's own browser
# download cannot be used. Installed here when missing, so CI and fresh machines have it (needs root, as in CI).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The inbound tests send Python's own email test corpus (Lib/test/test_email/data/msg_*.txt) through the simulator;
# Debian ships it as libpython3.11-testsuite. Installed here when missing (needs root, as in CI).
EMAIL_CORPUS := /usr/lib/python3.11/test/test_email/data
email-corpus:
	test -d $(EMAIL_CORPUS) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11-testsuite)

# The IMAP tests run a private Dovecot on loopback (emailsys/testing_imap.py); Debian's dovecot-imapd brings dovecot
# and doveadm. Installed here when missing (needs root, as in CI); its system service is never started.
imap-server:
	command -v dovecot >/dev/null && command -v doveadm >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd)

test: install-dev lint browser email-corpus imap-server
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache

bench: install-dev
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done
