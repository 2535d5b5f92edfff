"""Driving a deployed environment from the controller: its REST API, DAG files, waiting.

Shared by the scenarios' tests (lifecycle adds this folder to its import path).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request


class Api:
    """Airflow 3's REST API, with a token from /auth/token."""

    def __init__(self, base: str, user: str, password: str):
        self.base = base
        body = json.dumps({"username": user, "password": password}).encode()
        req = urllib.request.Request(f"{base}/auth/token", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(
            f"{self.base}/api/v2{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def text(self, path: str) -> str:
        req = urllib.request.Request(f"{self.base}/api/v2{path}", headers={
            "Authorization": f"Bearer {self.token}", "Accept": "text/plain"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read().decode(errors="replace")[-3000:]
        except urllib.error.URLError as exc:
            return f"(no log: {exc})"


def wait_for(what: str, func, timeout: float = 240, every: float = 3):
    """Call func until it returns something true; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = func()
            if last:
                return last
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def place_dag(host, dag_id: str, source: str) -> None:
    """Write a DAG file on a host atomically (temporary name, then rename), owned by airflow."""
    dest = f"/var/lib/airflow/dags/{dag_id}.py"
    encoded = base64.b64encode(source.encode()).decode()
    host.check_output(f"echo {encoded} | base64 -d > {dest}.tmp && chown airflow:airflow {dest}.tmp"
                      f" && mv {dest}.tmp {dest}")
