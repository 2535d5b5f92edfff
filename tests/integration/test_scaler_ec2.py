"""The scaler's EC2 stop/start of the worker instances against the emulated AWS (moto_server on
loopback) and a real Redis, without Airflow.

Two worker instances made in the emulated EC2 with the tags the ec2_hosts role gives them; a
Scaler whose roster names them by instance id (as the scaling role's unit does); the gates'
reports written into Redis as a Gate writes them (its encode functions, its fields). PostgreSQL
is not the subject here: the demand, the lock and the running tasks per host come from a small
object with Database's lead(), demand(), running_by_host() and close() (the SQL has its own
tests). Checked: a host drained, reported stopped and desired stopped has its instance stopped;
demand starts the stopped instance again, and the host counts as being started (pending) the
ticks after, so that no other host is started for it and it is not started twice; a host busy,
draining, desired running, or with a task in the database keeps its instance running."""

import json

import boto3
import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _scaler as s

redis = pytest.importorskip("redis", reason="the redis package is in requirements-dev.txt: make venv")
pytest.importorskip("celery", reason="celery is in requirements-dev.txt: make venv")  # the drain test's module needs it

# The real redis-server fixture of the drain test.
from test_celery_drain import redis_url  # noqa: E402,F401  pylint: disable=unused-import

ENV = "itest-scaler"
START = 1700000000.0


class Demand:
    """Database's interface, with the demand and running tasks the test chooses."""

    def __init__(self):
        self.rows, self.running, self.lock_conn = {}, {}, object()

    def lead(self, name):
        assert name == s.lock_name(ENV)
        return True

    def demand(self):
        return self.rows

    def running_by_host(self):
        return self.running

    def close(self):
        pass


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def ec2(moto_url, monkeypatch):
    # The scaler's Ec2Fleet finds the endpoint as boto3 does on the hosts (scaler.env).
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto_url)
    return boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1")


def run_workers(ec2, count, env=ENV):
    """Worker instances tagged as the ec2_hosts role tags them; their ids, by index."""
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"] if i.get("RootDeviceName"))[0]
    ids = []
    for n in range(count):
        tags = {"airstrip:environment": env, "airstrip:role": "worker", "airstrip:host": "worker-%d" % n,
                "Name": "airstrip-%s-worker-%d" % (env, n)}
        answer = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.medium", TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
        ids.append(answer["Instances"][0]["InstanceId"])
    return ids


def state_of(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def gate_reports(r, clock, **states):
    """Each host's report as its Gate publishes it: host=(state, generation, active)."""
    for host, (state, generation, active) in states.items():
        r.hset(s.state_key(ENV), host, s.encode_report({
            "state": state, "active": active, "reserved": 0, "since": clock.now - 3600, "updated": clock.now,
            "generation": generation, "refused": None, "queues": ["default"], "node": "celery@" + host,
            "unit": s.DEFAULT_UNIT}))


def desire(r, clock, **wants):
    for host, (desired, generation) in wants.items():
        r.hset(s.workers_key(ENV), host, s.encode_desired(desired, generation, clock.now - 900, "test"))


@pytest.fixture
def world(ec2, redis_url, tmp_path):  # noqa: F811  (the fixture imported above)
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    clock, db = Clock(START), Demand()
    ids = run_workers(ec2, 2)
    status = tmp_path / "status.json"
    roster = s.parse_roster(["w0=default@" + ids[0], "w1=default@" + ids[1]])
    scaler = s.Scaler(ENV, {"min_workers": 0, "max_workers": 2, "concurrency": 4, "warmup": 180.0,
                            "stabilization": 0.0}, db, r, roster, str(status), clock=clock, fleet=s.Ec2Fleet())
    # moto's LaunchTime is the real creation time: the test's clock starts well after it, so
    # that the instances are past their boot.
    clock.now = max(START, ec2.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"][0]
                    ["LaunchTime"].timestamp() + 3600)
    return {"r": r, "clock": clock, "db": db, "ids": ids, "status": status, "scaler": scaler}


def test_a_drained_host_is_stopped_then_started_on_demand_once(ec2, world, capsys):
    r, clock, db, ids, scaler = world["r"], world["clock"], world["db"], world["ids"], world["scaler"]
    # w0 runs two tasks; w1 was drained: desired stopped, its gate confirmed that generation.
    desire(r, clock, w0=("running", 1), w1=("stopped", 2))
    gate_reports(r, clock, w0=("running", 1, 2), w1=("stopped", 2, 0))
    db.rows, db.running = {"default": {"queued": 0, "running": 2}}, {"w0.ec2.internal": 2}
    scaler.tick()
    assert (state_of(ec2, ids[0]), state_of(ec2, ids[1])) == ("running", "stopped")
    data = json.loads(world["status"].read_text())
    assert data["ec2_actions"] == [["stop", "w1", ids[1]]] and data["ec2_error"] is None
    assert data["instances"]["w0"] == "running" and data["instances"]["w1"] in ("stopping", "stopped")
    assert "ec2: stop %s (w1): drained and stopped (generation 2), no task running" % ids[1] in capsys.readouterr().out

    # Its gate is gone with the instance: its last report grows stale. Demand beyond w0's slots
    # arrives: the stopped instance counts as stopped (startable) and is started.
    clock.now += 120
    gate_reports(r, clock, w0=("running", 1, 4))
    db.rows, db.running = {"default": {"queued": 3, "running": 4}}, {"w0.ec2.internal": 4}
    d = scaler.tick()
    assert d.classes["w1"] == "stopped" and ("start", "w1") in d.actions
    assert state_of(ec2, ids[1]) in ("pending", "running")
    assert s.decode_desired(r.hget(s.workers_key(ENV), "w1"))["desired"] == "running"
    data = json.loads(world["status"].read_text())
    assert data["ec2_actions"] == [["start", "w1", ids[1]]]
    assert "ec2: start %s (w1): desired running, its instance stopped" % ids[1] in capsys.readouterr().out

    # While it boots (its gate has not reported since), w1 is being started: no second start,
    # no other host, no EC2 call, whatever the demand.
    for _tick in range(3):
        clock.now += 15
        gate_reports(r, clock, w0=("running", 1, 4))
        db.rows = {"default": {"queued": 20, "running": 4}}
        d = scaler.tick()
        assert d.classes["w1"] == "pending" and d.actions == []
        assert json.loads(world["status"].read_text())["ec2_actions"] == []
    assert "ec2:" not in capsys.readouterr().out

    # Its gate boots, reads desired running and starts the worker: w1 is up.
    clock.now += 15
    gate_reports(r, clock, w0=("running", 1, 4), w1=("running", 3, 3))
    d = scaler.tick()
    assert d.classes["w1"] in ("warming", "busy") and state_of(ec2, ids[1]) == "running"


def test_busy_draining_and_wanted_hosts_keep_their_instances(ec2, world, capsys):
    r, clock, db, ids, scaler = world["r"], world["clock"], world["db"], world["ids"], world["scaler"]
    cases = [
        # (w0's desired, its report (state, generation, active), its running task instances)
        (("running", 1), ("stopped", 1, 0), {}),  # desired running: its worker failed to start, say
        (("stopped", 2), ("draining", 2, 0), {}),  # draining
        (("stopped", 2), ("running", 2, 1), {}),  # busy: still running a task when asked to stop
        (("stopped", 2), ("stopped", 2, 0), {"w0.ec2.internal": 1}),  # a task still running there
        (("stopped", 3), ("stopped", 2, 0), {}),  # the gate has not seen the generation asking it to stop
    ]
    for desired, report, running in cases:
        r.flushall()
        clock.now += 60
        desire(r, clock, w0=desired, w1=("running", 1))
        gate_reports(r, clock, w0=report, w1=("running", 1, 1))
        db.rows, db.running = {"default": {"queued": 0, "running": 1 + len(running)}}, dict(running, w1=1)
        d = scaler.tick()
        assert d is not None
        assert state_of(ec2, ids[0]) == "running", (desired, report, running)
        assert state_of(ec2, ids[1]) == "running", "w1 is busy and desired running"
        assert json.loads(world["status"].read_text())["ec2_actions"] == []
    assert "ec2:" not in capsys.readouterr().out


def test_an_unreachable_ec2_is_logged_and_tried_again_next_tick(ec2, world, moto_url, capsys):
    r, clock, db, ids, scaler = world["r"], world["clock"], world["db"], world["ids"], world["scaler"]
    desire(r, clock, w0=("running", 1), w1=("stopped", 2))
    gate_reports(r, clock, w0=("running", 1, 1), w1=("stopped", 2, 0))
    db.rows = {"default": {"queued": 0, "running": 1}}
    # Nothing listens there: every EC2 call fails. The scaling goes on.
    scaler.fleet = s.Ec2Fleet(endpoint_url="http://127.0.0.1:9")
    assert scaler.tick() is not None
    assert "ERROR ec2: cannot describe the worker instances" in capsys.readouterr().out
    data = json.loads(world["status"].read_text())
    assert data["healthy"] is True and data["ec2_error"] and data["instances"] == {"w0": None, "w1": None}
    assert state_of(ec2, ids[1]) == "running"
    scaler.fleet = s.Ec2Fleet()  # reachable again: the next tick does it
    clock.now += 15
    gate_reports(r, clock, w0=("running", 1, 1), w1=("stopped", 2, 0))
    scaler.tick()
    assert state_of(ec2, ids[1]) == "stopped"
    assert "ec2: describing the worker instances works again" in capsys.readouterr().out


def test_an_instance_stopped_while_desired_running_is_started_and_counts_as_booting(ec2, world, capsys):
    """Long desired running (so decide() has no recent ask to go by), its instance stopped behind
    the scaler's back (or a start that failed for a while): started again, then booting."""
    r, clock, db, ids, scaler = world["r"], world["clock"], world["db"], world["ids"], world["scaler"]
    ec2.stop_instances(InstanceIds=ids)
    desire(r, clock, w0=("running", 1), w1=("stopped", 2))
    db.rows = {"default": {"queued": 8, "running": 0}}
    d = scaler.tick()
    assert sorted(h for verb, h in d.actions if verb == s.START) == ["w0", "w1"]
    assert (state_of(ec2, ids[0]), state_of(ec2, ids[1])) == ("running", "running")
    assert sorted(a[1] for a in json.loads(world["status"].read_text())["ec2_actions"]) == ["w0", "w1"]
    for _tick in range(2):
        clock.now += 15
        d = scaler.tick()
        assert (d.classes["w0"], d.classes["w1"]) == ("pending", "pending") and d.actions == []
        assert json.loads(world["status"].read_text())["ec2_actions"] == []
    # Its gate never reports: past the warm-up it no longer counts (and is replaced or asked again).
    clock.now += 200
    assert scaler.tick().classes["w0"] == "unknown"
