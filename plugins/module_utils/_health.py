# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading Airflow 3's /api/v2/monitor/health answer. Pure; no Ansible imports."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.airstrip.airflow.plugins.module_utils import _model

# Health-endpoint key -> Airstrip component (systemd unit airflow-<component>).
COMPONENTS = dict((c["health"], name) for name, c in _model.COMPONENTS.items() if c["health"])


def evaluate(health, required=tuple(COMPONENTS)):
    """Return (statuses, unhealthy) for a parsed health answer.

    statuses maps each health key to its status ("healthy", "unhealthy", or "missing");
    unhealthy lists the Airstrip components to look at, without repeats, in a stable order.
    """
    statuses = {}
    unhealthy = []
    for key in required:
        entry = health.get(key) if isinstance(health, dict) else None
        status = entry.get("status") if isinstance(entry, dict) else None
        statuses[key] = status or "missing"
        if status != "healthy" and COMPONENTS.get(key, key) not in unhealthy:
            unhealthy.append(COMPONENTS.get(key, key))
    return statuses, unhealthy


def describe(statuses):
    return ", ".join("%s %s" % (k, v) for k, v in sorted(statuses.items()))
