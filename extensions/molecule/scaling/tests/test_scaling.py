"""Worker scaling, in order: the first deploy's state, a burst that starts the second worker
with every task succeeding, the surplus worker drained and stopped after the load with no task
failed, retried or killed, and a re-run of update that leaves the workers as the scaler keeps them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import scenario
from airflow_api import place_dag, wait_for
from scenario import host, login

SPEC = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "environment.yml"
WORKERS = ["worker1", "worker2"]
DAG_HOSTS = ["control", *WORKERS]
# mw1.micro: 3 slots a worker; 6 tasks need both workers.
BURST = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="burst", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, max_active_tasks=16)
def burst():
    @task
    def work(i):
        import socket
        import time

        time.sleep(40)
        return socket.gethostname()

    work.expand(i=list(range(6)))


burst()
'''


def running_workers() -> list[str]:
    return [w for w in WORKERS if host(w).service("airflow-celery-worker").is_running]


def scaler_status() -> dict:
    return json.loads(host("control").file("/run/airstrip-scaler/status.json").content_string)


def test_first_deploy_runs_min_workers_and_the_scaler_and_gates():
    assert running_workers() == ["worker1"]
    assert host("control").service("airstrip-scaler").is_running
    for w in WORKERS:
        gate = host(w).service("airstrip-worker-gate")
        assert gate.is_running and gate.is_enabled, w
        # The gate starts the worker at boot when the scaler wants it, not systemd.
        assert not host(w).service("airflow-celery-worker").is_enabled, w
        unit = host(w).check_output("systemctl show -p KillMode -p TimeoutStopUSec airflow-celery-worker")
        assert "KillMode=mixed" in unit and "TimeoutStopUSec=12h" in unit, unit
    status = wait_for("the scaler to lead", lambda: scaler_status().get("leader") and scaler_status(), timeout=60)
    print(json.dumps(status, indent=1))


def test_a_burst_starts_the_second_worker_and_every_task_succeeds():
    api = login()
    for name in DAG_HOSTS:
        place_dag(host(name), "burst", BURST)
    wait_for("burst to be parsed", lambda: api.call("GET", "/dags/burst"), timeout=120)
    api.call("PATCH", "/dags/burst", {"is_paused": False})
    run_id = api.call("POST", "/dags/burst/dagRuns", {"logical_date": None})["dag_run_id"]
    started = time.monotonic()
    wait_for("the second worker to start", lambda: running_workers() == WORKERS, timeout=120, every=1)
    print(f"backlog -> second worker running: {time.monotonic() - started:.1f} s")

    def finished():
        run = api.call("GET", f"/dags/burst/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_for("the burst to finish", finished, timeout=400)
    tis = api.call("GET", f"/dags/burst/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert run["state"] == "success", [(t["map_index"], t["state"], t["hostname"]) for t in tis]
    assert [(t["state"], t["try_number"]) for t in tis] == [("success", 1)] * 6
    assert len({t["hostname"] for t in tis}) == 2, [t["hostname"] for t in tis]


def test_after_the_load_the_surplus_worker_drains_and_stops_killing_nothing():
    stopped = wait_for("one worker to be drained and stopped", lambda: len(running_workers()) == 1
                       and [w for w in WORKERS if w not in running_workers()], timeout=180, every=2)
    journal = host(stopped[0]).check_output("journalctl -u airflow-celery-worker --no-pager -o cat")
    assert "WorkerLostError" not in journal and "SIGKILL" not in journal, journal[-3000:]
    api = login()
    runs = api.call("GET", "/dags/burst/dagRuns")["dag_runs"]
    tis = api.call("GET", f"/dags/burst/dagRuns/{runs[0]['dag_run_id']}/taskInstances")["task_instances"]
    assert [(t["state"], t["try_number"]) for t in tis] == [("success", 1)] * 6

    # The scaler sees the stop at its next tick (scaling_interval).
    def counts():
        status = scaler_status()
        return (status.get("num_workers"), status.get("desired_workers"))
    wait_for("the scaler to count one worker", lambda: counts() == (1, 1), timeout=30, every=1)


def test_a_rerun_leaves_the_workers_as_the_scaler_keeps_them():
    before = running_workers()
    result = scenario.playbook("update", SPEC)
    changed = [c for c in scenario.changed_tasks(result) if "operation : " not in c[1]]
    assert changed == [], changed
    assert running_workers() == before


def test_info_reports_the_scalers_view():
    env = scenario.info(SPEC)
    assert env["status"] == "AVAILABLE", env
    view = env["scaling"]
    assert (view["host"], view["num_workers"], view["desired_workers"], view["healthy"]) == ("control", 1, 1, True), view
    assert view["reason"], view
