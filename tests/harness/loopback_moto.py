"""An emulated AWS endpoint (moto's server, see emulated_aws.py) on loopback, for integration tests and benchmarks
that need AWS APIs but no test hosts. Test hosts use the one `testhosts.py up --moto` starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start moto_server on a free loopback port; returns the process and its URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("emulated_aws.py")), "-H", "127.0.0.1", "-p", str(port)],
                            env=dict(os.environ, **(extra_env or {})),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _attempt in range(150):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"moto_server did not start on {url}")


@contextmanager
def running(extra_env: dict | None = None):
    proc, url = start(extra_env)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
