"""An environment whose DAGs, plugins.zip, requirements.txt and startup script come from S3
(the emulated one), in order: what converge deployed, a DAG uploaded and deleted, a re-run,
and a broken requirements.txt that must leave the running version alone.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import scenario
import yaml
from airflow_api import wait_for
from scenario import RUNNER, host, login, pids

SPEC = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "environment.yml"
SOURCE = yaml.safe_load(SPEC.read_text())["source"]
BUCKET = SOURCE["bucket"]
DAG_HOSTS = ["control", "worker"]
DAGS = "/var/lib/airflow/dags"


def s3():
    return boto3.client("s3", endpoint_url=SOURCE["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run_dag(api, dag_id):
    wait_for(f"{dag_id} to be parsed", lambda: api.call("GET", f"/dags/{dag_id}"), timeout=120)
    api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    run_id = api.call("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]

    def finished():
        run = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(f"{dag_id} to finish", finished)
    tis = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    logs = {ti["task_id"]: api.text(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/1")
            for ti in tis if ti["state"] != "success"}
    assert run["state"] == "success", logs
    return run_id


def test_every_dag_host_runs_the_sync_agent_and_has_the_dags():
    for name in DAG_HOSTS:
        h = host(name)
        agent = h.service("airstrip-dag-sync")
        assert agent.is_running and agent.is_enabled, name
        assert any("airstrip_s3sync.py agent" in p.args for p in h.process.filter(user="airflow")), name
        status = h.file("/run/airstrip-dag-sync/status.json").content_string
        assert '"healthy": true' in status, status
        env = h.file("/etc/airstrip/dag-sync.env")
        assert env.mode == 0o600 and env.user == "root"
        assert h.file(f"{DAGS}/s3_hello.py").exists, name
    # The api-server host reads no DAG files; here it shares a host with the scheduler.
    assert RUNNER.get_hosts("airflow_webserver") == ["control"]


def test_the_metadata_database_is_the_external_one():
    """Nothing of PostgreSQL on the environment's hosts; Airflow's tables on the external one."""
    for name in RUNNER.get_hosts("airflow_scheduler") + RUNNER.get_hosts("airflow_worker") + \
            RUNNER.get_hosts("airflow_webserver"):
        h = host(name)
        assert not h.package("postgresql").is_installed, name
        assert not h.process.filter(comm="postgres"), name
    rds = host("rds")
    tables = rds.check_output("sudo -u postgres psql -tAc \"select count(*) from pg_tables where tablename in "
                              "('dag', 'dag_run', 'task_instance', 'alembic_version')\" airflow")
    assert tables == "4"
    scheduler = host(RUNNER.get_hosts("airflow_scheduler")[0])
    url = scheduler.check_output("sudo grep '^sql_alchemy_conn' /etc/airflow/scheduler.cfg")
    assert f"@{RUNNER.get_variables('rds')['ansible_host']}:5432/airflow" in url
    assert scheduler.file("/etc/airflow/scheduler.cfg").mode == 0o600


def test_info_reports_each_agent():
    env = scenario.info(SPEC)
    assert env["status"] == "AVAILABLE", env
    assert sorted(env["dag_sync"]) == DAG_HOSTS, env["dag_sync"]
    for name, status in env["dag_sync"].items():
        assert status["healthy"] is True and status["error"] is None and status["files"] == 1, (name, status)
        assert (status["bucket"], status["prefix"]) == (BUCKET, "dags/")
    # Where the logs and metrics go: the log groups (the record), the bridge on every Airflow host.
    name = scenario.ENV_NAME
    assert env["logging"]["log_groups"]["task"] == f"airflow-{name}-Task", env["logging"]
    assert env["metrics"]["namespace"] == f"Airstrip/{name}"
    assert sorted(env["metrics"]["hosts"]) == DAG_HOSTS, env["metrics"]
    assert all(h["prometheus"] and h["namespace"] == f"Airstrip/{name}" for h in env["metrics"]["hosts"].values())


def test_startup_script_ran_before_each_component():
    for name, components in (("control", ["scheduler", "dag-processor", "triggerer", "api-server"]),
                             ("worker", ["celery-worker"])):
        log = host(name).file("/var/lib/airflow/startup.log")
        assert log.user == "airflow"
        for component in components:
            assert f"startup ran for {component} at" in log.content_string, (name, component)
        unit = host(name).file(f"/etc/systemd/system/airflow-{components[0]}.service").content_string
        assert "ExecStartPre=/usr/bin/timeout 300 /bin/bash /etc/airflow/startup.sh" in unit


def test_plugin_operator_uses_the_requirement():
    for name in DAG_HOSTS:
        h = host(name)
        plugins = h.file("/var/lib/airflow/plugins")
        assert plugins.is_symlink and plugins.linked_to.startswith("/opt/airflow/plugins/")
        assert h.file(plugins.linked_to + "/airstrip_demo/operators.py").exists
        assert "-r" in h.file("/opt/airflow/current").linked_to.rsplit("/", 1)[-1]
    api = login()
    run_id = run_dag(api, "s3_hello")
    xcom = api.call("GET", f"/dags/s3_hello/dagRuns/{run_id}/taskInstances/year/xcomEntries/return_value")
    assert "year: MMXXVI" in str(xcom["value"]), xcom


def secretsmanager():
    return boto3.client("secretsmanager", endpoint_url=SOURCE["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_secrets_come_from_secrets_manager_to_each_host():
    """airstrip.secrets_backend aws_secrets_manager: no vault file on the controller; each host read
    the secrets itself (boto3 installed for it) and uses Secrets Manager's values."""
    assert not scenario.SECRETS.exists()
    values = scenario.secrets()
    assert sorted(values) == scenario.SECRET_NAMES
    control = host("control")
    assert control.package("python3-boto3").is_installed and host("worker").package("python3-boto3").is_installed
    redis = control.run("cat /etc/redis/airstrip.conf").stdout
    assert f"requirepass {values['broker_password']}" in redis
    for name in DAG_HOSTS:
        cfg = host(name).run("cat /etc/airflow/airflow.cfg").stdout
        assert "backend = airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend" in cfg
        assert '"variables_prefix": "airflow/variables"' in cfg
        env = host(name).file("/etc/airflow/aws.env")
        assert env.mode == 0o600 and env.user == "root"
    login()  # the admin password from Secrets Manager opens the API


def test_dag_reads_a_variable_and_a_connection_from_secrets_manager():
    sm = secretsmanager()
    for name, value in (("airflow/variables/sm_greeting", "hello from secrets manager"),
                        ("airflow/connections/sm_http", '{"conn_type": "http", "host": "api.example.internal", '
                                                        '"port": 8443, "login": "svc", "password": "pw-123"}')):
        try:
            sm.create_secret(Name=name, SecretString=value)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=value)
    source = (Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "files" / "dags" / "sm_reader.py").read_bytes()
    s3().put_object(Bucket=BUCKET, Key="dags/sm_reader.py", Body=source)
    api = login()
    run_id = run_dag(api, "sm_reader")
    xcom = api.call("GET", f"/dags/sm_reader/dagRuns/{run_id}/taskInstances/read/xcomEntries/return_value")
    assert xcom["value"] == "hello from secrets manager|api.example.internal:8443|svc", xcom
    # Neither is in the metadata database: they came from Secrets Manager.
    for path in ("/variables/sm_greeting", "/connections/sm_http"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            api.call("GET", path)
        assert missing.value.code == 404, path
    s3().delete_object(Bucket=BUCKET, Key="dags/sm_reader.py")


def test_uploaded_dag_reaches_every_dag_host_and_runs():
    dag_id = "s3_uploaded"
    source = (Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "files" / "dags" / "s3_hello.py").read_text()
    s3().put_object(Bucket=BUCKET, Key=f"dags/team/{dag_id}.py", Body=source.replace("s3_hello", dag_id).encode())
    uploaded = time.monotonic()
    seen = {}
    while len(seen) < len(DAG_HOSTS) and time.monotonic() - uploaded < 60:
        for name in DAG_HOSTS:
            if name not in seen and host(name).file(f"{DAGS}/team/{dag_id}.py").exists:
                seen[name] = round(time.monotonic() - uploaded, 1)
        time.sleep(0.5)
    print(f"seconds from upload to file, per host: {seen}")
    assert sorted(seen) == DAG_HOSTS, seen
    run_dag(login(), dag_id)


def test_dag_runs_are_recorded_in_the_external_database():
    rds = host("rds")
    runs = rds.check_output("sudo -u postgres psql -tAc \"select count(*) from dag_run where dag_id = 's3_uploaded' "
                            "and state = 'success'\" airflow")
    assert int(runs) >= 1


def test_dag_deleted_from_s3_leaves_every_host():
    s3().delete_object(Bucket=BUCKET, Key="dags/team/s3_uploaded.py")
    for name in DAG_HOSTS:
        wait_for(f"the deleted DAG to leave {name}",
                 lambda h=host(name): not h.file(f"{DAGS}/team/s3_uploaded.py").exists, timeout=60, every=1)
        assert host(name).file(f"{DAGS}/s3_hello.py").exists


ENDPOINT = yaml.safe_load(SPEC.read_text())["airstrip"]["endpoint_url"]
NAMESPACE = f"Airstrip/{scenario.ENV_NAME}"


def aws(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_log_groups_of_the_environment_in_cloudwatch():
    groups = {g["logGroupName"]: g for g in aws("logs").describe_log_groups(
        logGroupNamePrefix=f"airflow-{scenario.ENV_NAME}-")["logGroups"]}
    assert sorted(groups) == [f"airflow-{scenario.ENV_NAME}-{t}"
                              for t in ("DAGProcessing", "Scheduler", "Task", "WebServer", "Worker")]
    assert {g["retentionInDays"] for g in groups.values()} == {7}


def test_task_log_is_in_cloudwatch_and_readable_after_the_worker_stops():
    """The task's log streams to airflow-<env>-Task under the task's path (MWAA's stream name), and
    the REST API reads it from there while the worker that ran it is stopped."""
    api = login()
    run_id = run_dag(api, "s3_hello")
    stream = f"dag_id=s3_hello/run_id={run_id}/task_id=year/attempt=1.log".replace(":", "_")
    group = f"airflow-{scenario.ENV_NAME}-Task"

    def events_so_far():
        # The handler sends from its own thread: the stream may not exist yet when the run ends.
        try:
            return aws("logs").get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
        except aws("logs").exceptions.ResourceNotFoundException:
            return None

    events = wait_for("the task log in CloudWatch", events_so_far, timeout=60, every=2)
    lines = [json.loads(e["message"]).get("event", "") if e["message"].startswith("{") else e["message"]
             for e in events]
    line = next(x for x in lines if len(x) > 10)
    worker = host("worker")
    worker.check_output("systemctl stop airflow-celery-worker")
    try:
        log = json.dumps(api.call("GET", f"/dags/s3_hello/dagRuns/{run_id}/taskInstances/year/logs/1"))
        assert json.dumps(line)[1:-1] in log and f"Reading remote log from Cloudwatch log_group: {group}" in log, (line, log[:3000])
    finally:
        worker.check_output("systemctl start airflow-celery-worker")


def metric_names():
    metrics = aws("cloudwatch").list_metrics(Namespace=NAMESPACE)["Metrics"]
    return {m["MetricName"] for m in metrics
            if {"Name": "Environment", "Value": scenario.ENV_NAME} in m["Dimensions"]}


def test_mwaa_metrics_reach_cloudwatch_with_the_environment_dimension():
    wanted = {"QueuedTasks", "RunningTasks", "SchedulerHeartbeat", "TotalParseTime"}
    names = wait_for("MWAA's metrics in CloudWatch", lambda: metric_names() >= wanted and metric_names(),
                     timeout=120, every=5)
    # The spec's metrics.metrics_block_list (^pool\.), applied by the bridge.
    assert not {n for n in names if n.startswith("Pool")}, names


def test_prometheus_endpoint_answers_the_members_only():
    control = RUNNER.get_variables("control")["ansible_host"]
    text = host("worker").check_output(f"curl -sf http://{control}:9102/metrics")
    assert "airflow_scheduler_heartbeat" in text and 'environment="%s"' % scenario.ENV_NAME in text, text[:2000]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{control}:9102/metrics", timeout=5)


def test_rerun_changes_nothing_but_the_operation_records():
    """The first update after the create records UPDATE (a real change of the record); a second changes nothing."""
    result = scenario.playbook("update", SPEC)
    changed = [c for c in scenario.changed_tasks(result) if "operation : " not in c[1]]
    assert changed == [], changed
    assert scenario.changed_tasks(scenario.playbook("update", SPEC)) == []


def test_failing_startup_script_stops_the_update_and_changes_nothing():
    good = s3().get_object(Bucket=BUCKET, Key="startup.sh")["Body"].read()
    before = pids()
    try:
        s3().put_object(Bucket=BUCKET, Key="startup.sh", Body=b"echo preparing the host\nsleep 60\n")
        proc = scenario.run_playbook("update", SPEC, "-e", "airflow_startup_timeout=3")
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "The startup script s3://mol-s3-source/startup.sh ran longer than its 3 s limit" in out, out[-3000:]
        assert "preparing the host" in out

        s3().put_object(Bucket=BUCKET, Key="startup.sh", Body=b"echo 'cannot reach the artifact store' >&2\nexit 3\n")
        proc = scenario.run_playbook("update", SPEC)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "The startup script s3://mol-s3-source/startup.sh failed with exit code 3 on " in out, out[-3000:]
        assert "cannot reach the artifact store" in out
        assert scenario.info(SPEC)["status"] == "UPDATE_FAILED"

        assert pids() == before
        for name in DAG_HOSTS:
            assert host(name).file("/etc/airflow/startup.sh").content == good, name
        # The time limit given for the failed run never reached the units.
        unit = host("control").file("/etc/systemd/system/airflow-scheduler.service").content_string
        assert "ExecStartPre=/usr/bin/timeout 300 " in unit
    finally:
        s3().put_object(Bucket=BUCKET, Key="startup.sh", Body=good)


def test_broken_requirements_leave_the_running_version():
    good = s3().get_object(Bucket=BUCKET, Key="requirements.txt")["Body"].read()
    current = {name: host(name).file("/opt/airflow/current").linked_to for name in DAG_HOSTS}
    before = pids()
    s3().put_object(Bucket=BUCKET, Key="requirements.txt", Body=good + b"airstrip-no-such-package==1.0\n")
    try:
        proc = scenario.run_playbook("update", SPEC)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "requirements.txt from s3://mol-s3-source/requirements.txt cannot be installed" in out, out[-3000:]
        assert "airstrip-no-such-package" in out
        env = scenario.info(SPEC)
        assert env["status"] == "UPDATE_FAILED", env
        assert "airstrip-no-such-package" in env["last_update"]["error"], env
        # Every host's record holds the error, not only the one the controller's task ran for.
        for name in DAG_HOSTS:
            record = json.loads(host(name).file("/var/lib/airstrip/mol-s3_source/operation.json").content_string)
            assert record["status"] == "FAILED" and "airstrip-no-such-package" in record["error"], (name, record)
        assert pids() == before
        assert {name: host(name).file("/opt/airflow/current").linked_to for name in DAG_HOSTS} == current
        run_dag(login(), "s3_hello")
    finally:
        s3().put_object(Bucket=BUCKET, Key="requirements.txt", Body=good)
