from __future__ import annotations

import base64

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _airflow_options
from ansible_collections.airstrip.airflow.plugins.module_utils._config import (
    OWNED_OPTIONS,
    config_option_errors,
    config_sections,
    fernet_key,
)


def test_valid_options_have_no_errors():
    assert config_option_errors({"core.parallelism": 64, "webserver.expose_config": True,
                                 "celery.worker_autoscale": "16,12"}) == []
    assert config_option_errors({}) == []
    assert config_option_errors(None) == []


@pytest.mark.parametrize("key", ["parallelism", "Core.parallelism", "core.", ".x", "core.para llelism",
                                 "core.parallelism.extra", 3])
def test_malformed_keys_are_named(key):
    errors = config_option_errors({key: "1"})
    assert len(errors) == 1
    assert repr(key) in errors[0] and "section.option" in errors[0]


@pytest.mark.parametrize("key", sorted(OWNED_OPTIONS))
def test_owned_options_name_the_setting_to_use(key):
    (error,) = config_option_errors({key: "x"})
    assert "Airstrip sets this option itself" in error and OWNED_OPTIONS[key] in error


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_structured_values_are_refused(value):
    (error,) = config_option_errors({"core.parallelism": value})
    assert "core.parallelism" in error and "must be a string" in error


def test_not_a_mapping():
    (error,) = config_option_errors(["core.parallelism=3"], "opts")
    assert error.startswith("opts must be a mapping")


def test_one_message_per_problem():
    assert len(config_option_errors({"bad": 1, "core.executor": "x", "core.parallelism": None,
                                     "core.dag_concurrency": 3})) == 3


def test_sections_group_and_stringify():
    assert config_sections({"core.parallelism": 64, "core.load_examples": False, "api.workers": "2"}) == {
        "api": {"workers": "2"},
        "core": {"load_examples": "False", "parallelism": "64"},
    }


def test_fernet_key_is_valid_and_stable():
    key = fernet_key("seed")
    assert key == fernet_key("seed") != fernet_key("other")
    assert len(base64.urlsafe_b64decode(key)) == 32
    with pytest.raises(ValueError):
        fernet_key("")


@pytest.mark.parametrize("key, value, message", [
    ("core.parallelism", "-5", "must be 0 or more, got '-5'"),
    ("core.parallelism", "many", "must be a whole number, got 'many'"),
    ("core.parallelism", True, "must be a whole number, got True"),
    ("scheduler.parsing_cleanup_interval", 1.5, "must be a whole number, got 1.5"),
    ("api.enable_swagger_ui", "maybe", "must be a boolean (true or false), got 'maybe'"),
    ("core.dagbag_import_timeout", "-1.5", "must be a number of 0 or more, got '-1.5'"),
    ("core.dagbag_import_timeout", "soon", "must be a number, got 'soon'"),
])
def test_typed_options_are_checked_against_airflows_types(key, value, message):
    assert config_option_errors({key: value}) == ["airflow_config_options[%r]: %s (Airflow's type for it is %s)"
                                                  % (key, message, _airflow_options.TYPES[key])]


@pytest.mark.parametrize("key, value", [
    ("core.parallelism", "32"), ("core.parallelism", 0), ("scheduler.num_runs", "-1"),
    ("api.enable_swagger_ui", "False"), ("api.enable_swagger_ui", True), ("core.dagbag_import_timeout", "30.0"),
    ("celery.worker_prefetch_multiplier", "2"), ("core.default_timezone", "utc"),
])
def test_values_that_fit_and_untyped_options_pass(key, value):
    assert config_option_errors({key: value}) == []
