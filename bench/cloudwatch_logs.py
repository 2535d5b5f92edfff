"""Benchmark: how soon the environment's logs are in CloudWatch (goal: p95 <= 5 s; MWAA's
handler sends every 10 s).

On the environment of `make up` (brought up when it is not there), whose task logs go to the
emulated CloudWatch: runs the local DAG BENCH_RUNS times (default 10) and prints, p50/p95,
  - task end -> last line: from the task instance's end_date to the ingestion of the last
    event of its stream in airflow-<env>-Task;
  - task line -> event: from each task log line's own timestamp to its ingestion.
The components' lines reach CloudWatch through the CloudWatch agent, whose package cannot be
had offline: that figure is measured only when the local environment runs the agent (spec
airstrip.cloudwatch.agent: true), else reported as not measured. Not a test: it prints figures.

    .venv/bin/python bench/cloudwatch_logs.py        (or: make bench-logs)
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ.get("LOCAL_ENV", "local")
DAG = "airstrip_hello"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(name: str, values: list[float]) -> str:
    return (f"{name}: p50 {statistics.median(values):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
            f"max {max(values):.2f} s over {len(values)}")


class Api:
    def __init__(self, base: str, password: str):
        self.base = base
        body = json.dumps({"username": "admin", "password": password}).encode()
        req = urllib.request.Request(f"{base}/auth/token", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{self.base}/api/v2{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")


def wait(what: str, func, timeout: float = 180, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = func()
        except urllib.error.HTTPError:
            found = None
        if found:
            return found
        time.sleep(every)
    sys.exit(f"timed out waiting for {what}")


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "10"))
    inventory = ROOT / "local" / ENV / "inventory.json"
    spec_file = inventory.parent / "environment.yml"
    if not spec_file.exists():
        subprocess.run([sys.executable, str(ROOT / "tests" / "harness" / "local_env.py"), "up", ENV], check=True)
    spec = yaml.safe_load(spec_file.read_text())
    endpoint = spec["airstrip"]["endpoint_url"]
    inv = json.loads(inventory.read_text())["all"]
    vault_file = Path(os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE", Path.home() / ".airstrip" / "vault-password"))
    vault = VaultLib([("default", VaultSecret(vault_file.read_bytes().strip()))])
    secrets = yaml.safe_load(vault.decrypt((Path.home() / ".airstrip" / ENV / "secrets.yml").read_bytes()))
    api = Api(f"http://{inv['hosts']['web']['ansible_host']}:8080", secrets["admin_password"])
    logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    group = f"airflow-{ENV}-Task"

    wait(f"{DAG} to be parsed", lambda: api.call("GET", f"/dags/{DAG}"))
    api.call("PATCH", f"/dags/{DAG}", {"is_paused": False})
    to_last, per_line = [], []
    for i in range(runs):
        run_id = api.call("POST", f"/dags/{DAG}/dagRuns", {"logical_date": None})["dag_run_id"]
        wait(f"run {run_id}", lambda: api.call("GET", f"/dags/{DAG}/dagRuns/{run_id}")["state"] in ("success", "failed"))
        (ti,) = api.call("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
        ended = datetime.datetime.fromisoformat(ti["end_date"].replace("Z", "+00:00")).timestamp()
        stream = f"dag_id={DAG}/run_id={run_id}/task_id={ti['task_id']}/attempt={ti['try_number']}.log".replace(":", "_")
        # The stream is complete once it exists and stops growing for 2 s.
        seen, stable_since, events = -1, time.monotonic(), []
        while not events or time.monotonic() - stable_since < 2:
            try:
                events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
            except logs.exceptions.ResourceNotFoundException:  # not sent yet
                events = []
            if len(events) != seen:
                seen, stable_since = len(events), time.monotonic()
            time.sleep(0.2)
        if not events:
            sys.exit(f"no events in {group}/{stream}: are the task logs going to CloudWatch?")
        to_last.append(max(e["ingestionTime"] for e in events) / 1000 - ended)
        per_line += [(e["ingestionTime"] - e["timestamp"]) / 1000 for e in events]
        print(f"run {i + 1}: {len(events)} lines, last ingested {to_last[-1]:+.2f} s after the task's end", flush=True)
    print(figures("task end -> last line in CloudWatch", to_last) + " (goal p95 <= 5 s)")
    print(figures("task log line -> CloudWatch event", per_line) + " (goal p95 <= 5 s)")
    if (spec["airstrip"].get("cloudwatch") or {}).get("agent", True):
        component = []
        for kind in ("Scheduler", "DAGProcessing", "WebServer", "Worker"):
            name = f"airflow-{ENV}-{kind}"
            for stream in logs.describe_log_streams(logGroupName=name)["logStreams"]:
                events = logs.get_log_events(logGroupName=name, logStreamName=stream["logStreamName"])["events"]
                component += [(e["ingestionTime"] - e["timestamp"]) / 1000 for e in events]
        print(figures("component line -> CloudWatch event", component) + " (goal p95 <= 5 s)")
    else:
        print("component line -> CloudWatch event: not measured (the CloudWatch agent's package cannot be had "
              "offline, so the local environment runs without it)")


if __name__ == "__main__":
    main()
