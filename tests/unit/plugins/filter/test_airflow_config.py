from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.airstrip.airflow.plugins.filter.airflow_config import FilterModule


def test_filters_are_exposed():
    filters = FilterModule().filters()
    assert set(filters) == {"component_options", "config_option_errors", "config_sections", "database_url",
                            "fernet_key", "host_config", "inventory_errors", "model", "recovered_secrets", "setting_clashes", "unit_journal",
                            "unit_states"}
    assert filters["config_option_errors"]({"x": 1}, "airflow_config_options")[0].startswith(
        "airflow_config_options['x']")


def test_fernet_key_errors_are_filter_errors():
    with pytest.raises(AnsibleFilterError):
        FilterModule().filters()["fernet_key"]("")


def test_model_errors_are_filter_errors():
    filters = FilterModule().filters()
    assert filters["model"]("component_groups")["celery-worker"] == "airflow_worker"
    with pytest.raises(AnsibleFilterError, match="the model has no table 'nope'"):
        filters["model"]("nope")
    with pytest.raises(AnsibleFilterError, match="unknown component 'web'"):
        filters["component_options"]({}, "web")
