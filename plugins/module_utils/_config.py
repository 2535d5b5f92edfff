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
import math
import re

from ansible_collections.airstrip.airflow.plugins.module_utils import _airflow_options, _model

OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

OWNED_OPTIONS = _model.OWNED_OPTIONS
INTEGER = re.compile(r"^[+-]?[0-9]+$")
# Airflow's getboolean accepts these (in any case).
BOOLEANS = ("true", "false", "t", "f", "1", "0")


def value_error(key, value):
    """What is wrong with value for Airflow's typed option key (None when it fits or is untyped)."""
    kind = _airflow_options.TYPES.get(key)
    text = str(value).strip()
    if kind == "boolean":
        if isinstance(value, bool) or text.lower() in BOOLEANS:
            return None
        return "must be a boolean (true or false), got %r" % (value,)
    if kind == "integer":
        if isinstance(value, bool) or not INTEGER.match(text):
            return "must be a whole number, got %r" % (value,)
        if int(text) < 0 and key not in _airflow_options.NEGATIVE_ALLOWED:
            return "must be 0 or more, got %r" % (value,)
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            return "must be a number, got %r" % (value,)
        if isinstance(value, bool) or math.isnan(number) or number < 0:
            return "must be a number of 0 or more, got %r" % (value,)
    return None


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
            continue
        problem = value_error(key, value)
        if problem:
            errors.append("%s: %s (Airflow's type for it is %s)" % (where, problem, _airflow_options.TYPES[key]))
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
