"""Worker scaling, in order: the first deploy's state; a burst that starts the second worker
with every task succeeding; after the load, the idle worker drained and stopped while a long
task finishes on the other, no task failed, retried or killed; a re-run of update that leaves
the workers as the scaler keeps them; scale to zero and back (min_workers 0: the last worker
stops, a task on the queue only worker2 serves starts worker2, its log is read from the stopped
worker's host); a task on a queue no host serves is reported.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

import scenario
from airflow_api import place_dag, wait_for
from scenario import host, login

SPEC = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "environment.yml"
WORKERS = ["worker1", "worker2"]
DAG_HOSTS = ["control", *WORKERS]
# mw1.micro: 3 slots a worker; 6 tasks need both workers. The first is long: demand drops
# while it runs, and the worker running it must be kept.
LONG_TASK_SECONDS = 150
BURST = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="burst", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, max_active_tasks=16)
def burst():
    @task
    def work(i):
        import socket
        import time

        time.sleep(%d if i == 0 else 40)
        return socket.gethostname()

    work.expand(i=list(range(6)))


burst()
''' % LONG_TASK_SECONDS
# One task on a queue: 'reports' (only worker2 serves it) or 'nowhere' (no host does).
ON_QUEUE = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="on_QUEUE", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def on_queue():
    @task(queue="QUEUE")
    def report():
        print("report written on the QUEUE queue")

    report()


on_queue()
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
        unit = host(w).check_output("systemctl show -p KillMode -p TimeoutStopUSec -p ExecStart airflow-celery-worker")
        assert "KillMode=mixed" in unit and "TimeoutStopUSec=12h" in unit, unit
        # Each host's queues (the inventory's airflow_worker_queues); the host's task logs are
        # served by a unit of their own, up while the scaler keeps the worker stopped.
        queues = {"worker1": "default", "worker2": "default,reports"}[w]
        assert f"--queues {queues} --skip-serve-logs" in unit, unit
        assert host(w).service("airflow-log-server").is_running, w
    status = wait_for("the scaler to lead", lambda: scaler_status().get("leader") and scaler_status(), timeout=60)
    print(json.dumps(status, indent=1))


def test_a_burst_starts_the_second_worker_and_the_short_tasks_succeed():
    api = login()
    for name in DAG_HOSTS:
        place_dag(host(name), "burst", BURST)
    wait_for("burst to be parsed", lambda: api.call("GET", "/dags/burst"), timeout=120)
    api.call("PATCH", "/dags/burst", {"is_paused": False})
    run_id = api.call("POST", "/dags/burst/dagRuns", {"logical_date": None})["dag_run_id"]
    started = time.monotonic()
    wait_for("the second worker to start", lambda: running_workers() == WORKERS, timeout=120, every=1)
    print(f"backlog -> second worker running: {time.monotonic() - started:.1f} s")

    def short_ones_done():
        tis = api.call("GET", f"/dags/burst/dagRuns/{run_id}/taskInstances")["task_instances"]
        short = [t for t in tis if t["map_index"] != 0]
        return tis if all(t["state"] in ("success", "failed") for t in short) else None

    tis = wait_for("the short tasks to finish", short_ones_done, timeout=300)
    assert [(t["state"], t["try_number"]) for t in tis if t["map_index"] != 0] == [("success", 1)] * 5, tis
    assert len({t["hostname"] for t in tis}) == 2, [t["hostname"] for t in tis]


def burst_tasks(api) -> list[dict]:
    runs = api.call("GET", "/dags/burst/dagRuns")["dag_runs"]
    return api.call("GET", f"/dags/burst/dagRuns/{runs[0]['dag_run_id']}/taskInstances")["task_instances"]


def test_while_a_long_task_runs_the_idle_worker_is_the_one_drained():
    api = login()
    long_task = [t for t in burst_tasks(api) if t["map_index"] == 0][0]
    busy = next(w for w in WORKERS if long_task["hostname"].startswith(w))
    stopped = wait_for("one worker to be drained and stopped", lambda: len(running_workers()) == 1
                       and [w for w in WORKERS if w not in running_workers()], timeout=180, every=2)
    assert stopped == [w for w in WORKERS if w != busy], (stopped, busy)
    # Drained while the long task still ran on the other worker.
    assert [t["state"] for t in burst_tasks(api) if t["map_index"] == 0] == ["running"]
    journal = host(stopped[0]).check_output("journalctl -u airflow-celery-worker --no-pager -o cat")
    assert "WorkerLostError" not in journal and "SIGKILL" not in journal, journal[-3000:]


def test_after_the_load_nothing_was_failed_retried_or_killed():
    api = login()
    wait_for("the long task to finish", lambda: all(t["state"] == "success" for t in burst_tasks(api)),
             timeout=LONG_TASK_SECONDS + 60, every=2)
    assert [(t["state"], t["try_number"]) for t in burst_tasks(api)] == [("success", 1)] * 6

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


def spec_with(path: Path, **fields) -> Path:
    doc = yaml.safe_load(SPEC.read_text())
    doc.update(fields)
    path.write_text(yaml.safe_dump(doc))
    return path


def run_on(api, queue: str) -> str:
    dag_id = f"on_{queue}"
    for name in DAG_HOSTS:
        place_dag(host(name), dag_id, ON_QUEUE.replace("QUEUE", queue))
    wait_for(f"{dag_id} to be parsed", lambda: api.call("GET", f"/dags/{dag_id}"), timeout=120)
    api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    return api.call("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]


def test_with_min_workers_0_the_last_worker_stops(tmp_path_factory):
    spec = spec_with(tmp_path_factory.mktemp("zero") / "environment.yml", min_workers=0)
    scenario.playbook("update", spec)
    wait_for("every worker to be drained and stopped", lambda: running_workers() == [], timeout=180, every=2)

    def counts():
        status = scaler_status()
        return (status.get("num_workers"), status.get("desired_workers"))
    wait_for("the scaler to count none", lambda: counts() == (0, 0), timeout=30, every=1)
    for w in WORKERS:
        # The host still serves its task logs.
        assert host(w).service("airflow-log-server").is_running, w


def test_from_zero_a_task_on_a_queue_starts_the_worker_serving_it_and_its_log_stays_readable():
    api = login()
    started = time.monotonic()
    run_id = run_on(api, "reports")

    def finished():
        run = api.call("GET", f"/dags/on_reports/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_for("the reports run to finish", finished, timeout=240, every=2)
    print(f"zero workers -> task done: {time.monotonic() - started:.1f} s")
    ti = api.call("GET", f"/dags/on_reports/dagRuns/{run_id}/taskInstances")["task_instances"][0]
    assert (run["state"], ti["state"], ti["try_number"]) == ("success", "success", 1), ti
    assert ti["hostname"].startswith("worker2"), ti["hostname"]
    # Only worker2 serves 'reports': worker1 stayed stopped.
    assert "worker1" not in running_workers()
    # Back to zero, and the task's log still comes from worker2's host.
    wait_for("worker2 to be stopped again", lambda: running_workers() == [], timeout=180, every=2)
    log = json.dumps(api.call("GET", f"/dags/on_reports/dagRuns/{run_id}/taskInstances/report/logs/1"))
    assert "report written on the reports queue" in log, log[-2000:]
    assert "Could not read served logs" not in log, log[-2000:]


def test_a_task_on_a_queue_no_host_serves_is_reported():
    api = login()
    run_id = run_on(api, "nowhere")
    status = wait_for("the scaler to report the queue",
                      lambda: scaler_status().get("unserved_queues", {}).get("nowhere") and scaler_status(),
                      timeout=120, every=2)
    assert "UNSERVED" in status["reason"] and "nowhere" in status["reason"], status["reason"]
    journal = host("control").check_output("journalctl -u airstrip-scaler --no-pager -o cat")
    assert "UNSERVED queue(s) no worker host serves: nowhere (1 task(s))" in journal, journal[-2000:]
    # Nothing started for it.
    assert running_workers() == []
    api.call("PATCH", f"/dags/on_nowhere/dagRuns/{run_id}", {"state": "failed"})
