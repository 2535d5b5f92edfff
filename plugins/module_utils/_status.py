# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An environment's status in MWAA's terms, from its operation records and health. Pure."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

STATUSES = ("CREATING", "CREATE_FAILED", "AVAILABLE", "UPDATING", "UPDATE_FAILED", "ROLLING_BACK",
            "UNAVAILABLE", "DELETING", "DELETED")
# What MWAA answers with ResourceNotFoundException: no record on any host and nothing installed.
# An environment removed by the delete playbook keeps its DELETE record, so it is DELETED instead.
NOT_FOUND = "NOT_FOUND"
_RANK = {"FAILED": 2, "IN_PROGRESS": 1, "SUCCESS": 0}


def last_operation(records):
    """The newest operation across the hosts' records; a host that failed it wins."""
    records = [r for r in records or [] if isinstance(r, dict) and r.get("operation")]
    if not records:
        return None
    newest = max(r.get("started_at") or "" for r in records)
    same = [r for r in records if (r.get("started_at") or "") == newest]
    return max(same, key=lambda r: _RANK.get(r.get("status"), 0))


def derive_status(records, installed, healthy):
    """MWAA status from the last operation (or none), whether anything of Airflow is installed,
    and whether every component is healthy."""
    op = last_operation(records)
    running = "AVAILABLE" if healthy else "UNAVAILABLE"
    if op is None:
        return running if installed else NOT_FOUND
    kind, status = op.get("operation"), op.get("status")
    if kind == "DELETE":
        if status == "SUCCESS":
            return "DELETED"
        return "DELETING" if status == "IN_PROGRESS" else "UNAVAILABLE"
    if status == "IN_PROGRESS":
        return "CREATING" if kind == "CREATE" else "UPDATING"
    if status == "FAILED":
        return "CREATE_FAILED" if kind == "CREATE" else "UPDATE_FAILED"
    return running if installed else "DELETED"


def not_found_message(name, hosts, others=()):
    """Why an environment with status NOT_FOUND is reported as missing, naming the hosts read
    and the environments they hold instead (others)."""
    asked = ", ".join(sorted(hosts)) if hosts else "none"
    held = ("the hosts hold the record of environment(s) %s instead" % ", ".join(sorted(others)) if others
            else "no host of the inventory holds its record or its services")
    return ("environment {0}not found: {1} (hosts read: {2}); check the environment's name and the inventory, "
            "or set missing_ok to accept a missing environment".format(name + " " if name else "", held, asked))


def unit_states(show_output, components):
    """{component: state} from `systemctl show --property=LoadState --property=ActiveState --value`
    run on the units airflow-<component>, in the order given. A unit that is not installed is
    "missing"."""
    blocks = [b.split() for b in (show_output or "").strip().split("\n\n")]
    states = {}
    for component, block in zip(components, blocks):
        load, active = (block + ["", ""])[:2]
        states[component] = "missing" if load in ("not-found", "") else active
    return states
