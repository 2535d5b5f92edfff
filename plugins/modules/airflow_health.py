#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: airflow_health
short_description: Wait until an Airflow 3 environment reports every component healthy
version_added: 0.1.0
description:
  - Polls the api-server's C(/api/v2/monitor/health) endpoint until the metadatabase,
    scheduler, triggerer and DAG processor all report C(healthy), or the time runs out.
  - On timeout it fails and names the unhealthy components, as Airstrip component names
    (the systemd unit is C(airflow-<component>)), in RV(unhealthy).
author:
  - Airstrip developers (@airstrip)
options:
  url:
    description: Base URL of the api-server, such as C(http://10.0.0.5:8080).
    type: str
    required: true
  timeout:
    description: Seconds to wait for every component to be healthy.
    type: int
    default: 300
  interval:
    description: Seconds between polls.
    type: int
    default: 3
  components:
    description: Health-endpoint entries that must be healthy.
    type: list
    elements: str
    choices: [metadatabase, scheduler, triggerer, dag_processor]
    default: [metadatabase, scheduler, triggerer, dag_processor]
  validate_certs:
    description: Verify the api-server's TLS certificate.
    type: bool
    default: true
extends_documentation_fragment:
  - airstrip.airflow.attributes
  - airstrip.airflow.attributes.info
"""

EXAMPLES = r"""
- name: Wait for the environment
  airstrip.airflow.airflow_health:
    url: http://web.example.internal:8080
    timeout: 300
"""

RETURN = r"""
components:
  description: Status of each health entry at the last poll.
  returned: always
  type: dict
  sample: {metadatabase: healthy, scheduler: healthy, triggerer: healthy, dag_processor: unhealthy}
unhealthy:
  description: Airstrip components that were not healthy at the last poll.
  returned: always
  type: list
  elements: str
  sample: [dag-processor]
elapsed:
  description: Seconds waited.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.airstrip.airflow.plugins.module_utils._health import describe
from ansible_collections.airstrip.airflow.plugins.module_utils._health_client import check_health


def poll(module):
    params = module.params
    started = time.monotonic()
    statuses, unhealthy, last_error = {}, ["api-server"], None
    while True:
        try:
            statuses, unhealthy = check_health(params["url"], 10, params["validate_certs"], params["components"])
            last_error = None
        except Exception as exc:  # pylint: disable=broad-except
            # Not up yet (refused, 5xx, half-started): keep polling until the deadline.
            statuses, unhealthy, last_error = {}, ["api-server"], str(exc)
        elapsed = time.monotonic() - started
        if not unhealthy or elapsed >= params["timeout"]:
            return statuses, unhealthy, last_error, elapsed
        time.sleep(params["interval"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
            interval=dict(type="int", default=3),
            components=dict(type="list", elements="str",
                            choices=["metadatabase", "scheduler", "triggerer", "dag_processor"],
                            default=["metadatabase", "scheduler", "triggerer", "dag_processor"]),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    statuses, unhealthy, last_error, elapsed = poll(module)
    result = dict(changed=False, components=statuses, unhealthy=unhealthy, elapsed=round(elapsed, 1))
    if unhealthy:
        if last_error:
            msg = "The api-server at %s did not answer its health endpoint within %ss: %s" % (
                module.params["url"], module.params["timeout"], last_error)
        else:
            msg = "Airflow components not healthy after %ss: %s (%s)" % (
                module.params["timeout"], ", ".join(unhealthy), describe(statuses))
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
