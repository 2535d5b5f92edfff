# The two commands a new machine needs (see README):
#   make up     a complete local Airflow environment on local test hosts, with emulated AWS
#   make test   every test: ansible-lint, ansible-test sanity, unit and integration tests, molecule scenarios
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt | sha256sum | cut -c1-12)
COLLECTION_LINK := .collections/ansible_collections/airstrip/airflow
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# molecule writes its own ansible.cfg; the variable reaches every ansible run.
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PATH := $(CURDIR)/$(BIN):$(PATH)
LOCAL_ENV ?= local
# The vault password that encrypts the controller's secrets files (README, "Secrets"):
# yours if set, else one made once for this machine.
export ANSIBLE_VAULT_PASSWORD_FILE ?= $(HOME)/.airstrip/vault-password

.PHONY: help venv up down info test lint sanity unit integration molecule build docs bench-deploy bench-sync bench-logs bench-scale

help:
	@echo "make up      bring up the local Airflow environment (hosts, emulated AWS, Airflow)"
	@echo "make down    tear the local environment down"
	@echo "make info    the local environment's status, as MWAA's GetEnvironment"
	@echo "make test    run every test (lint, sanity, unit, molecule)"

$(STAMP): requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

$(ANSIBLE_VAULT_PASSWORD_FILE):
	umask 077 && mkdir -p $(dir $@) && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@

venv: $(STAMP) $(COLLECTION_LINK) $(ANSIBLE_VAULT_PASSWORD_FILE)

up: venv
	$(BIN)/python tests/harness/local_env.py up $(LOCAL_ENV)

down: venv
	$(BIN)/python tests/harness/local_env.py down $(LOCAL_ENV)

info: venv
	$(BIN)/ansible-playbook -i local/$(LOCAL_ENV)/inventory.json playbooks/info.yml -e airstrip_env_name=$(LOCAL_ENV)

test: lint sanity unit integration molecule

lint: venv
	$(BIN)/ansible-lint --profile production

sanity: venv
	bash tests/harness/sanity.sh

unit: venv
	$(BIN)/python -m pytest -q tests/unit; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# Against the emulated AWS (moto_server on loopback), no test hosts.
integration: venv
	$(BIN)/python -m pytest -q tests/integration; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

molecule: venv
	$(BIN)/molecule test --all

build: venv
	$(BIN)/ansible-galaxy collection build --force

# docs/variables.md, docs/spec.md, docs/mwaa.md's tables and CHANGELOG.md, rendered from the code and changelogs/.
docs: venv
	$(BIN)/python docs/render.py

bench-deploy: venv
	$(BIN)/python bench/deploy.py

bench-sync: venv
	$(BIN)/python bench/s3_sync.py

bench-logs: venv
	$(BIN)/python bench/cloudwatch_logs.py

bench-scale: venv
	$(BIN)/python bench/scale.py
