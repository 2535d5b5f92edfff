# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic for Airflow configuration options: validation and derived secrets.

Private to the collection; no Ansible imports, so plain pytest reaches it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import re

OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

# Options Airstrip sets itself, and the setting that controls each one instead.
OWNED_OPTIONS = {
    "core.executor": "the collection (CeleryExecutor, always)",
    "core.fernet_key": "the generated secrets (airstrip.secrets_backend)",
    "core.dags_folder": "airflow_dags_folder",
    "core.execution_api_server_url": "the airflow_webserver inventory group",
    "database.sql_alchemy_conn": "airstrip_database_url or the airflow_metadata_db group",
    "celery.broker_url": "the airflow_broker inventory group",
    "celery.result_backend": "airstrip_database_url or the airflow_metadata_db group",
    "celery.worker_concurrency": "airflow_worker_concurrency",
    "api.port": "airflow_api_port",
    "api.secret_key": "the generated secrets (airstrip.secrets_backend)",
    "api_auth.jwt_secret": "the generated secrets (airstrip.secrets_backend)",
}


COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server", "celery-worker")
# Which components read each section, so that changing an option restarts only those.
# Sections not listed here (core, database, logging, secrets, ...) are read by all.
SECTION_COMPONENTS = {
    "scheduler": ("scheduler",),
    "dag_processor": ("dag-processor",),
    "triggerer": ("triggerer",),
    "api": ("api-server",),
    "api_auth": ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker"),
    "webserver": ("api-server",),
    "fab": ("api-server",),
    "celery": ("celery-worker", "scheduler"),
    "celery_broker_transport_options": ("celery-worker", "scheduler"),
    "operators": ("celery-worker",),
    "sensors": ("celery-worker", "triggerer"),
}


def components_reading(option_key):
    """The components that read a 'section.option' key."""
    return SECTION_COMPONENTS.get(option_key.split(".", 1)[0], COMPONENTS)


def config_for_component(options, component):
    """The subset of {"section.option": value} that a component reads (None: all of it)."""
    if component is None:
        return dict(options or {})
    return dict((k, v) for k, v in (options or {}).items() if component in components_reading(k))


def config_option_errors(options, field="airflow_config_options", owned=None):
    """Return one message per problem in a {"section.option": value} mapping.

    owned maps the options Airstrip sets itself to the setting that sets them instead
    (default: the role and inventory variables)."""
    owned = OWNED_OPTIONS if owned is None else owned
    if options is None:
        return []
    if not isinstance(options, dict):
        return ["%s must be a mapping of 'section.option': value, got %s" % (field, type(options).__name__)]
    errors = []
    for key in sorted(options, key=str):
        value = options[key]
        where = "%s[%r]" % (field, key)
        if not isinstance(key, str) or not OPTION_KEY.match(key):
            errors.append(
                "%s: key must be 'section.option' in lower case, such as 'core.parallelism'" % where)
            continue
        if key in owned:
            errors.append("%s: Airstrip sets this option itself; use %s instead" % (where, owned[key]))
            continue
        if isinstance(value, (dict, list, tuple, set)) or value is None:
            errors.append("%s: value must be a string, number or boolean, got %s"
                          % (where, "null" if value is None else type(value).__name__))
    return errors


def config_sections(options):
    """Group validated {"section.option": value} into {section: {option: "value"}}, sorted."""
    sections = {}
    for key in sorted(options or {}):
        section, option = key.split(".", 1)
        value = options[key]
        if isinstance(value, bool):
            value = "True" if value else "False"
        sections.setdefault(section, {})[option] = str(value)
    return sections


def fernet_key(seed):
    """A valid Fernet key (urlsafe base64 of 32 bytes) derived from a generated secret."""
    if not seed:
        raise ValueError("fernet_key needs a non-empty seed")
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode("utf-8")).digest()).decode("ascii")
