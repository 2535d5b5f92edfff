#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: environment_info
short_description: Report an Airstrip environment's status in MWAA's terms
version_added: 0.1.0
description:
  - Derives the status MWAA would report (CREATING, CREATE_FAILED, AVAILABLE, UPDATING, UPDATE_FAILED,
    UNAVAILABLE, DELETING, DELETED) from the record of the last lifecycle operation kept on the
    environment's hosts and from a real health check of every component.
  - The api-server's health endpoint is asked for the metadatabase, scheduler, triggerer and DAG
    processor; the Celery workers are counted from their services' states. Use the
    C(airstrip.airflow.info) playbook, which gathers the records and service states from the hosts.
  - ROLLING_BACK is never reported, as Airstrip does not roll back a failed update on its own.
  - An environment that never existed (no host holds its record and no Airflow unit is installed) is
    NOT_FOUND, where MWAA answers that the environment is not found; the module then fails unless
    O(missing_ok) is set. An environment removed by the C(airstrip.airflow.delete) playbook keeps its
    record of the deletion and is DELETED.
author:
  - Airstrip developers (@airstrip)
options:
  name:
    description: The environment's name, for the message when it is not found.
    type: str
  missing_ok:
    description:
      - Return the status NOT_FOUND instead of failing when the environment is not found.
    type: bool
    default: false
  api_url:
    description: Base URL of the api-server, such as C(http://10.0.0.5:8080). Omit when nothing is deployed.
    type: str
  records:
    description: The operation records read from the hosts (the C(operation.json) of each).
    type: list
    elements: dict
    default: []
  other_environments:
    description:
      - Names of the environments whose records the hosts hold. With no record of O(name), and records of
        others, the environment is NOT_FOUND (the services running are theirs).
    type: list
    elements: str
    default: []
  services:
    description: "State of each Airflow unit on each host, as C({host: {component: state}}), state being active, inactive, failed or missing."
    type: dict
    default: {}
  dag_sync:
    description:
      - "The DAG sync agent's status on each host that runs one, as C({host: status}) (the agent's
        C(/run/airstrip-dag-sync/status.json))."
      - Reported as is under RV(environment.dag_sync); an agent that cannot list its bucket does not make
        the environment unavailable, as Airflow keeps running the DAGs it has.
    type: dict
    default: {}
  metrics:
    description:
      - "The metrics bridge's status on each host that runs one, as C({host: status}) (its
        C(/run/airstrip-metrics/status.json))."
    type: dict
    default: {}
  scaling:
    description:
      - "The worker scaler's status on each scheduler host that runs one, as C({host: status}) (its
        C(/run/airstrip-scaler/status.json)); the leading one's is reported."
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for the health endpoint's answer.
    type: int
    default: 10
  validate_certs:
    description: Verify the api-server's TLS certificate.
    type: bool
    default: true
extends_documentation_fragment:
  - airstrip.airflow.attributes
  - airstrip.airflow.attributes.info
"""

EXAMPLES = r"""
- name: Status of the environment
  airstrip.airflow.environment_info:
    api_url: http://10.0.0.5:8080
    records: "{{ records }}"
    services: {control: {scheduler: active}, worker1: {celery-worker: active}}
  register: info

- name: Status of an environment that may not exist yet
  airstrip.airflow.environment_info:
    name: prod
    records: "{{ records }}"
    services: "{{ services }}"
    missing_ok: true
  register: info
"""

RETURN = r"""
environment:
  description: The environment's status and what it runs.
  returned: always
  type: dict
  contains:
    status:
      description: MWAA's status, or NOT_FOUND for an environment that never existed (only with O(missing_ok)).
      type: str
      sample: AVAILABLE
    last_update:
      description: The last lifecycle operation, its status, error and times.
      type: dict
      sample: {operation: UPDATE, status: SUCCESS, error: "", started_at: "2026-11-23T10:00:00Z"}
    webserver_url:
      description: URL of the UI and REST API.
      type: str
    airflow_version:
      description: The Airflow version running (or last deployed).
      type: str
    workers:
      description: Number of Celery workers running.
      type: int
    health:
      description: Health endpoint entries and their status.
      type: dict
    dag_sync:
      description: Per host running the DAG sync agent, whether its last sync worked, its error, and when it last worked.
      type: dict
      sample: {worker1: {healthy: false, error: "cannot list s3://b/dags/ (AccessDenied: Access Denied)", last_success: 1795000000.0, files: 12}}
    logging:
      description:
        - Where the logs go, as MWAA's LoggingConfiguration, from the last operation's record; the CloudWatch log
          group of each log type that has one (none while C(airstrip.cloudwatch) is off).
      type: dict
      sample: {log_groups: {task: airflow-prod-Task, scheduler: airflow-prod-Scheduler}}
    metrics:
      description:
        - Where the metrics go, the namespace (empty, none to CloudWatch), and per host running the metrics
          bridge whether its last delivery worked, its Prometheus address, how many values it has sent.
      type: dict
      sample: {namespace: Airstrip/prod, hosts: {control: {healthy: true, prometheus: "0.0.0.0:9102", datums_sent: 420}}}
    scaling:
      description:
        - With worker scaling on, the leading scaler's view, its host, the workers running and desired, the tasks
          queued and running (in all and per queue, with the workers each queue needs), how it sees each worker host,
          the queues with tasks that no worker host serves, and the reason of its last decision; empty when scaling
          is off.
      type: dict
      sample: {host: control, num_workers: 1, desired_workers: 2, queued: 3, running: 3,
               queues: {default: {queued: 3, running: 3, needed: 2, desired: 2}},
               workers: {worker1: busy, worker2: pending}, unserved_queues: {}, reason: "start worker2"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.airstrip.airflow.plugins.module_utils._health_client import check_health
from ansible_collections.airstrip.airflow.plugins.module_utils._status import (
    NOT_FOUND, derive_status, last_operation, not_found_message)


def health_of(module):
    url = module.params["api_url"]
    if not url:
        return {}, ["api-server"]
    try:
        return check_health(url, module.params["timeout"], module.params["validate_certs"])
    except Exception:  # pylint: disable=broad-except
        # No answer is an answer: the api-server is down.
        return {}, ["api-server"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            missing_ok=dict(type="bool", default=False),
            api_url=dict(type="str"),
            records=dict(type="list", elements="dict", default=[]),
            other_environments=dict(type="list", elements="str", default=[]),
            services=dict(type="dict", default={}),
            dag_sync=dict(type="dict", default={}),
            metrics=dict(type="dict", default={}),
            scaling=dict(type="dict", default={}),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    services = module.params["services"]
    states = [s for units in services.values() if isinstance(units, dict) for s in units.values()]
    installed = any(s not in ("unknown", "missing") for s in states)
    workers = sum(1 for units in services.values() if isinstance(units, dict)
                  and units.get("celery-worker") == "active")
    health, unhealthy = health_of(module) if installed else ({}, ["api-server"])
    healthy = installed and not unhealthy and workers > 0
    op = last_operation(module.params["records"])
    # The hosts run another environment: its services do not make this one exist.
    others = sorted(set(module.params["other_environments"]) - set([module.params["name"]]))
    status = NOT_FOUND if op is None and others else derive_status(module.params["records"], installed, healthy)
    environment = dict(
        status=status,
        last_update=op or {},
        webserver_url=module.params["api_url"] if installed else None,
        airflow_version=(op or {}).get("airflow_version") or None,
        workers=workers,
        health=health,
        unhealthy=unhealthy if installed else [],
        dag_sync=dict((h, dict((k, st.get(k)) for k in ("healthy", "error", "last_success", "files", "bucket", "prefix")))
                      for h, st in module.params["dag_sync"].items() if isinstance(st, dict)),
        logging=dict(log_groups=(op or {}).get("log_groups") or {}),
        metrics=dict(namespace=(op or {}).get("metrics_namespace") or "",
                     hosts=dict((h, dict((k, st.get(k)) for k in ("healthy", "last_error", "last_flush", "datums_sent",
                                                                  "prometheus", "namespace")))
                                for h, st in module.params["metrics"].items() if isinstance(st, dict))),
    )
    leaders = [(h, st) for h, st in sorted(module.params["scaling"].items()) if isinstance(st, dict) and st.get("leader")]
    if leaders:
        host, st = leaders[0]
        environment["scaling"] = dict([("host", host)] + [(k, st.get(k)) for k in (
            "num_workers", "desired_workers", "queued", "running", "queues", "workers", "unserved_queues", "reason",
            "healthy", "error")])
    else:
        environment["scaling"] = {}
    if environment["status"] == NOT_FOUND and not module.params["missing_ok"]:
        module.fail_json(msg=not_found_message(module.params["name"], services, others), environment=environment)
    module.exit_json(changed=False, environment=environment)


if __name__ == "__main__":
    main()
