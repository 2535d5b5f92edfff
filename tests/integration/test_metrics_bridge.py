"""The metrics bridge's agent, run as on a host, against the emulated CloudWatch (moto_server):
Airflow's StatsD packets in over UDP, MWAA's metrics out in CloudWatch and on /metrics."""

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _metrics

AGENT = _metrics.__file__
ENV = "bridge-test"
NAMESPACE = "Airstrip/" + ENV

# One scheduler loop's worth of Airflow 3.3.2 StatsD (statsd_influxdb_enabled, legacy_names_on).
PACKETS = [
    b"airflow.executor.open_slots,status=open,executor_class_name=CeleryExecutor:30|g\n"
    b"airflow.executor.open_slots.CeleryExecutor,status=open,executor_class_name=CeleryExecutor:30|g\n"
    b"airflow.executor.queued_tasks,status=queued,executor_class_name=CeleryExecutor:4|g\n"
    b"airflow.executor.queued_tasks.CeleryExecutor,status=queued,executor_class_name=CeleryExecutor:4|g\n"
    b"airflow.executor.running_tasks,status=running,executor_class_name=CeleryExecutor:2|g",
    b"airflow.scheduler_heartbeat:1|c",
    b"airflow.scheduler_heartbeat:1|c",
    b"airflow.dag_processing.total_parse_time:0.75|g",
    b"airflow.pool.open_slots,pool_name=default_pool:128|g\nairflow.pool.open_slots.default_pool,pool_name=default_pool:128|g",
    b"airflow.task.duration,dag_id=etl,task_id=load:1500|ms",
    b"this is not statsd",
]


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def read_status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@pytest.fixture
def agent(moto_url, tmp_path):
    """Start the agent; yields (process, status file, UDP address, Prometheus URL)."""
    status = str(tmp_path / "status.json")
    proc = subprocess.Popen(
        [sys.executable, AGENT, "agent", "--listen", "127.0.0.1:0", "--environment", ENV, "--namespace", NAMESPACE,
         "--endpoint-url", moto_url, "--region", "us-east-1", "--interval", "2", "--prometheus", "127.0.0.1:0",
         "--block-list", "pool", "--host", "sched-1", "--status-file", status],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        first = wait_for(lambda: read_status(status) or proc.poll() is not None, 15, "the agent's status file")
        assert proc.poll() is None, proc.stdout.read()
        host, port = first["listen"].rsplit(":", 1)
        yield proc, status, (host, int(port)), "http://%s/metrics" % first["prometheus"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def send(address, packets):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for packet in packets:
            s.sendto(packet, address)


def test_airflow_statsd_reaches_cloudwatch_and_prometheus(moto_url, agent):
    proc, status, address, metrics_url = agent
    cw = boto3.client("cloudwatch", endpoint_url=moto_url)
    send(address, PACKETS)
    state = wait_for(lambda: (read_status(status) or {}).get("datums_sent", 0) >= 5 and read_status(status), 15,
                     "the first PutMetricData")
    assert state["healthy"] is True and state["last_error"] is None
    assert state["packets"] == len(PACKETS) and state["bad_lines"] == 1 and state["legacy_lines"] == 3
    assert state["filtered_lines"] == 1  # pool.open_slots, block-listed

    metrics = cw.list_metrics(Namespace=NAMESPACE)["Metrics"]
    found = dict((m["MetricName"], dict((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in metrics)
    assert set(found) == {"OpenSlots", "QueuedTasks", "RunningTasks", "SchedulerHeartbeat", "TotalParseTime",
                          "TaskInstanceDuration"}
    assert found["QueuedTasks"] == {"Environment": ENV, "Function": "Executor"}
    assert found["SchedulerHeartbeat"] == {"Environment": ENV, "Function": "Scheduler"}
    assert found["TotalParseTime"] == {"Environment": ENV, "Function": "DAG Processing"}
    assert found["TaskInstanceDuration"] == {"Environment": ENV, "DAG": "etl", "Task": "load"}

    now = datetime.datetime.now(datetime.timezone.utc)

    def stats(name, statistics, unit=None):
        dims = [{"Name": k, "Value": v} for k, v in found[name].items()]
        kwargs = {"Unit": unit} if unit else {}
        points = cw.get_metric_statistics(Namespace=NAMESPACE, MetricName=name, Dimensions=dims,
                                          StartTime=now - datetime.timedelta(minutes=5),
                                          EndTime=now + datetime.timedelta(minutes=5), Period=60,
                                          Statistics=statistics, **kwargs)["Datapoints"]
        assert len(points) == 1, points
        return points[0]

    queued = stats("QueuedTasks", ["Maximum", "SampleCount"])
    assert (queued["Maximum"], queued["SampleCount"]) == (4.0, 1.0)  # the legacy line is not counted
    assert stats("SchedulerHeartbeat", ["Sum"])["Sum"] == 2.0
    assert stats("TotalParseTime", ["Average"], "Seconds")["Average"] == 0.75
    assert stats("TaskInstanceDuration", ["Maximum"], "Milliseconds")["Maximum"] == 1500.0

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    assert 'airflow_executor_queued_tasks{environment="%s",executor_class_name="CeleryExecutor",status="queued"} 4' \
        % ENV in text
    assert 'airflow_scheduler_heartbeat{environment="%s"} 2' % ENV in text
    assert 'airflow_dag_processing_total_parse_time{environment="%s"} 0.75' % ENV in text
    assert "airflow_pool_open_slots" not in text and "CeleryExecutor{" not in text
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(metrics_url.replace("/metrics", "/other"), timeout=5)
    assert e.value.code == 404

    # SIGTERM: what came since the last flush is still sent, and the agent exits 0.
    sent = read_status(status)["datums_sent"]
    send(address, [b"airflow.dagbag_size:7|g"])
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert read_status(status)["datums_sent"] >= sent + 1
    assert "DagBagSize" in [m["MetricName"] for m in cw.list_metrics(Namespace=NAMESPACE)["Metrics"]]


def test_cloudwatch_down_is_reported_and_retried(tmp_path):
    """Nothing listens on the endpoint: the agent stays up, unhealthy, with its backlog."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    status = str(tmp_path / "status.json")
    proc = subprocess.Popen([sys.executable, AGENT, "agent", "--listen", "127.0.0.1:0", "--environment", ENV,
                             "--namespace", NAMESPACE, "--endpoint-url", dead, "--region", "us-east-1",
                             "--interval", "1", "--status-file", status],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = wait_for(lambda: read_status(status), 15, "the agent's status file")
        host, port = first["listen"].rsplit(":", 1)
        send((host, int(port)), [b"airflow.scheduler_heartbeat:1|c"])
        state = wait_for(lambda: (read_status(status) or {}).get("errors", 0) >= 1 and read_status(status), 25,
                         "a failed PutMetricData")
        assert state["healthy"] is False and state["backlog"] == 1 and "kept for the next try" in state["last_error"]
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "ERROR cannot put metrics in CloudWatch namespace %s" % NAMESPACE in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
