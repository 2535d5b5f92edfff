# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Documentation for each filter is in its own <name>.yml beside this file.
from ansible.errors import AnsibleFilterError

from ansible_collections.airstrip.airflow.plugins.module_utils._config import (
    config_for_component,
    config_option_errors,
    config_sections,
    fernet_key,
)
from ansible_collections.airstrip.airflow.plugins.module_utils._status import unit_states


def _fernet_key(seed):
    try:
        return fernet_key(seed)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {
            "config_for_component": config_for_component,
            "config_option_errors": config_option_errors,
            "config_sections": config_sections,
            "fernet_key": _fernet_key,
            "unit_states": unit_states,
        }
