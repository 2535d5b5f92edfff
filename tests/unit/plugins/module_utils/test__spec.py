from __future__ import annotations

import copy
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.airstrip.airflow.plugins.module_utils._spec import (
    CLASSES,
    LEVELS,
    SpecError,
    normalize,
)

FIXTURES = Path(__file__).parent / "fixtures"


def errors_of(doc):
    with pytest.raises(SpecError) as exc:
        normalize(doc)
    return exc.value.errors


# ---------------------------------------------------------------- examples
def test_minimal_spec_gets_small_class_defaults():
    env = normalize({"name": "dev"})
    assert env["environment_class"] == "mw1.small"
    assert env["worker_concurrency"] == 5
    assert env["schedulers"] == 2
    assert env["airflow_version"] == "3.3.2"
    assert env["airstrip"]["target"] == "onprem"
    assert env["logging"]["task"] == {"enabled": True, "level": "INFO"}


@pytest.mark.parametrize("cls,concurrency", [("mw1.micro", 3), ("mw1.small", 5), ("mw1.medium", 10),
                                             ("mw1.large", 20), ("mw1.xlarge", 40), ("mw1.2xlarge", 80)])
def test_class_sets_worker_concurrency(cls, concurrency):
    assert normalize({"name": "x", "environment_class": cls})["worker_concurrency"] == concurrency


def test_micro_runs_one_scheduler_and_refuses_more():
    assert normalize({"name": "x", "environment_class": "mw1.micro"})["schedulers"] == 1
    (error,) = errors_of({"name": "x", "environment_class": "mw1.micro", "schedulers": 2})
    assert error.startswith("schedulers: must be a whole number from 1 to 1")


def test_explicit_option_wins_over_class_default():
    env = normalize({"name": "x", "environment_class": "mw1.large",
                     "airflow_configuration_options": {"celery.worker_concurrency": "7",
                                                       "dag_processor.parsing_processes": "2"}})
    assert env["worker_concurrency"] == 7 and env["parsing_processes"] == 2
    assert "celery.worker_concurrency" not in env["airflow_configuration_options"]


def test_owned_options_are_refused_naming_the_field_that_sets_them():
    (error,) = errors_of({"name": "x", "airflow_configuration_options": {"database.sql_alchemy_conn": "sqlite://"}})
    assert "airflow_configuration_options['database.sql_alchemy_conn']" in error
    assert "use airstrip.database instead" in error
    (error,) = errors_of({"name": "x", "airflow_configuration_options": {"celery.broker_url": "redis://x"}})
    assert "use airstrip.broker instead" in error


# An MWAA document describes an environment on AWS: brought over unchanged, it says where.
ON_AWS = {"target": "aws", "ec2": {"ami_id": "ami-0123abcd"}}


def mwaa_doc():
    doc = json.loads((FIXTURES / "mwaa-get-environment.json").read_text())
    doc["Environment"]["airstrip"] = copy.deepcopy(ON_AWS)
    return doc


def test_mwaa_get_environment_maps_field_by_field():
    doc = mwaa_doc()
    env = normalize(doc)
    assert env["name"] == "analytics"
    assert env["airflow_version"] == "3.3.2"
    assert env["environment_class"] == "mw1.large"
    assert (env["min_workers"], env["max_workers"]) == (2, 12)
    assert env["schedulers"] == 3
    assert (env["min_webservers"], env["max_webservers"]) == (2, 3)
    assert env["airflow_configuration_options"] == {"core.parallelism": "64"}
    assert env["worker_concurrency"] == 7
    assert env["parsing_processes"] == CLASSES["mw1.large"]["parsing_processes"]
    assert env["source"]["bucket"] == "analytics-airflow"
    assert env["source"]["dag_s3_path"] == "dags"
    assert env["source"]["plugins_s3_path"] == "plugins.zip"
    assert env["source"]["plugins_s3_object_version"] == "3sL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert env["source"]["requirements_s3_path"] == "requirements.txt"
    assert env["source"]["startup_script_s3_path"] == "startup.sh"
    assert env["logging"]["dag_processing"] == {"enabled": True, "level": "WARNING"}
    assert env["logging"]["webserver"] == {"enabled": False, "level": "ERROR"}
    assert env["logging"]["worker"] == {"enabled": True, "level": "DEBUG"}
    assert env["webserver_access_mode"] == "PRIVATE_ONLY"
    assert env["kms_key"].endswith("key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert env["network"]["subnet_ids"] == ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
    assert env["network"]["security_group_ids"] == ["sg-0123456789abcdef0"]
    assert env["weekly_maintenance_window_start"] == "SUN:03:30"
    assert env["endpoint_management"] == "SERVICE"
    assert env["tags"] == {"env": "prod", "team": "data"}
    assert env["execution_role_arn"] == "arn:aws:iam::123456789012:role/mwaa-analytics"
    assert normalize(env) == env


def test_mwaa_create_environment_body_is_accepted():
    doc = mwaa_doc()["Environment"]
    state = ("Arn", "Status", "CreatedAt", "LastUpdate", "WebserverUrl", "ServiceRoleArn", "CeleryExecutorQueue",
             "DatabaseVpcEndpointService")
    body = {k: v for k, v in doc.items() if k not in state}
    for conf in body["LoggingConfiguration"].values():
        conf.pop("CloudWatchLogGroupArn")
    assert normalize(body) == normalize(doc)


def test_mwaa_document_off_aws_is_refused_field_by_field():
    """On your own hosts the fields that describe AWS resources are refused, each with the fix."""
    doc = json.loads((FIXTURES / "mwaa-get-environment.json").read_text())
    fields = sorted(e.split(":", 1)[0] for e in errors_of(doc))
    assert fields == ["Environment.ExecutionRoleArn", "Environment.KmsKey",
                      "Environment.NetworkConfiguration.SecurityGroupIds",
                      "Environment.NetworkConfiguration.SubnetIds", "Environment.Tags"]


def test_mwaa_errors_use_mwaa_field_names():
    doc = mwaa_doc()
    doc["Environment"]["MinWorkers"] = -1
    doc["Environment"]["LoggingConfiguration"]["TaskLogs"]["LogLevel"] = "LOUD"
    errors = errors_of(doc)
    assert any(e.startswith("Environment.MinWorkers: must be a whole number") for e in errors), errors
    assert any(e.startswith("Environment.LoggingConfiguration.TaskLogs.LogLevel: must be one of") for e in errors), errors


@pytest.mark.parametrize("version", ["2.10.3", "2.8.1", "2.11"])
def test_airflow_2_environment_is_refused_with_the_way_on(version):
    """An Airflow 2 MWAA environment's JSON: refused, saying to upgrade the DAGs and where the guide is."""
    doc = mwaa_doc()
    doc["Environment"]["AirflowVersion"] = version
    (error,) = errors_of(doc)
    assert error.startswith("Environment.AirflowVersion: %r is an Airflow 2 release, and Airstrip runs Airflow 3 only" % version)
    assert "upgrade the DAGs to Airflow 3" in error and "docs/mwaa.md" in error
    assert error.endswith("set it to an Airflow 3 release such as '3.3.2'")
    (error,) = errors_of({"name": "x", "airflow_version": version})
    assert error.startswith("airflow_version: %r is an Airflow 2 release" % version)


@pytest.mark.parametrize("version", ["3.3", "latest", "1.10.15", "2.x.1", "12.0.0"])
def test_other_bad_versions_keep_the_airflow_3_hint(version):
    (error,) = errors_of({"name": "x", "airflow_version": version})
    assert error == "airflow_version: must be an Airflow 3 release such as '3.3.2', got %r" % version


def test_network_cidrs_checked():
    errors = errors_of({"name": "x", "airstrip": ON_AWS, "network": {
        "vpc_cidr": "10.0.0.0/16", "subnet_cidrs": ["10.0.1.0/24", "10.0.1.128/25", "10.1.0.0/24", "nope"],
        "availability_zones": ["eu-west-1a"], "ui_allowed_cidrs": ["0.0.0.0/33"]}})
    text = "\n".join(errors)
    assert "network.subnet_cidrs[1]: 10.0.1.128/25 overlaps subnet_cidrs[0]" in text
    assert "network.subnet_cidrs[2]: 10.1.0.0/24 is not inside vpc_cidr" in text
    assert "network.subnet_cidrs[3]: must be a CIDR" in text
    assert "network.availability_zones: needs at least two" in text
    assert "network.ui_allowed_cidrs[0]: must be a CIDR" in text


def test_every_problem_reported_at_once():
    errors = errors_of({"name": "1x", "min_workers": 3, "max_workers": 2, "environment_class": "mw9",
                        "weekly_maintenance_window_start": "TUE:03:15", "tags": {"aws:x": "y"}, "bogus": 1,
                        "airstrip": {"secrets_backend": "aws_secrets_manager"}})
    fields = [e.split(":", 1)[0] for e in errors]
    assert fields == ["bogus", "name", "environment_class", "min_workers", "weekly_maintenance_window_start", "tags"]


def test_not_a_mapping():
    assert errors_of(["name"]) == ["spec: must be a mapping (the environment's fields), got list"]


# ---------------------------------------------------------------- properties
names = st.from_regex(r"\A[A-Za-z][0-9A-Za-z_-]{0,20}\Z")
valid_specs = st.fixed_dictionaries(
    {"name": names, "airstrip": st.just({"secrets_backend": "aws_secrets_manager"})},
    optional={
        "airflow_version": st.sampled_from(["3.0.6", "3.1.3", "3.3.2"]),
        "environment_class": st.sampled_from(sorted(CLASSES)),
        "min_workers": st.integers(1, 5),
        "max_workers": st.integers(5, 25),
        "webserver_access_mode": st.sampled_from(["PUBLIC_ONLY", "PRIVATE_ONLY"]),
        "weekly_maintenance_window_start": st.builds(
            lambda d, h, m: "%s:%02d:%s" % (d, h, m),
            st.sampled_from(["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]), st.integers(0, 23),
            st.sampled_from(["00", "30"])),
        "tags": st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=10),
                                st.text(string.printable, max_size=20), max_size=10),
        "logging": st.fixed_dictionaries({}, optional={
            c: st.fixed_dictionaries({}, optional={"enabled": st.just(True) if c in ("task", "worker") else st.booleans(),
                                                   "level": st.sampled_from(LEVELS)})
            for c in ("dag_processing", "scheduler", "task", "webserver", "worker")}),
        "airflow_configuration_options": st.dictionaries(
            st.sampled_from(["core.parallelism", "scheduler.min_file_process_interval", "webserver.expose_config"]),
            st.from_regex(r"\A[0-9]{1,4}\Z"), max_size=3),
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs)
def test_valid_specs_are_accepted_and_stable(doc):
    env = normalize(doc)
    assert normalize(env) == env
    assert env["name"] == doc["name"]


# Each breaker takes a valid spec and breaks one field; the message must name that field.
BAD_VALUES = {
    "name": st.one_of(st.just(""), st.from_regex(r"\A[0-9_-][A-Za-z0-9]{0,5}\Z"), st.text(min_size=81, max_size=90),
                      st.integers(), st.none()),
    "airflow_version": st.one_of(st.sampled_from(["2.10.5", "latest", "3.3", "3.x.1", ""]), st.integers(), st.floats()),
    "environment_class": st.one_of(st.text(max_size=12).filter(lambda s: s not in CLASSES), st.integers()),
    "min_workers": st.one_of(st.integers(max_value=-1), st.integers(min_value=1001), st.booleans(), st.text(max_size=3)),
    "max_workers": st.one_of(st.integers(max_value=0), st.integers(min_value=1001), st.floats()),
    "schedulers": st.one_of(st.integers(max_value=0), st.integers(min_value=6)),
    "webserver_access_mode": st.text(max_size=15).filter(lambda s: s not in ("PUBLIC_ONLY", "PRIVATE_ONLY")),
    "weekly_maintenance_window_start": st.one_of(
        st.sampled_from(["TUE:03:15", "MONDAY:03:00", "TUE:24:00", "tue:03:00", "TUE-03-00", "TUE:3:00"]),
        st.integers()),
    "kms_key": st.one_of(st.sampled_from(["my-key", "arn:aws:s3:::bucket", "alias/"]), st.integers()),
    "tags": st.one_of(st.just({"aws:owner": "x"}),
                      st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), st.just("v"),
                                      min_size=51, max_size=55),
                      st.lists(st.text(), max_size=2)),
    "airflow_configuration_options": st.one_of(
        st.just({"Parallelism": "1"}), st.just({"core.executor": "LocalExecutor"}),
        st.just({"core.parallelism": 64}), st.just({"core.parallelism": None})),
    "logging": st.one_of(st.just({"task": {"level": "LOUD"}}), st.just({"tasks": {}}),
                         st.just({"worker": {"enabled": "yes"}}), st.just("on")),
    "source": st.one_of(st.just({"bucket": "Bad_Bucket", "dag_s3_path": "dags"}), st.just({"dag_s3_path": "dags"}),
                        st.just({"bucket": "b-ok", "dag_s3_path": "/abs"}),
                        st.just({"bucket": "b-ok", "dag_s3_path": "dags", "plugins_s3_path": "plugins.tar"})),
    "network": st.one_of(st.just({"subnet_ids": ["subnet-0123456789abcdef0"]}),
                         st.just({"vpc_cidr": "10.0.0.0/16", "subnet_cidrs": ["10.0.0.0/24", "10.0.0.0/25"]}),
                         st.just({"availability_zones": ["a"]}), st.just({"ui_allowed_cidrs": ["x"]})),
    "airstrip": st.one_of(st.just({"target": "gcp"}), st.just({"broker": {"type": "kafka"}}),
                          st.just({"worker_queues": []}), st.just({"database": {"type": "external"}})),
}


@st.composite
def broken_specs(draw):
    doc = dict(draw(valid_specs))
    field = draw(st.sampled_from(sorted(BAD_VALUES)))
    doc[field] = draw(BAD_VALUES[field])
    if field in ("min_workers", "max_workers") and isinstance(doc[field], int) and not isinstance(doc[field], bool):
        doc.pop("max_workers" if field == "min_workers" else "min_workers", None)
    return field, doc


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(broken_specs())
def test_invalid_specs_are_refused_naming_the_field(case):
    field, doc = case
    errors = errors_of(copy.deepcopy(doc))
    assert errors, doc
    assert any(e.startswith(field) for e in errors), (field, errors)
    assert not any("Traceback" in e for e in errors)


def test_documented_example_spec_is_valid():
    import yaml

    doc = yaml.safe_load((Path(__file__).parents[4] / "docs" / "environment.example.yml").read_text())
    env = normalize(doc)
    assert env["worker_concurrency"] == 12 and env["parsing_processes"] == 3


def test_network_subnets_default_to_quarters_of_the_vpc():
    aws = {"name": "x", "airstrip": ON_AWS, "source": {"bucket": "my-bucket", "dag_s3_path": "dags"}}
    env = normalize(dict(aws, network={"vpc_cidr": "10.20.0.0/16"}))
    assert env["network"]["subnet_cidrs"] == ["10.20.0.0/18", "10.20.64.0/18", "10.20.128.0/18", "10.20.192.0/18"]
    errors = errors_of(dict(aws, network={"vpc_cidr": "10.20.0.0/28"}))
    assert "network.vpc_cidr: 10.20.0.0/28 is too small for four subnets: give a /26 or larger" in errors
    errors = errors_of(dict(aws, network={"vpc_cidr": "10.20.0.0/16", "subnet_cidrs": ["10.20.0.0/24"] * 1}))
    assert any(e.startswith("network.subnet_cidrs: needs 2 private subnets") for e in errors), errors


def test_kms_key_of_another_region_is_refused():
    key = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-1111-2222-3333-444455556666"
    sm = {"secrets_backend": "aws_secrets_manager"}
    errors = errors_of({"name": "x", "kms_key": key, "airstrip": dict(sm, region="us-east-1")})
    assert errors == ["kms_key: names a key in region eu-west-1, but the environment is in us-east-1: use a key of us-east-1"]
    assert normalize({"name": "x", "kms_key": key, "airstrip": dict(sm, region="eu-west-1")})["kms_key"] == key


def test_ec2_hosts_are_described_for_aws():
    base = {"name": "x", "source": {"bucket": "my-bucket", "dag_s3_path": "dags"}}
    errors = errors_of(dict(base, airstrip={"target": "aws"}))
    assert errors == ["airstrip.ec2.ami_id: is required when airstrip.target is aws: the AMI of the hosts (Debian 12)"]
    errors = errors_of(dict(base, airstrip={"target": "aws", "ec2": {
        "ami_id": "ami-0123abcd", "instance_types": {"worker": "huge", "db": "t3.small"}}}))
    assert sorted(errors) == ["airstrip.ec2.instance_types.db: is not a host role: use control, scheduler, webserver, worker",
                              "airstrip.ec2.instance_types.worker: must be an instance type such as t3.medium, got 'huge'"]
    ec2 = {"ami_id": "ami-0123abcd", "instance_types": {"worker": "m5.large"}}
    env = normalize(dict(base, airstrip={"target": "aws", "ec2": ec2}))
    assert env["airstrip"]["ec2"] == {"ami_id": "ami-0123abcd", "instance_types": {"worker": "m5.large"}, "key_name": None}


def test_secrets_backend_defaults_to_secrets_manager_on_aws_only():
    base = {"name": "x", "source": {"bucket": "my-bucket", "dag_s3_path": "dags"}}
    assert normalize(base)["airstrip"]["secrets_backend"] == "none"
    aws = {"target": "aws", "ec2": {"ami_id": "ami-0123abcd"}}
    assert normalize(dict(base, airstrip=aws))["airstrip"]["secrets_backend"] == "aws_secrets_manager"
    assert normalize(dict(base, airstrip=dict(aws, secrets_backend="none")))["airstrip"]["secrets_backend"] == "none"
    hybrid = normalize(dict(base, airstrip={"secrets_backend": "aws_secrets_manager", "endpoint_url": "http://10.0.0.9:5000"}))
    assert hybrid["airstrip"]["secrets_backend"] == "aws_secrets_manager"
    assert hybrid["airstrip"]["endpoint_url"] == "http://10.0.0.9:5000"
    assert errors_of(dict(base, airstrip={"secrets_backend": "vault"}))[0].startswith("airstrip.secrets_backend:")
    assert errors_of(dict(base, airstrip={"endpoint_url": "moto:5000"})) == [
        "airstrip.endpoint_url: must be an http(s) URL, got 'moto:5000'"]
    assert errors_of(dict(base, airflow_configuration_options={
        "secrets.backend": "airflow.secrets.local_filesystem.LocalFilesystemBackend"})) == [
        "airflow_configuration_options['secrets.backend']: Airstrip runs only "
        "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend (as airstrip.secrets_backend: "
        "aws_secrets_manager), got 'airflow.secrets.local_filesystem.LocalFilesystemBackend'"]


def test_mwaa_secrets_manager_options_mean_the_secrets_manager_backend():
    """MWAA's way: secrets.backend and backend_kwargs in the configuration options."""
    kwargs = '{"connections_prefix": "airflow/connections", "variables_prefix": "airflow/variables"}'
    doc = {"name": "x", "airflow_configuration_options": {
        "secrets.backend": "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend",
        "secrets.backend_kwargs": kwargs}}
    env = normalize(copy.deepcopy(doc))
    assert env["airstrip"]["secrets_backend"] == "aws_secrets_manager"
    assert env["airflow_configuration_options"] == {"secrets.backend_kwargs": kwargs}
    assert errors_of(dict(doc, airstrip={"secrets_backend": "none"})) == [
        "airstrip.secrets_backend: is none, but airflow_configuration_options['secrets.backend'] names Secrets "
        "Manager: keep one of the two"]
