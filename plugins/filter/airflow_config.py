# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Documentation for each filter is in its own <name>.yml beside this file.
from ansible.errors import AnsibleFilterError

from ansible_collections.airstrip.airflow.plugins.module_utils import _model
from ansible_collections.airstrip.airflow.plugins.module_utils._config import (
    config_option_errors,
    config_sections,
    fernet_key,
)
from ansible_collections.airstrip.airflow.plugins.module_utils._status import unit_states


def _errors_to_filter_errors(func):
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (KeyError, ValueError) as exc:
            raise AnsibleFilterError("%s: %s" % (func.__name__, exc.args[0] if exc.args else exc))
    wrapper.__name__ = func.__name__
    return wrapper


def model(name):
    """A table of the environment model (_model.lookup)."""
    return _model.lookup(name)


def component_options(options, component, worker_concurrency=None, log_levels=None):
    return _model.component_options(options, component, worker_concurrency, log_levels)


def recovered_secrets(airflow_cfg, passwords_json, admin_username, external_database=False):
    return _model.recovered_secrets(airflow_cfg, passwords_json, admin_username, external_database)


def inventory_errors(groups, external_database=False):
    return _model.host_errors(groups, external_database)


class FilterModule(object):
    def filters(self):
        return {
            "component_options": _errors_to_filter_errors(component_options),
            "config_option_errors": config_option_errors,
            "config_sections": config_sections,
            "database_url": _model.database_url,
            "fernet_key": _errors_to_filter_errors(fernet_key),
            "host_config": _errors_to_filter_errors(_model.host_config),
            "inventory_errors": inventory_errors,
            "model": _errors_to_filter_errors(model),
            "recovered_secrets": recovered_secrets,
            "setting_clashes": _model.setting_clashes,
            "unit_journal": _model.unit_journal,
            "unit_states": unit_states,
        }
