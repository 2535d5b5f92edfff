from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.airstrip.airflow.plugins.filter.airflow_config import FilterModule


def test_filters_are_exposed():
    filters = FilterModule().filters()
    assert set(filters) == {"config_for_component", "config_option_errors", "config_sections", "fernet_key",
                            "unit_states"}
    assert filters["config_option_errors"]({"x": 1}, "airflow_config_options")[0].startswith(
        "airflow_config_options['x']")


def test_fernet_key_errors_are_filter_errors():
    with pytest.raises(AnsibleFilterError):
        FilterModule().filters()["fernet_key"]("")
