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

from ansible_collections.airstrip.airflow.plugins.module_utils import _model

OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

OWNED_OPTIONS = _model.OWNED_OPTIONS


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
