"""The CloudWatch agent's configuration: valid for the agent's own schema (the vendored copy
of v1.300071.0's translator/config/schema.json) across component sets, log types, modes and
endpoints, and Airstrip's own rules on top of it."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _cwagent, _model

ROOT = Path(__file__).resolve().parents[4]
VENDOR = ROOT.parent / "shared" / "vendor" / "amazon-cloudwatch-agent"
SCHEMA = VENDOR / "schema.json"
SAMPLES = VENDOR / "samples"


@pytest.fixture(scope="module")
def validator():
    if not SCHEMA.is_file():
        message = (f"the agent's schema is not at {SCHEMA} (the vendored copy beside the project, "
                   "../shared/vendor/amazon-cloudwatch-agent/): the configuration is not checked against it")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def errors(validator, config):
    return ["/".join(map(str, e.absolute_path)) + ": " + e.message for e in validator.iter_errors(config)]


def samples(prefix):
    return sorted(SAMPLES.glob(prefix + "*.json")) if SAMPLES.is_dir() else []


def test_the_samples_are_there():
    if not SAMPLES.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no samples at {SAMPLES}")
        pytest.skip(f"no samples at {SAMPLES}")
    assert samples("valid") and samples("invalid")


@pytest.mark.parametrize("path", samples("valid"), ids=lambda p: p.name)
def test_valid_samples_pass(validator, path):
    assert errors(validator, json.loads(path.read_text())) == []


@pytest.mark.parametrize("path", samples("invalid"), ids=lambda p: p.name)
def test_invalid_samples_fail(validator, path):
    assert errors(validator, json.loads(path.read_text())), f"{path.name} passed"


def test_the_validator_catches_what_airstrip_must_not_write(validator):
    """The checks below would pass vacuously if the schema accepted anything."""
    config = _cwagent.agent_config("prod", ["scheduler"], {}, "eu-west-1")
    entry = config["logs"]["logs_collected"]["journald"]["collect_list"][0]
    for bad in ({"units": []}, {"units": "airflow-scheduler.service"}, {"retention_in_days": 10},
                {"log_group_name": ""}, {"typo": 1}):
        broken = json.loads(json.dumps(config))
        broken["logs"]["logs_collected"]["journald"]["collect_list"][0] = dict(entry, **bad)
        assert errors(validator, broken), bad
    broken = json.loads(json.dumps(config))
    broken["metrics"]["endpoint_override"] = "x"
    assert errors(validator, broken)


ALL = list(_model.COMPONENT_NAMES)
COMPONENT_SETS = [[]] + [[c] for c in ALL] + [
    ["scheduler", "dag-processor", "triggerer"],
    ["scheduler", "dag-processor", "triggerer", "api-server"],
    ALL,
]
ENABLED = [
    {},
    {t: True for t in _model.LOG_TYPES},
    {"webserver": False},
    {"dag_processing": False, "scheduler": False},
    {t: False for t in _model.LOG_TYPES},
]
MODES = list(_cwagent.MODES)
ENDPOINTS = ["", "http://172.29.40.1:5000"]
MATRIX = list(itertools.product(range(len(COMPONENT_SETS)), range(len(ENABLED)), MODES, ENDPOINTS))


def render(components, enabled, mode, endpoint, env="mol-env_1"):
    return _cwagent.agent_config(env, components, enabled, "us-east-1", endpoint_url=endpoint, mode=mode,
                                 host="control")


@pytest.mark.parametrize("ci,ei,mode,endpoint", MATRIX)
def test_configuration_matrix(validator, ci, ei, mode, endpoint):
    components, enabled = COMPONENT_SETS[ci], ENABLED[ei]
    env = "mol-env_1"
    config = render(components, enabled, mode, endpoint, env)
    assert errors(validator, config) == []
    text = json.dumps(config)
    # No statsd (the metrics bridge owns 8125), no retention (the controller sets it).
    assert "statsd" not in text and "retention_in_days" not in text
    assert config["agent"] == {"region": "us-east-1", "metrics_collection_interval": 60}
    expected = [c for c in ALL if c in components and enabled.get(_model.component_log_type(c), True)
                and _model.component_log_type(c) is not None]
    entries = config.get("logs", {}).get("logs_collected", {}).get("journald", {}).get("collect_list", [])
    assert [e["units"] for e in entries] == [[f"airflow-{c}.service"] for c in expected]
    for component, entry in zip(expected, entries):
        assert re.fullmatch(re.escape(f"airflow-{env}-") + r"[A-Za-z]+", entry["log_group_name"])
        assert entry["log_group_name"] == _model.log_group_name(env, _model.component_log_type(component))
        assert entry["log_stream_name"] == f"{component}_{{hostname}}"
    if expected:
        assert config["logs"]["force_flush_interval"] == 5
        assert config["logs"].get("endpoint_override", "") == endpoint
    else:
        assert "logs" not in config
    metrics = config["metrics"]
    assert metrics["namespace"] == f"Airstrip/{env}"
    assert metrics.get("endpoint_override", "") == endpoint
    assert metrics["append_dimensions"]["Environment"] == env
    if mode == "ec2":
        assert metrics["append_dimensions"]["InstanceId"] == "${aws:InstanceId}"
    else:
        assert metrics["append_dimensions"]["Host"] == "control"
    assert {"cpu", "mem", "disk"} <= set(metrics["metrics_collected"])
    procstat = metrics["metrics_collected"].get("procstat", [])
    assert [p["pattern"] for p in procstat] == [f"airflow {_model.COMPONENTS[c]['command']}"
                                                for c in ALL if c in components]


def test_every_log_group_is_one_the_iam_policy_allows():
    config = _cwagent.agent_config("prod", ALL, {}, "eu-west-1")
    groups = {e["log_group_name"] for e in config["logs"]["logs_collected"]["journald"]["collect_list"]}
    assert groups == {"airflow-prod-DAGProcessing", "airflow-prod-Scheduler", "airflow-prod-WebServer",
                      "airflow-prod-Worker"}
    # The task log group is Airflow's remote logging's, never the agent's.
    assert "airflow-prod-Task" not in groups


def test_scheduler_and_triggerer_share_the_scheduler_group():
    config = _cwagent.agent_config("prod", ["triggerer", "scheduler"], {}, "eu-west-1")
    entries = config["logs"]["logs_collected"]["journald"]["collect_list"]
    assert [(e["units"], e["log_group_name"]) for e in entries] == [
        (["airflow-scheduler.service"], "airflow-prod-Scheduler"),
        (["airflow-triggerer.service"], "airflow-prod-Scheduler")]


def test_the_procstat_pattern_matches_the_units_command_line():
    for component, conf in _model.COMPONENTS.items():
        cmdline = f"/opt/airflow/current/bin/python /opt/airflow/current/bin/airflow {conf['command']}"
        assert re.search(_cwagent.procstat_pattern(component), cmdline), component
        others = [c for c in _model.COMPONENTS if c != component]
        for other in others:
            other_line = f"/opt/airflow/current/bin/airflow {_model.COMPONENTS[other]['command']}"
            assert not re.search(_cwagent.procstat_pattern(component), other_line), (component, other)


def test_options_reach_the_configuration():
    config = _cwagent.agent_config("prod", ["api-server"], {}, "eu-west-1", force_flush_interval=10,
                                   metrics_interval=30, namespace="Mine", mode="onPremise")
    assert config["logs"]["force_flush_interval"] == 10
    assert config["agent"]["metrics_collection_interval"] == 30
    assert config["metrics"]["namespace"] == "Mine"
    # Without a host name, no Host dimension (rather than an empty one, which the schema refuses).
    assert config["metrics"]["append_dimensions"] == {"Environment": "prod"}


@pytest.mark.parametrize("args,message", [
    ((["scheduler"], {}, "eu-west-1", "", "auto"), "mode must be one of ec2, onPremise"),
    ((["webserver"], {}, "eu-west-1"), "unknown component(s) 'webserver'"),
    ((["scheduler"], {}, ""), "region is empty"),
])
def test_bad_input_is_refused(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _cwagent.agent_config("prod", *args)
    with pytest.raises(ValueError, match="env_name is empty"):
        _cwagent.agent_config("", ["scheduler"], {}, "eu-west-1")


def test_common_config_names_the_credentials():
    text = _cwagent.common_config("/etc/airstrip/cloudwatch-agent.credentials")
    assert text.splitlines()[1:] == [
        "[credentials]",
        '   shared_credential_profile = "AmazonCloudWatchAgent"',
        '   shared_credential_file = "/etc/airstrip/cloudwatch-agent.credentials"',
    ]
    assert _cwagent.common_config("", "").splitlines()[1:] == ["[credentials]"]
    tomllib = pytest.importorskip("tomllib")
    assert tomllib.loads(_cwagent.common_config('/x/"q"\\y'))["credentials"]["shared_credential_file"] == '/x/"q"\\y'
