"""An environment's life from its spec, in order: create (done by converge), status, update
an option while a task runs, change the worker count (as an AWX job from an empty home: the
secrets are taken back from the hosts), delete, and create, status and delete again as AWX jobs.

The tests depend on each other's order, as the steps of a life do.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import scenario
import yaml
from airflow_api import place_dag, wait_for
from scenario import ENV_NAME, RUNNER, SECRETS, awx_job, host, login, pids

from ansible_collections.airstrip.airflow.plugins.module_utils._config import fernet_key

SPEC = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "environment.yml"
DAG_ID = "airstrip_long"
DAG = f'''
import time
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def airstrip_long():
    @task
    def long_running():
        time.sleep(40)
        return "done"

    long_running()


airstrip_long()
'''


def playbook(name, tmp_path, spec=None, *extra):
    spec_file = SPEC
    if spec is not None:
        spec_file = tmp_path / "environment.yml"
        spec_file.write_text(yaml.safe_dump(spec))
    return scenario.playbook(name, spec_file, *extra)


def info(tmp_path):
    return scenario.info(SPEC)


# What the updates so far changed, so that each later spec keeps it.
APPLIED = {}


def spec(**changes):
    doc = yaml.safe_load(SPEC.read_text())
    for key, value in dict(APPLIED, **changes).items():
        if isinstance(value, dict):
            doc[key] = dict(doc.get(key, {}), **value)
        else:
            doc[key] = value
    return doc


def test_created_environment_is_available(tmp_path):
    env = info(tmp_path)
    assert env["status"] == "AVAILABLE", env
    assert env["last_update"]["operation"] == "CREATE" and env["last_update"]["status"] == "SUCCESS"
    assert env["airflow_version"] == "3.3.2"
    assert env["workers"] == 1
    # min_workers=1: the first worker host works, the second stands by.
    assert host("worker1").service("airflow-celery-worker").is_running
    assert not host("worker2").service("airflow-celery-worker").is_running


def test_an_awx_info_job_publishes_the_status_and_an_unknown_environment_fails(tmp_path):
    job = awx_job("info", {"airstrip_env_name": ENV_NAME})
    assert job["rc"] == 0, job["stdout"][-3000:]
    env = job["stats"]["airstrip_status"]
    web = RUNNER.get_variables("control")["ansible_host"]
    assert env["name"] == ENV_NAME and env["status"] == "AVAILABLE" and env["airflow_version"] == "3.3.2", env
    assert env["workers"] == 1 and env["webserver_url"] == f"http://{web}:8080", env
    assert env["last_update"]["operation"] == "CREATE", env
    assert job["stats"]["airstrip_env_name"] == ENV_NAME

    unknown = awx_job("info", {"airstrip_env_name": "mol-nobody"})
    assert unknown["rc"] != 0 and "environment mol-nobody not found" in unknown["stdout"], unknown["stdout"][-3000:]
    assert "airstrip_status" not in unknown["stats"]


def test_option_update_restarts_only_its_readers_and_the_running_task_succeeds(tmp_path):
    for name in ("control", "worker1", "worker2"):
        place_dag(host(name), DAG_ID, DAG)
    api = login()
    wait_for("the DAG to be parsed", lambda: api.call("GET", f"/dags/{DAG_ID}"))
    api.call("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run_id = api.call("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})["dag_run_id"]
    ti_path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/long_running"
    wait_for("the long task to run", lambda: api.call("GET", ti_path)["state"] == "running")
    before = pids()

    # celery.* is read by the Celery workers and the scheduler only.
    playbook("update", tmp_path, spec(airflow_configuration_options={"celery.worker_prefetch_multiplier": "2"}))

    after = pids()
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [("control", "scheduler"), ("worker1", "celery-worker")], changed
    api = login()

    def finished():
        ti = api.call("GET", ti_path)
        return ti if ti["state"] in ("success", "failed", "up_for_retry") else None

    ti = wait_for("the long task to finish", finished)
    assert ti["state"] == "success" and ti["try_number"] == 1, ti
    assert "worker_prefetch_multiplier = 2" in host("worker1").check_output("cat /etc/airflow/celery-worker.cfg")
    assert "worker_prefetch_multiplier" not in host("control").check_output("cat /etc/airflow/api-server.cfg")
    env = info(tmp_path)
    assert env["status"] == "AVAILABLE" and env["last_update"]["operation"] == "UPDATE", env


def changed_units(before, after):
    return sorted(k for k in before if before[k] != after[k])


def window(hours_from_now):
    """A weekly_maintenance_window_start that opens at the half hour around now + hours_from_now."""
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours_from_now)
    return "%s:%02d:%s" % (("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")[at.weekday()], at.hour,
                           "00" if at.minute < 30 else "30")


AIRFLOW_CLI = ("cd /var/lib/airflow && runuser -u airflow -- env AIRFLOW_HOME=/var/lib/airflow "
               "AIRFLOW_CONFIG=/etc/airflow/airflow.cfg /opt/airflow/current/bin/airflow")
KEPT_CONNECTION = "airstrip_kept"


def kept_connection_password():
    out = host("control").check_output(f"{AIRFLOW_CLI} connections get {KEPT_CONNECTION} -o json")
    return json.loads(out[out.index("["):])[0]["password"]


def test_worker_count_change_from_an_awx_job_with_an_empty_home_keeps_the_secrets(tmp_path):
    """The update runs as an AWX job: the spec inline (a survey's text), the controller's
    secrets file absent (an empty home). The hosts' secrets are taken back, not generated
    anew: only the new worker starts, the admin's password still logs in and a connection
    encrypted with the Fernet key before still decrypts."""
    APPLIED["airflow_configuration_options"] = {"celery.worker_prefetch_multiplier": "2"}
    host("control").check_output(f"{AIRFLOW_CLI} connections add {KEPT_CONNECTION} --conn-type http "
                                 "--conn-host kept.example.internal --conn-password KeptPassword0123")
    before_secrets = scenario.secrets()
    before = pids()
    job = awx_job("update", {"airstrip_spec": yaml.safe_dump(spec(min_workers=2))})
    assert job["rc"] == 0, job["stdout"][-5000:]
    APPLIED["min_workers"] = 2
    after = pids()
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [("worker2", "celery-worker")], changed
    assert host("worker2").service("airflow-celery-worker").is_running
    assert job["stats"]["airstrip_status"]["workers"] == 2, job["stats"]
    assert "was missing: it was written again" in job["stdout"]

    # The job's new file holds the hosts' secrets, the Fernet key itself for its seed.
    rewritten = job["home"] / ".airstrip" / ENV_NAME / "secrets.yml"
    assert oct(rewritten.stat().st_mode & 0o777) == "0o600"
    vault = scenario.VaultLib([("default", scenario.VaultSecret(scenario.VAULT_PASSWORD_FILE.read_bytes().strip()))])
    kept = yaml.safe_load(vault.decrypt(rewritten.read_bytes()))
    expected = {k: v for k, v in before_secrets.items() if k != "fernet_seed"}
    expected["fernet_key"] = fernet_key(before_secrets["fernet_seed"])
    assert kept == expected, sorted(k for k in expected if kept.get(k) != expected[k])
    assert kept_connection_password() == "KeptPassword0123"
    login().call("GET", "/dags")
    assert info(tmp_path)["workers"] == 2


def test_update_outside_the_maintenance_window_is_refused_before_any_host(tmp_path):
    before = pids()
    spec_file = tmp_path / "environment.yml"
    spec_file.write_text(yaml.safe_dump(spec(weekly_maintenance_window_start=window(12), worker_concurrency=3)))
    proc = scenario.run_playbook("update", spec_file)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "weekly_maintenance_window_start: it is " in output and "outside the maintenance window" in output, \
        output[-3000:]
    assert "airstrip_ignore_maintenance_window=true" in output
    assert pids() == before
    assert "worker_concurrency = 5" in host("worker1").check_output("cat /etc/airflow/celery-worker.cfg")


def test_worker_concurrency_change_restarts_only_the_workers(tmp_path):
    """In the maintenance window (it opened at the last half hour), the update goes on."""
    before = pids()
    playbook("update", tmp_path, spec(weekly_maintenance_window_start=window(0), worker_concurrency=3))
    APPLIED.update(weekly_maintenance_window_start=window(0), worker_concurrency=3)
    after = pids()
    assert changed_units(before, after) == [("worker1", "celery-worker"), ("worker2", "celery-worker")]
    for name in ("worker1", "worker2"):
        assert "worker_concurrency = 3" in host(name).check_output("cat /etc/airflow/celery-worker.cfg")
    for cfg in ("scheduler", "dag-processor", "triggerer", "api-server"):
        assert "worker_concurrency" not in host("control").check_output(f"cat /etc/airflow/{cfg}.cfg"), cfg


def test_log_level_change_restarts_only_its_component(tmp_path):
    before = pids()
    playbook("update", tmp_path, spec(logging={"dag_processing": {"level": "DEBUG"}}),
             "-e", "airstrip_ignore_maintenance_window=true")
    after = pids()
    assert changed_units(before, after) == [("control", "dag-processor")]
    control = host("control")
    assert "logging_level = DEBUG" in control.check_output("cat /etc/airflow/dag-processor.cfg")
    assert "logging_level = INFO" in control.check_output("cat /etc/airflow/scheduler.cfg")
    # It logs at DEBUG now (Airflow 3 writes the level as DEBUG, or structlog's [debug ]); at
    # INFO, before the update, it wrote none.

    def debug_lines():
        out = control.check_output("journalctl -u airflow-dag-processor --no-pager -o cat --since '-2min'")
        return "DEBUG" in out or "[debug" in out

    wait_for("a DEBUG line from the restarted DAG processor", debug_lines, timeout=120)


def test_spec_needing_more_hosts_is_refused(tmp_path):
    spec_file = tmp_path / "environment.yml"
    spec_file.write_text(yaml.safe_dump(spec(max_workers=3)))
    proc = scenario.run_playbook("update", spec_file)
    assert proc.returncode != 0
    assert "max_workers: 3 needs as many hosts in inventory group airflow_worker, found 2" in proc.stdout + proc.stderr


def test_delete_leaves_nothing_of_airflow(tmp_path):
    playbook("delete", tmp_path, None, "-e", "airstrip_delete_data=true")
    for name in RUNNER.get_hosts("all"):
        h = host(name)
        assert h.check_output("ls /etc/systemd/system | grep -c '^airflow-' || true") == "0"
        for path in ("/etc/airflow", "/opt/airflow", "/var/lib/airflow", "/var/lib/airflow-log-server",
                     "/etc/redis/airstrip.conf"):
            assert not h.file(path).exists, f"{path} left on {name}"
        assert not h.user("airflow").exists and not h.user("airflow-logs").exists
        assert not h.process.filter(comm="postgres") and not h.process.filter(comm="redis-server")
    assert not SECRETS.exists()
    env = info(tmp_path)
    assert env["status"] == "DELETED", env
    assert env["workers"] == 0


def test_awx_jobs_create_from_a_project_file_and_delete_from_empty_homes(tmp_path):
    """create with a relative spec path (resolved in the job's project checkout), then delete with
    the spec inline, each from an empty home."""
    job = awx_job("create", {"airstrip_spec_file": "specs/environment.yml"},
                  {"specs/environment.yml": SPEC.read_text()})
    assert job["rc"] == 0, job["stdout"][-5000:]
    env = job["stats"]["airstrip_status"]
    assert env["status"] == "AVAILABLE" and env["last_update"]["operation"] == "CREATE", env
    assert (job["home"] / ".airstrip" / ENV_NAME / "secrets.yml").exists()
    assert host("worker1").service("airflow-celery-worker").is_running

    gone = awx_job("delete", {"airstrip_spec": SPEC.read_text(), "airstrip_delete_data": True})
    assert gone["rc"] == 0, gone["stdout"][-5000:]
    assert not host("control").file("/etc/airflow").exists
    assert info(tmp_path)["status"] == "DELETED"
