"""The environment model: spec -> settings for every spec field (its effect, or its refusal),
the component reader table, the inventory checks and the maintenance window."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _model
from ansible_collections.airstrip.airflow.plugins.module_utils._spec import SpecError, normalize

BASE = {"name": "prod"}
SM = {"secrets_backend": "aws_secrets_manager"}
AWS = {"target": "aws", "ec2": {"ami_id": "ami-0123abcd"}}
SOURCE = {"bucket": "my-dags", "dag_s3_path": "dags"}
ROLE = "arn:aws:iam::123456789012:role/mine"
KEY = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-1111-2222-3333-444455556666"


def settings_of(**fields):
    return _model.settings(normalize(dict(copy.deepcopy(BASE), **fields)))


def errors_of(**fields):
    with pytest.raises(SpecError) as exc:
        normalize(dict(copy.deepcopy(BASE), **fields))
    return exc.value.errors


# Each spec field: the spec's fields, and the settings they give (a subset). Fields that the AWS
# roles read (kms, s3_bucket, iam, vpc, ec2_hosts) reach them in airstrip_environment.
EFFECTS = {
    "name": ({"name": "prod"}, {"airstrip_env_name": "prod"}),
    "airflow_version": ({"airflow_version": "3.1.3"}, {"airflow_version": "3.1.3"}),
    "environment_class": ({"environment_class": "mw1.large"},
                          {"airflow_worker_concurrency": 20,
                           "airflow_config_options": {"dag_processor.parsing_processes": "7"}}),
    "worker_concurrency": ({"worker_concurrency": 7}, {"airflow_worker_concurrency": 7}),
    "celery.worker_concurrency option": ({"airflow_configuration_options": {"celery.worker_concurrency": "9"}},
                                         {"airflow_worker_concurrency": 9,
                                          "airflow_config_options": {"dag_processor.parsing_processes": "1"}}),
    "parsing_processes": ({"parsing_processes": 4}, {"airflow_config_options": {"dag_processor.parsing_processes": "4"}}),
    "min_workers": ({"min_workers": 2}, {"airflow_workers_active": 2}),
    "min_workers 0 with scaling": ({"min_workers": 0, "airstrip": {"scaling": True}},
                                   {"airflow_workers_active": 0, "airflow_worker_scaling": True}),
    "worker_queues": ({"airstrip": {"worker_queues": ["default", "gpu"]}},
                      {"airstrip_worker_queues": ["default", "gpu"]}),
    "worker_queues with another default queue": (
        {"airstrip": {"worker_queues": ["etl"]}, "airflow_configuration_options": {"operators.default_queue": "etl"}},
        {"airstrip_worker_queues": ["etl"]}),
    "airflow_configuration_options": ({"airflow_configuration_options": {"core.parallelism": "64"}},
                                      {"airflow_config_options": {"core.parallelism": "64",
                                                                  "dag_processor.parsing_processes": "1"}}),
    "logging level": ({"logging": {"scheduler": {"level": "WARNING"}, "worker": {"level": "DEBUG"}}},
                      {"airflow_log_levels": {"dag_processing": "INFO", "scheduler": "WARNING", "task": "INFO",
                                              "webserver": "INFO", "worker": "DEBUG"}}),
    "logging enabled": ({"logging": {"webserver": {"enabled": False}}},
                        {"airflow_log_enabled": {"dag_processing": True, "scheduler": True, "task": True,
                                                 "webserver": False, "worker": True}}),
    "source": ({"source": dict(SOURCE, endpoint_url="http://10.0.0.9:9000", region="eu-west-1")},
               {"dag_sync_bucket": "my-dags", "dag_sync_prefix": "dags", "dag_sync_endpoint_url": "http://10.0.0.9:9000",
                "dag_sync_region": "eu-west-1", "airstrip_aws_region": "eu-west-1"}),
    "source files": ({"source": dict(SOURCE, requirements_s3_path="requirements.txt")},
                     {"airflow_s3_source": dict(SOURCE, requirements_s3_path="requirements.txt",
                                                requirements_s3_object_version=None, plugins_s3_path=None,
                                                plugins_s3_object_version=None, startup_script_s3_path=None,
                                                startup_script_s3_object_version=None, endpoint_url=None,
                                                region=None)}),
    "external database": ({"airstrip": {"database": {"type": "external",
                                                     "url": "postgresql://airflow@db.example.internal/airflow"}}},
                          {"airstrip_database_url": "postgresql+psycopg2://airflow@db.example.internal:5432/airflow"}),
    "local database": ({"airstrip": {"database": {"type": "postgresql"}}}, {"airstrip_database_url": ""}),
    "secrets_backend": ({"airstrip": SM}, {"airstrip_secrets_backend": "aws_secrets_manager"}),
    "region": ({"airstrip": dict(SM, region="eu-central-1")}, {"airstrip_aws_region": "eu-central-1"}),
    "endpoint_url": ({"airstrip": dict(SM, endpoint_url="http://10.0.0.9:5000")},
                     {"airstrip_aws_endpoint_url": "http://10.0.0.9:5000"}),
    "broker": ({"airstrip": {"broker": {"type": "redis"}}}, {"airstrip_environment": {"airstrip": {"broker": {"type": "redis"}}}}),
    "kms_key with Secrets Manager": ({"kms_key": KEY, "airstrip": SM}, {"airstrip_environment": {"kms_key": KEY}}),
    "tags with Secrets Manager": ({"tags": {"team": "data"}, "airstrip": SM},
                                  {"airstrip_environment": {"tags": {"team": "data"}}}),
    "execution_role_arn on AWS": ({"execution_role_arn": ROLE, "airstrip": AWS, "source": SOURCE},
                                  {"airstrip_environment": {"execution_role_arn": ROLE}}),
    "network on AWS": ({"network": {"vpc_cidr": "10.9.0.0/16"}, "airstrip": AWS, "source": SOURCE},
                       {"airstrip_environment": {"network": {"vpc_cidr": "10.9.0.0/16"}}}),
    "ui_allowed_cidrs on own hosts": ({"network": {"ui_allowed_cidrs": ["192.0.2.0/24"]}},
                                      {"firewall_ui_allowed_cidrs": ["192.0.2.0/24"]}),
    "PRIVATE_ONLY": ({"webserver_access_mode": "PRIVATE_ONLY"}, {"firewall_ui_allowed_cidrs": []}),
    "PUBLIC_ONLY": ({"webserver_access_mode": "PUBLIC_ONLY"},
                    {"firewall_ui_allowed_cidrs": ["0.0.0.0/0"],
                     "airstrip_environment": {"webserver_access_mode": "PUBLIC_ONLY"}}),
    "PUBLIC_ONLY with CIDRs": ({"webserver_access_mode": "PUBLIC_ONLY", "network": {"ui_allowed_cidrs": ["192.0.2.0/24"]}},
                               {"firewall_ui_allowed_cidrs": ["192.0.2.0/24"]}),
    "weekly_maintenance_window_start": ({"weekly_maintenance_window_start": "SUN:03:30"},
                                        {"airstrip_environment": {"weekly_maintenance_window_start": "SUN:03:30"}}),
    "ec2": ({"airstrip": AWS, "source": SOURCE}, {"airstrip_environment": {"airstrip": {"ec2": {"ami_id": "ami-0123abcd"}}}}),
    "cloudwatch off by default on own hosts": ({}, {"airstrip_log_groups": {}, "airflow_remote_task_logs": False,
                                                    "cloudwatch_agent_enabled": False, "metrics_enabled": False}),
    "cloudwatch on by default on AWS": ({"airstrip": AWS, "source": SOURCE},
                                        {"airstrip_log_groups": {"dag_processing": "airflow-prod-DAGProcessing",
                                                                 "scheduler": "airflow-prod-Scheduler",
                                                                 "task": "airflow-prod-Task",
                                                                 "webserver": "airflow-prod-WebServer",
                                                                 "worker": "airflow-prod-Worker"},
                                         "airflow_remote_task_logs": True, "cloudwatch_agent_enabled": True,
                                         "metrics_enabled": True, "metrics_namespace": "Airstrip/prod",
                                         "airstrip_cloudwatch": {"log_retention_days": 30, "alarms": True}}),
    "cloudwatch on own hosts, a disabled log type has no group": (
        {"airstrip": {"cloudwatch": {"enabled": True, "agent": False, "log_retention_days": 7, "alarms": False,
                                     "metrics_namespace": "Team/airflow"}},
         "logging": {"webserver": {"enabled": False}}},
        {"airstrip_log_groups": {"dag_processing": "airflow-prod-DAGProcessing", "scheduler": "airflow-prod-Scheduler",
                                 "task": "airflow-prod-Task", "worker": "airflow-prod-Worker"},
         "cloudwatch_agent_enabled": False, "metrics_namespace": "Team/airflow",
         "airstrip_cloudwatch": {"log_retention_days": 7, "alarms": False}}),
    "cloudwatch: true": ({"airstrip": {"cloudwatch": True}}, {"airflow_remote_task_logs": True}),
    "scaling off by default": ({}, {"airflow_worker_scaling": False}),
    "scaling": ({"airstrip": {"scaling": {"enabled": True, "target_utilization": 0.8}}, "max_workers": 3},
                {"airflow_worker_scaling": True, "scaling_target_utilization": 0.8, "airflow_workers_active": 1}),
    "scaling: true": ({"airstrip": {"scaling": True}}, {"airflow_worker_scaling": True, "scaling_target_utilization": 1.0}),
    "prometheus alone": ({"airstrip": {"prometheus": True}},
                         {"metrics_enabled": True, "metrics_prometheus": True, "metrics_namespace": "",
                          "airstrip_log_groups": {}}),
    "metrics lists go to the bridge, not Airflow": (
        {"airstrip": {"cloudwatch": True},
         "airflow_configuration_options": {"metrics.metrics_block_list": "pool,ti\\.", "metrics.statsd_on": "True"}},
        {"metrics_block_list": "pool,ti\\.", "metrics_allow_list": "",
         "airflow_config_options": {"dag_processor.parsing_processes": "1"}}),
    "statsd_on False publishes nothing": ({"airstrip": {"cloudwatch": True},
                                           "airflow_configuration_options": {"metrics.statsd_on": "False"}},
                                          {"metrics_namespace": "", "metrics_enabled": True}),
    "metrics options are Airflow's without the bridge": (
        {"airflow_configuration_options": {"metrics.statsd_on": "True", "metrics.statsd_host": "statsd.internal"}},
        {"metrics_enabled": False, "airflow_config_options": {"metrics.statsd_on": "True",
                                                              "metrics.statsd_host": "statsd.internal",
                                                              "dag_processor.parsing_processes": "1"}}),
}


def subset(expected, actual, path=""):
    for key, value in expected.items():
        assert key in actual, "%s%s missing" % (path, key)
        if isinstance(value, dict) and key not in ("airflow_config_options", "airflow_log_levels", "airflow_log_enabled",
                                                   "airflow_s3_source", "firewall_ui_allowed_cidrs",
                                                   "airstrip_log_groups"):
            subset(value, actual[key], path + key + ".")
        else:
            assert actual[key] == value, "%s%s: %r != %r" % (path, key, actual[key], value)


@pytest.mark.parametrize("case", EFFECTS, ids=list(EFFECTS))
def test_each_field_reaches_the_roles(case):
    fields, expected = EFFECTS[case]
    subset(expected, settings_of(**fields))


# Each field the collection does not honour here: the spec's fields and the start of the message.
REFUSALS = {
    "sqs broker": ({"airstrip": {"broker": {"type": "sqs"}}}, "airstrip.broker.type: sqs is not supported yet"),
    "worker_queues without the default queue": ({"airstrip": {"worker_queues": ["gpu"]}},
                                                "airstrip.worker_queues: ['gpu'] has no 'default'"),
    "worker_queues twice": ({"airstrip": {"worker_queues": ["default", "gpu", "gpu"]}},
                            "airstrip.worker_queues: names a queue twice"),
    "min_workers 0 without scaling": ({"min_workers": 0}, "min_workers: is 0, but no worker would ever start"),
    "hosts": ({"airstrip": {"hosts": {"airflow_worker": ["w1"]}}}, "airstrip.hosts: is not supported"),
    "endpoint_management CUSTOMER": ({"endpoint_management": "CUSTOMER"},
                                     "endpoint_management: CUSTOMER is not supported yet"),
    "task logs off": ({"logging": {"task": {"enabled": False}}}, "logging.task.enabled: false is not supported"),
    "cloudwatch fields while off": ({"airstrip": {"cloudwatch": {"enabled": False, "alarms": True}}},
                                    "airstrip.cloudwatch.alarms: has no effect while CloudWatch is off"),
    "scaling target while off": ({"airstrip": {"scaling": {"target_utilization": 0.5}}},
                                 "airstrip.scaling.target_utilization: has no effect while scaling is off"),
    "scaling target out of range": ({"airstrip": {"scaling": {"enabled": True, "target_utilization": 1.5}}},
                                    "airstrip.scaling.target_utilization: must be a number from 0.1 to 1.0"),
    "cloudwatch retention": ({"airstrip": {"cloudwatch": {"enabled": True, "log_retention_days": 10}}},
                             "airstrip.cloudwatch.log_retention_days: must be one of CloudWatch Logs' periods"),
    "cloudwatch AWS/ namespace": ({"airstrip": {"cloudwatch": {"enabled": True, "metrics_namespace": "AWS/MWAA"}}},
                                  "airstrip.cloudwatch.metrics_namespace: must not start with AWS/"),
    "statsd_host with the bridge": ({"airstrip": {"prometheus": True},
                                     "airflow_configuration_options": {"metrics.statsd_host": "10.0.0.1"}},
                                    "airflow_configuration_options['metrics.statsd_host']: Airstrip points Airflow's"),
    "bad block list": ({"airstrip": {"cloudwatch": True},
                        "airflow_configuration_options": {"metrics.metrics_block_list": "pool,(ti"}},
                       "airflow_configuration_options['metrics.metrics_block_list']: '(ti' is not a regular"),
    "remote logging with CloudWatch": ({"airstrip": {"cloudwatch": True},
                                        "airflow_configuration_options": {"logging.remote_logging": "True"}},
                                       "airflow_configuration_options['logging.remote_logging']: Airstrip streams"),
    "worker logs off": ({"logging": {"worker": {"enabled": False}}}, "logging.worker.enabled: false is not supported"),
    "vpc_id": ({"network": {"vpc_id": "vpc-0123abcd"}, "airstrip": AWS, "source": SOURCE},
               "network.vpc_id: is not supported yet"),
    "IPv6 UI CIDR": ({"network": {"ui_allowed_cidrs": ["2001:db8::/32"]}}, "network.ui_allowed_cidrs[0]: 2001:db8::/32 is IPv6"),
    "external database on AWS": ({"airstrip": dict(AWS, database={"type": "external", "url": "postgresql://a@db/airflow"}),
                                  "source": SOURCE}, "airstrip.database: external is not supported yet with airstrip.target aws"),
    "password in database url": ({"airstrip": {"database": {"type": "external",
                                                            "url": "postgresql://airflow:hunter2@db/airflow"}}},
                                 "airstrip.database.url: holds a password"),
    "database url not postgresql": ({"airstrip": {"database": {"type": "external", "url": "mysql://a@db/airflow"}}},
                                    "airstrip.database.url: must be a PostgreSQL URL"),
    "database url missing": ({"airstrip": {"database": {"type": "external"}}}, "airstrip.database.url: is required"),
    "execution_role_arn off AWS": ({"execution_role_arn": ROLE}, "execution_role_arn: is used only when"),
    "kms_key off AWS": ({"kms_key": KEY}, "kms_key: encrypts AWS resources"),
    "tags off AWS": ({"tags": {"a": "b"}}, "tags: are put on AWS resources"),
    "VPC off AWS": ({"network": {"vpc_cidr": "10.9.0.0/16"}}, "network.vpc_cidr: describes an AWS VPC"),
    "EC2 off AWS": ({"airstrip": {"ec2": {"ami_id": "ami-0123abcd"}}}, "airstrip.ec2: describes the EC2 instances"),
    "negative parallelism": ({"airflow_configuration_options": {"core.parallelism": "-5"}},
                             "airflow_configuration_options['core.parallelism']: must be 0 or more, got '-5'"),
    "resources": ({"resources": {"vcpu": 4}}, "resources: unknown field"),
    "logging.logging_level option": ({"airflow_configuration_options": {"logging.logging_level": "DEBUG"}},
                                     "airflow_configuration_options['logging.logging_level']: Airstrip sets this "
                                     "option itself; use logging.<log type>.level instead"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_each_field_not_honoured_is_refused(case):
    fields, message = REFUSALS[case]
    errors = errors_of(**fields)
    assert any(e.startswith(message) for e in errors), errors


def test_the_external_database_url_keeps_its_query_and_brackets():
    doc = {"airstrip": {"database": {"type": "external", "url": "postgresql://airflow@[2001:db8::5]/airflow?sslmode=require"}}}
    url = settings_of(**doc)["airstrip_database_url"]
    assert url == "postgresql+psycopg2://airflow@[2001:db8::5]:5432/airflow?sslmode=require"
    assert _model.database_url(url, "p@ss%/x") == \
        "postgresql+psycopg2://airflow:p%40ss%25%2Fx@[2001:db8::5]:5432/airflow?sslmode=require"


def test_the_external_database_url_in_the_settings_holds_no_password():
    doc = {"airstrip": {"database": {"type": "external", "url": "postgresql://airflow@db:6432/airflow"}}}
    assert settings_of(**doc)["airstrip_database_url"] == "postgresql+psycopg2://airflow@db:6432/airflow"


def test_inventory_values_of_region_and_endpoint_win():
    env = normalize(dict(BASE, airstrip=dict(SM, region="eu-west-1")))
    out = _model.settings(env, {"airstrip_aws_region": "us-west-2", "airflow_version": "9"})
    assert out["airstrip_aws_region"] == "us-west-2"
    assert out["airflow_version"] == "3.3.2"


# ---------------------------------------------------------------- components
READERS = [
    ("celery.worker_concurrency", ("celery-worker",)),
    ("celery.worker_prefetch_multiplier", ("scheduler", "celery-worker")),
    ("dag_processor.parsing_processes", ("dag-processor",)),
    ("api.workers", ("api-server",)),
    ("api_auth.jwt_expiration_time", _model.COMPONENT_NAMES),
    ("core.parallelism", _model.COMPONENT_NAMES),
    ("sensors.default_timeout", ("triggerer", "celery-worker")),
]


@pytest.mark.parametrize("option,readers", READERS)
def test_options_are_read_by_their_components(option, readers):
    assert set(_model.components_reading(option)) == set(readers)


def test_worker_concurrency_and_log_levels_go_to_their_component_only():
    levels = {"task": "DEBUG", "worker": "WARNING", "scheduler": "ERROR", "dag_processing": "INFO"}
    options = {"core.parallelism": "64", "api.workers": "4"}
    worker = _model.component_options(options, "celery-worker", 12, levels)
    assert worker == {"core.parallelism": "64", "celery.worker_concurrency": "12",
                      "logging.logging_level": "DEBUG", "logging.celery_logging_level": "WARNING"}
    assert _model.component_options(options, "scheduler", 12, levels) == {
        "core.parallelism": "64", "logging.logging_level": "ERROR"}
    assert _model.component_options(options, "triggerer", 12, levels)["logging.logging_level"] == "ERROR"
    assert _model.component_options(options, "api-server", 12, levels) == {"core.parallelism": "64", "api.workers": "4"}
    assert _model.component_options(options, None, 12, levels) == dict(options, **{"celery.worker_concurrency": "12"})
    with pytest.raises(ValueError, match="log level of task"):
        _model.component_options({}, "celery-worker", None, {"task": "LOUD"})


FULL = {"database": {"sql_alchemy_conn": "postgresql://airflow:pw@db/airflow"},
        "core": {"fernet_key": "k", "dags_folder": "/dags", "simple_auth_manager_passwords_file": "/p.json"},
        "api": {"secret_key": "s", "base_url": "http://web:8080"},
        "api_auth": {"jwt_secret": "j"},
        "celery": {"broker_url": "redis://:b@broker:6379/0", "result_backend": "redis://:b@broker:6379/1"},
        "logging": {"base_log_folder": "/logs", "worker_log_server_port": "8793", "logging_level": "INFO"}}


def test_a_worker_host_holds_no_secret_of_the_control_plane():
    worker = _model.host_config(FULL, ["celery-worker"])
    assert "database" not in worker and "api_auth" not in worker
    assert worker["core"] == {"dags_folder": "/dags"} and worker["api"] == {"base_url": "http://web:8080"}
    assert worker["celery"] == FULL["celery"]
    # A host that also runs a control-plane component (all-in-one, or its airflow.cfg) holds everything.
    assert _model.host_config(FULL, ["celery-worker", "scheduler"]) == FULL
    for name in _model.COMPONENT_NAMES:
        if name != "celery-worker":
            assert _model.host_config(FULL, [name]) == FULL
    # The log server reads its key and where the logs are, nothing else.
    assert _model.host_config(FULL, [_model.LOG_SERVER]) == {
        "api": {"secret_key": "s"}, "logging": {"base_log_folder": "/logs", "worker_log_server_port": "8793"}}
    with pytest.raises(ValueError, match="unknown component 'webserver'"):
        _model.host_config(FULL, ["webserver"])


def test_the_database_clients_are_the_control_planes_groups():
    assert "airflow_worker" not in _model.lookup("control_plane_groups")
    assert set(_model.lookup("control_plane_groups")) == set(
        c["group"] for n, c in _model.COMPONENTS.items() if n != "celery-worker")


def test_unit_journal_is_off_only_when_every_log_type_of_the_component_is():
    assert _model.unit_journal({"webserver": False}, "api-server") is False
    assert _model.unit_journal({"worker": False}, "celery-worker") is True  # its task logs stay on
    assert _model.unit_journal({"scheduler": False}, "triggerer") is False
    assert _model.unit_journal({}, "scheduler") is True


def test_database_url_gets_its_password_quoted():
    url = "postgresql+psycopg2://airflow@db:5432/airflow"
    assert _model.database_url(url, "p@ss/word") == "postgresql+psycopg2://airflow:p%40ss%2Fword@db:5432/airflow"
    assert _model.database_url(url, "") == url
    assert _model.database_url("postgresql://a:x@db/airflow", "other") == "postgresql://a:x@db/airflow"


def test_tables_cover_every_group_once():
    assert sorted(_model.GROUPS) == sorted(set(_model.GROUPS))
    assert set(_model.lookup("component_groups").values()) <= set(_model.GROUPS)
    placed = set(g for groups in _model.HOST_ROLES.values() for g in groups)
    assert placed == set(_model.GROUPS)
    for cls in _model.CLASSES.values():
        assert set(cls["instance_types"]) == set(_model.HOST_ROLES)
    with pytest.raises(KeyError):
        _model.lookup("nope")


# ---------------------------------------------------------------- inventory
def groups(**counts):
    out = dict((c["group"], ["h"]) for c in _model.COMPONENTS.values())
    out.update({"airflow_metadata_db": ["db"], "airflow_broker": ["b"]})
    for group, n in counts.items():
        out[group] = ["%s%d" % (group, i) for i in range(n)]
    return out


HOSTS = [
    ({}, False, None, []),
    ({"airflow_scheduler": 0}, False, None, ["No host in inventory group(s) airflow_scheduler"]),
    ({"airflow_metadata_db": 0}, False, None, ["Inventory group airflow_metadata_db must hold exactly one host (found 0)"]),
    ({"airflow_metadata_db": 0}, True, None, []),
    ({}, True, None, ["inventory group airflow_metadata_db holds 1 host(s), but the metadata database is external"]),
    ({"airflow_broker": 2}, False, None, ["Inventory group airflow_broker must hold exactly one host (found 2)"]),
    ({"airflow_worker": 2}, False, {"max_workers": 3},
     ["max_workers: 3 needs as many hosts in inventory group airflow_worker, found 2"]),
    ({"airflow_scheduler": 1}, False, {"schedulers": 2}, ["schedulers: 2 but inventory group airflow_scheduler holds 1"]),
    ({"airflow_webserver": 3}, False, {"max_webservers": 2},
     ["min_webservers/max_webservers: 1-2 but inventory group airflow_webserver holds 3"]),
]


@pytest.mark.parametrize("counts,external,spec,messages", HOSTS)
def test_inventory_placement(counts, external, spec, messages):
    env = None
    if spec is not None:
        env = normalize(dict(dict(BASE, min_workers=1, schedulers=1, min_webservers=1, max_webservers=1,
                                  max_workers=1), **spec))
    errors = _model.host_errors(groups(**counts), external, env)
    assert len(errors) == len(messages), errors
    for error, message in zip(errors, messages):
        assert error.startswith(message), errors


QUEUES = [
    # (the spec's worker_queues, {host: airflow_worker_queues}, the messages' starts)
    (["default"], {}, []),
    (["default", "reports"], {}, []),
    (["default", "reports"], {"airflow_worker0": ["default"], "airflow_worker1": ["default", "reports"]}, []),
    (["default", "reports"], {"airflow_worker0": ["default"], "airflow_worker1": ["default"]},
     ["airstrip.worker_queues: no worker host serves reports"]),
    (["default"], {"airflow_worker1": ["default", "gpu"]},
     ["host airflow_worker1: airflow_worker_queues names gpu, which airstrip.worker_queues (default) does not list"]),
    (["default"], {"airflow_worker1": []}, ["host airflow_worker1: airflow_worker_queues must be a non-empty list"]),
    (["default"], {"airflow_worker1": "default"}, ["host airflow_worker1: airflow_worker_queues must be a non-empty"]),
    (["default"], {"control": ["default"]}, ["host control: airflow_worker_queues is set, but the host is not in"]),
]


@pytest.mark.parametrize("listed,host_queues,messages", QUEUES)
def test_worker_queues_against_the_inventory(listed, host_queues, messages):
    env = normalize(dict(BASE, min_workers=1, max_workers=2, schedulers=1, min_webservers=1, max_webservers=1,
                         airstrip={"worker_queues": listed}))
    errors = _model.host_errors(groups(airflow_worker=2), False, env, host_queues)
    assert len(errors) == len(messages), errors
    for error, message in zip(errors, messages):
        assert error.startswith(message), errors


def test_setting_clashes_name_what_the_inventory_sets_differently():
    values = {"airflow_worker_concurrency": 10, "airflow_version": "3.3.2", "airstrip_aws_region": "eu-west-1",
              "airstrip_env_name": "prod"}
    host = {"airflow_worker_concurrency": "10", "airflow_version": "3.1.3", "airstrip_aws_region": "us-east-1"}
    assert _model.setting_clashes(values, host) == ["airflow_version"]


# ---------------------------------------------------------------- maintenance window
WINDOWS = [
    ("SUN:03:30", datetime.datetime(2026, 11, 29, 3, 30), True),    # a Sunday, at the start
    ("SUN:03:30", datetime.datetime(2026, 11, 29, 5, 29), True),
    ("SUN:03:30", datetime.datetime(2026, 11, 29, 5, 30), False),   # two hours on
    ("SUN:23:00", datetime.datetime(2026, 11, 30, 0, 30), True),    # into Monday
    ("SUN:23:00", datetime.datetime(2026, 11, 23, 0, 30), True),    # a Monday, the week's wrap
    ("MON:10:00", datetime.datetime(2026, 12, 1, 10, 0), False),    # a Tuesday
]


@pytest.mark.parametrize("start,now,is_open", WINDOWS)
def test_maintenance_window(start, now, is_open):
    assert _model.maintenance_window(start, now)[0] is is_open


def test_update_outside_the_window_is_refused_with_the_way_on():
    env = normalize(dict(BASE, weekly_maintenance_window_start="SUN:23:00"))
    tuesday = datetime.datetime(2026, 12, 1, 10, 0)
    (error,) = _model.window_errors(env, "UPDATE", tuesday)
    assert error.startswith("weekly_maintenance_window_start: it is TUE 10:00 UTC, outside the maintenance window "
                            "SUN 23:00-MON 01:00 UTC")
    assert "airstrip_ignore_maintenance_window=true" in error
    assert _model.window_errors(env, "UPDATE", tuesday, ignore=True) == []
    assert _model.window_errors(env, "CREATE", tuesday) == []
    assert _model.window_errors(normalize(BASE), "UPDATE", tuesday) == []


CFG = """
[core]
fernet_key = 3q2-key-itself=
[api]
secret_key = ApiSecret
[api_auth]
jwt_secret = JwtSecret
[database]
sql_alchemy_conn = postgresql+psycopg2://airflow:DbPass%%2F1@10.0.0.5:5432/airflow
[celery]
broker_url = redis://:BrokerPass@10.0.0.6:6379/0
"""


def test_recovered_secrets_reads_a_hosts_files():
    held = _model.recovered_secrets(CFG, '{"admin": "AdminPass"}', "admin")
    assert held == {"missing": [], "secrets": {
        "fernet_key": "3q2-key-itself=", "api_secret_key": "ApiSecret", "jwt_secret": "JwtSecret",
        "db_password": "DbPass/1", "broker_password": "BrokerPass", "admin_password": "AdminPass"}}
    # Every generated secret has a source, so a new one cannot be forgotten here.
    assert sorted(_model.SECRET_SOURCES) == sorted(_model.SECRETS)


def test_recovered_secrets_of_a_new_host_a_partial_one_and_an_external_database():
    assert _model.recovered_secrets("", "", "admin") == {"secrets": {}, "missing": []}
    partial = _model.recovered_secrets(CFG, "", "admin")
    assert partial["missing"] == ["admin_password"]
    assert _model.recovered_secrets(CFG, '{"someone": "x"}', "admin")["missing"] == ["admin_password"]
    external = _model.recovered_secrets(CFG.replace("DbPass%%2F1", ""), '{"admin": "a"}', "admin", external_database=True)
    assert external["missing"] == [] and "db_password" not in external["secrets"]
    assert _model.recovered_secrets("not an ini file", "not json", "admin")["missing"] == sorted(_model.SECRETS)
