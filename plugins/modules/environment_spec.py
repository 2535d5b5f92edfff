#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: environment_spec
short_description: Validate and normalise an Airstrip environment spec
version_added: 0.1.0
description:
  - Checks an environment description with the meaning of MWAA's CreateEnvironment and returns
    it normalised, with the environment class's defaults applied, for every role to read.
  - Accepts Airstrip's snake_case YAML and, unchanged, MWAA's CamelCase documents, a
    CreateEnvironment or UpdateEnvironment request body, or the output of
    C(aws mwaa get-environment); fields of the latter that describe MWAA's own state (Arn,
    Status, CreatedAt, ServiceRoleArn, ...) are accepted and ignored.
  - Every problem is reported at once, one message per field, naming the field by its path in
    the document and what would be valid. Nothing is changed anywhere.
author:
  - Airstrip developers (@airstrip)
options:
  spec:
    description: The environment spec.
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Only reads its input; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is no diff.
"""

EXAMPLES = r"""
- name: Read and check the environment spec
  airstrip.airflow.environment_spec:
    spec: "{{ lookup('ansible.builtin.file', 'environment.yml') | from_yaml }}"
  register: env

- name: Bring an MWAA environment over unchanged
  airstrip.airflow.environment_spec:
    spec: "{{ lookup('ansible.builtin.file', 'mwaa-get-environment.json') | from_json }}"
  register: env
"""

RETURN = r"""
environment:
  description: The normalised environment (snake_case, class defaults applied).
  returned: success
  type: dict
  sample:
    name: prod
    airflow_version: 3.3.2
    environment_class: mw1.medium
    min_workers: 1
    max_workers: 10
    worker_concurrency: 10
    parsing_processes: 3
errors:
  description: One message per problem, each naming the field.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.airstrip.airflow.plugins.module_utils._spec import SpecError, normalize


def main():
    module = AnsibleModule(argument_spec=dict(spec=dict(type="dict", required=True)), supports_check_mode=True)
    try:
        environment = normalize(module.params["spec"])
    except SpecError as exc:
        module.fail_json(msg="The environment spec has %d problem(s): %s" % (len(exc.errors), "; ".join(exc.errors)),
                         errors=exc.errors)
    module.exit_json(changed=False, environment=environment)


if __name__ == "__main__":
    main()
