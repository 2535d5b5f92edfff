# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Asking an api-server for its health: one HTTP call, read by _health.evaluate."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.module_utils.urls import open_url

from ansible_collections.airstrip.airflow.plugins.module_utils._health import evaluate

HEALTH_PATH = "/api/v2/monitor/health"


def check_health(base_url, timeout, validate_certs, components=None):
    """(statuses, unhealthy) from the api-server at base_url; raises on no answer."""
    resp = open_url(base_url.rstrip("/") + HEALTH_PATH, timeout=timeout, validate_certs=validate_certs)
    answer = json.loads(resp.read())
    return evaluate(answer) if components is None else evaluate(answer, components)
