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
  groups:
    description:
      - The inventory's groups (C(groups)). Given, the spec's host counts (schedulers,
        webservers, max_workers) and the placement of the database and broker are checked
        against them too. Leave it out where the hosts do not exist yet (EC2 hosts of
        C(airstrip.target=aws) are made from the spec).
    type: dict
  worker_queues:
    description:
      - The queues of each worker host that sets C(airflow_worker_queues) (host -> list), checked
        with O(groups) against the spec's C(airstrip.worker_queues).
    type: dict
    default: {}
  operation:
    description:
      - The operation under way. An C(UPDATE) outside the spec's C(weekly_maintenance_window_start)
        (a window of two hours, UTC) is refused, because an update may restart components.
    type: str
    choices: [CREATE, UPDATE, DELETE]
  ignore_maintenance_window:
    description: Update now, outside the maintenance window.
    type: bool
    default: false
  variables:
    description:
      - The controller's values of the variables an inventory may set instead of the spec
        (C(airstrip_aws_region), C(airstrip_aws_endpoint_url)); they win over the spec.
    type: dict
    default: {}
extends_documentation_fragment:
  - airstrip.airflow.attributes
  - airstrip.airflow.attributes.info
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
settings:
  description:
    - The role variables the spec decides, from the collection's environment model, for
      every host of the environment (C(airflow_version), C(airflow_worker_concurrency),
      C(airflow_config_options), C(airflow_log_levels), C(airstrip_database_url), the DAG
      source of C(dag_sync), ...).
  returned: success
  type: dict
  sample:
    airflow_version: 3.3.2
    airflow_worker_concurrency: 10
    airflow_log_levels: {dag_processing: INFO, scheduler: WARNING, task: INFO, webserver: INFO, worker: INFO}
    airstrip_database_url: ""
errors:
  description: One message per problem, each naming the field.
  returned: failure
  type: list
  elements: str
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.airstrip.airflow.plugins.module_utils._model import host_errors, settings, window_errors
from ansible_collections.airstrip.airflow.plugins.module_utils._spec import SpecError, normalize


def main():
    module = AnsibleModule(argument_spec=dict(spec=dict(type="dict", required=True), groups=dict(type="dict"),
                                              variables=dict(type="dict", default={}),
                                              worker_queues=dict(type="dict", default={}),
                                              operation=dict(type="str", choices=["CREATE", "UPDATE", "DELETE"]),
                                              ignore_maintenance_window=dict(type="bool", default=False)),
                           supports_check_mode=True)
    try:
        environment = normalize(module.params["spec"])
    except SpecError as exc:
        module.fail_json(msg="The environment spec has %d problem(s): %s" % (len(exc.errors), "; ".join(exc.errors)),
                         errors=exc.errors)
    if module.params["groups"] is not None:
        errors = host_errors(module.params["groups"], environment["airstrip"]["database"]["type"] == "external",
                             environment, module.params["worker_queues"])
        if errors:
            module.fail_json(msg="The spec does not fit the inventory: %s" % "; ".join(errors), errors=errors)
    errors = window_errors(environment, module.params["operation"], datetime.datetime.utcnow(),
                           module.params["ignore_maintenance_window"])
    if errors:
        module.fail_json(msg="; ".join(errors), errors=errors)
    module.exit_json(changed=False, environment=environment, settings=settings(environment, module.params["variables"]))


if __name__ == "__main__":
    main()
