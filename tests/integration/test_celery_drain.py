"""The gate's drain against a real Celery worker on a real Redis, without Airflow.

A Celery app with Airflow's Celery settings (acks_late, prefetch multiplier 1, a day's
visibility timeout, concurrency 2, queue ``default``); tasks that sleep 8 s in a pool child
whose SIGTERM handler exits non-zero, as Airflow 3.3.2's task supervisor turns a SIGTERM into
a killed task.

* Case A: the drain the gate runs (cancel_consumer, wait, idle twice, then SIGTERM to the main
  process only, as systemd does with KillMode=mixed): both running tasks succeed, the three
  queued messages stay in Redis untouched and a second worker runs them. A busy worker drained
  with no grace is revived and consumes again.
* Case B, the control: SIGTERM to the whole process group (KillMode=control-group, systemd's
  default) kills the running tasks and their messages are acked and gone. If this ever stops
  failing tasks, the premise of the unit's KillMode=mixed has changed.
"""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _scaler

redis = pytest.importorskip("redis", reason="the redis package is in requirements-dev.txt: make venv")
pytest.importorskip("celery", reason="celery is in requirements-dev.txt: make venv")

TASK_SECONDS = 8
TASKS = 5

TASKS_MODULE = '''
import os
import signal
import time

from celery import Celery

app = Celery("drain_test", broker=os.environ["DRAIN_BROKER_URL"])
# Airflow's DEFAULT_CELERY_CONFIG (celery provider 3.26.0) where it matters for a drain.
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 86400},
    task_default_queue="default",
    task_default_exchange="default",
    worker_concurrency=2,
    worker_enable_remote_control=True,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)
MARKS = os.environ["DRAIN_MARKS"]


def mark(n, what, text=""):
    with open(os.path.join(MARKS, "%s.%s" % (n, what)), "w") as f:
        f.write(text)


@app.task(name="drain_test.work")
def work(n, seconds):
    def killed(signum, frame):
        mark(n, "killed", os.environ.get("DRAIN_WORKER", ""))
        os._exit(1)  # as Airflow 3.3.2's supervisor: a SIGTERM that reaches the task kills it

    previous = signal.signal(signal.SIGTERM, killed)
    try:
        mark(n, "started", os.environ.get("DRAIN_WORKER", ""))
        time.sleep(seconds)
        mark(n, "done", os.environ.get("DRAIN_WORKER", ""))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return n
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("redis-server is missing and this is not root: install it (apt-get install redis-server)")
    try:
        is_debian = "ID=debian" in Path("/etc/os-release").read_text()
    except OSError:
        is_debian = False
    if not is_debian:
        pytest.skip("redis-server is missing and this is not Debian: install Redis's server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.fail("apt-get install redis-server failed: %s" % done.stderr[-500:])
    return shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = redis_server_binary()
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    log = open(folder / "redis.log", "wb")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT)
    url = "redis://127.0.0.1:%d/0" % port
    client = redis.Redis.from_url(url)
    deadline = time.time() + 15
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start: %s" % (folder / "redis.log").read_text()[-500:])
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


class Lab:
    """The tasks module, its marks, the workers started (each in its own process group)."""

    def __init__(self, folder, url, monkeypatch):
        self.folder, self.url = folder, url
        self.marks = folder / "marks"
        self.marks.mkdir()
        (folder / "drain_tasks.py").write_text(TASKS_MODULE)
        monkeypatch.setenv("DRAIN_BROKER_URL", url)
        monkeypatch.setenv("DRAIN_MARKS", str(self.marks))
        spec = importlib.util.spec_from_file_location("drain_tasks_client", str(folder / "drain_tasks.py"))
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.control = self.module.app.control
        self.redis = redis.Redis.from_url(url)
        self.redis.flushall()
        self.workers = []

    def start_worker(self, name, concurrency=2):
        env = dict(os.environ, PYTHONPATH=str(self.folder), DRAIN_WORKER=name)
        log = open(self.folder / ("%s.log" % name), "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "drain_tasks", "worker", "-n", "%s@drain-test" % name, "-Q", "default",
             "-c", str(concurrency), "--pool", "prefork", "-l", "INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=str(self.folder), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        node = "%s@drain-test" % name
        self.wait(lambda: self.control.ping(destination=[node], timeout=1.0), 30, "%s answers ping" % node, proc)
        return proc, node

    def wait(self, predicate, timeout, what, proc=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError("timed out waiting until %s; worker logs:\n%s" % (what, self.logs()[-3000:]))

    def logs(self):
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

    def send(self, n=TASKS, seconds=TASK_SECONDS):
        for i in range(n):
            self.module.work.apply_async(args=(i, seconds), queue="default")

    def marked(self, what):
        return dict((p.stem, p.read_text()) for p in self.marks.glob("*." + what))

    def queued(self):
        return self.redis.llen("default")

    def unacked(self):
        return self.redis.hlen("unacked")

    def cleanup(self):
        for proc in self.workers:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait(10)


@pytest.fixture
def lab(tmp_path, redis_url, monkeypatch):
    lab = Lab(tmp_path, redis_url, monkeypatch)
    yield lab
    lab.cleanup()


def busy_with_two(lab, node):
    """Two tasks running, three still queued in Redis: the picture the drain starts from."""
    lab.wait(lambda: _scaler.worker_load(lab.control, node, 2.0) == (2, 0), 20, "2 tasks run on %s" % node)
    assert lab.queued() == TASKS - 2
    assert lab.unacked() == 2


def test_drain_finishes_running_tasks_and_keeps_the_queue(lab):
    proc, node = lab.start_worker("w1")
    lab.send()
    busy_with_two(lab, node)

    # No grace for running tasks (the gate's default): the worker is revived, not stopped.
    def must_not_stop():
        raise AssertionError("a busy worker was stopped")

    revived = _scaler.drain(lab.control, node, ["default"], must_not_stop, idle_checks=2, idle_gap=1, busy_wait=0,
                            timeout=2.0)
    assert revived.outcome == "revived" and revived.active == 2
    queues = lab.control.inspect(destination=[node], timeout=2.0).active_queues()[node]
    assert [q["name"] for q in queues] == ["default"], "revived worker consumes again"

    # With grace: cancel, wait for the two tasks, idle twice, SIGTERM to the main process only.
    started = time.time()
    result = _scaler.drain(lab.control, node, ["default"], lambda: os.kill(proc.pid, signal.SIGTERM), idle_checks=2,
                           idle_gap=2, busy_wait=30, poll=0.5, timeout=2.0)
    assert result.outcome == "stopped", result
    assert proc.wait(30) == 0, lab.logs()[-3000:]
    took = time.time() - started
    assert sorted(lab.marked("done")) == ["0", "1"]
    assert lab.marked("killed") == {}
    assert lab.queued() == TASKS - 2, "the queued messages stay in Redis"
    assert lab.unacked() == 0
    assert "WorkerLostError" not in lab.logs()
    assert took < TASK_SECONDS + 10

    # Nothing lost: a second worker runs the three that waited.
    lab.start_worker("w2", concurrency=3)
    lab.wait(lambda: len(lab.marked("done")) == TASKS, TASK_SECONDS + 20, "all %d tasks are done" % TASKS)
    done = lab.marked("done")
    assert sorted(done) == [str(i) for i in range(TASKS)]
    assert sorted(done.values()) == ["w1", "w1", "w2", "w2", "w2"]
    assert lab.marked("killed") == {}
    assert lab.queued() == 0


def test_control_sigterm_to_the_process_group_kills_running_tasks(lab):
    proc, node = lab.start_worker("w3")
    lab.send()
    busy_with_two(lab, node)
    os.killpg(proc.pid, signal.SIGTERM)  # KillMode=control-group: every process of the unit
    proc.wait(30)
    assert len(lab.marked("killed")) == 2, "process-group SIGTERM no longer kills the running tasks: " + lab.logs()[-2000:]
    assert lab.marked("done") == {}
    assert "WorkerLostError" in lab.logs()
    # acks_late without reject_on_worker_lost: the killed tasks' messages are acked, gone.
    assert lab.unacked() == 0
    assert lab.queued() == TASKS - 2
