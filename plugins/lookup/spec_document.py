# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: spec_document
short_description: The environment spec, given inline or as a file
version_added: 0.1.0
description:
  - Returns the environment spec as a mapping, from O(spec) (a mapping, or its YAML or JSON text,
    such as an AWX survey's textarea gives) or from O(spec_file), which is read on the controller.
  - A relative O(spec_file) is looked for in the current directory (a shell user's working
    directory; the project checkout of an AWX job) and then beside the playbook that was run (a
    project's wrapper playbook). A file not found is named with every path tried.
  - Setting both, or neither, is an error that says what to set.
options:
  spec:
    description: The spec itself, a mapping or YAML/JSON text (C(airstrip_spec)).
    type: raw
  spec_file:
    description: Path of a YAML spec or an MWAA C(get-environment) JSON document (C(airstrip_spec_file)).
    type: str
"""

EXAMPLES = r"""
- name: The spec, whichever way the run gave it
  ansible.builtin.set_fact:
    spec: "{{ lookup('airstrip.airflow.spec_document', spec=airstrip_spec | default(none), spec_file=airstrip_spec_file | default(none)) }}"
"""

RETURN = r"""
_raw:
  description: The spec document, one mapping.
  type: list
  elements: dict
"""

import json
import os

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.six import string_types
from ansible.plugins.lookup import LookupBase

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core needs PyYAML
    yaml = None

HOW = ("give the environment spec with -e airstrip_spec_file=path/to/environment.yml, or inline as "
       "airstrip_spec (a mapping, or its YAML/JSON text, as an AWX survey gives)")


def candidates(path, cwd, playbook_dir=None):
    """The paths a spec file is looked for at, in order."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return [path]
    tried = [os.path.join(cwd, path)]
    if playbook_dir and os.path.join(playbook_dir, path) not in tried:
        tried.append(os.path.join(playbook_dir, path))
    return [os.path.normpath(p) for p in tried]


def parse(text, origin):
    """The mapping a spec's text holds (YAML, of which JSON is a part)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise ValueError("%s is not valid YAML or JSON%s (%s): fix it" % (origin, where, getattr(exc, "problem", None) or exc))
    if not isinstance(doc, dict):
        raise ValueError("%s must be a mapping (the spec's fields: name, airflow_version, ...), not %s"
                         % (origin, "empty" if doc is None else type(doc).__name__))
    return doc


def spec_document(spec=None, spec_file=None, cwd=None, playbook_dir=None):
    """The spec from the inline value or the file; ValueError with the fix otherwise."""
    inline = spec not in (None, "")
    named = spec_file not in (None, "")
    if inline and named:
        raise ValueError("both airstrip_spec and airstrip_spec_file are set: set only one of them")
    if inline:
        if isinstance(spec, dict):
            # Plain types (extra vars may come as Ansible's tagged ones).
            return json.loads(json.dumps(spec))
        if isinstance(spec, string_types):
            return parse(to_text(spec), "airstrip_spec")
        raise ValueError("airstrip_spec must be a mapping or its YAML/JSON text, not %s" % type(spec).__name__)
    if not named:
        raise ValueError("no environment spec was given: " + HOW)
    tried = candidates(to_text(spec_file), cwd or os.getcwd(), playbook_dir)
    for path in tried:
        if os.path.isfile(path):
            try:
                with open(path, "rb") as handle:
                    text = to_text(handle.read())
            except (IOError, OSError) as exc:
                raise ValueError("airstrip_spec_file %s cannot be read (%s): check its owner and mode" % (path, exc.strerror or exc))
            return parse(text, "airstrip_spec_file " + path)
    raise ValueError("airstrip_spec_file %s was not found (looked at %s): give a path that exists; a relative one is "
                     "taken from the working directory (an AWX job's project checkout) or the playbook's folder"
                     % (spec_file, ", ".join(tried)))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        try:
            doc = spec_document(self.get_option("spec"), self.get_option("spec_file"), os.getcwd(),
                                variables.get("playbook_dir"))
        except ValueError as exc:
            raise AnsibleLookupError(to_text(exc))
        return [doc]
