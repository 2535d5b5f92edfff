"""The scaler's pure parts: the decision (property tests), the SQL, the Redis encoding, the
worker view, the drain sequence and the gate against fakes."""

import json
import math
import sqlite3

import pytest
from hypothesis import assume, given, settings, strategies as st

from ansible_collections.airstrip.airflow.plugins.module_utils import _scaler as s

NOW = 1000000.0
CONFIG = {"min_workers": 1, "max_workers": 4, "concurrency": 5, "target_utilization": 1.0, "warmup": 180.0,
          "stabilization": 300.0}


def cfg(**changes):
    c = dict(CONFIG)
    c.update(changes)
    return c


def running(queues=("default",), busy=0, started_at=NOW - 3600, desired=None, desired_at=None):
    return {"queues": list(queues), "state": "running", "started_at": started_at, "busy": busy,
            "desired": desired, "desired_at": desired_at}


def stopped(queues=("default",), desired=None, desired_at=None):
    return {"queues": list(queues), "state": "stopped", "started_at": None, "busy": 0,
            "desired": desired, "desired_at": desired_at}


def drains(decision):
    return [h for verb, h in decision.actions if verb == s.DRAIN]


def starts(decision):
    return [h for verb, h in decision.actions if verb == s.START]


# ---------------------------------------------------------------------------------------------
# Strategies: a small fleet of hosts over up to three queue sets, any states, any demand.

QUEUE_SETS = (("default",), ("default",), ("etl",), ("default", "etl"))


@st.composite
def worker(draw, queue_sets=QUEUE_SETS):
    kind = draw(st.sampled_from(["running", "stopped", "starting", "draining", None]))
    desired = draw(st.sampled_from([None, "running", "stopped"]))
    return {
        "queues": list(draw(st.sampled_from(queue_sets))),
        "state": kind,
        "started_at": draw(st.one_of(st.none(), st.floats(NOW - 1000, NOW))),
        "busy": draw(st.one_of(st.none(), st.booleans(), st.integers(0, 6))),
        "desired": desired,
        "desired_at": draw(st.one_of(st.none(), st.floats(NOW - 1000, NOW))),
    }


fleets = st.dictionaries(st.sampled_from(["w%d" % i for i in range(1, 7)]), worker(), max_size=6)
demands = st.dictionaries(st.sampled_from(["default", "etl", "orphan"]), st.integers(0, 60), max_size=3)


@st.composite
def configs(draw):
    lo = draw(st.integers(0, 3))
    hi = draw(st.integers(max(lo, 1), 6))
    return cfg(min_workers=lo, max_workers=hi, concurrency=draw(st.integers(1, 8)),
               target_utilization=draw(st.sampled_from([1.0, 0.9, 0.5, 1.5])),
               warmup=draw(st.sampled_from([0.0, 60.0, 180.0])), stabilization=draw(st.sampled_from([0.0, 120.0, 300.0])))


states = st.one_of(st.just({}), st.builds(lambda since: {"surplus_since": since, "history": []},
                                          st.one_of(st.none(), st.floats(NOW - 1000, NOW))))


# ---------------------------------------------------------------------------------------------
# Properties.

@settings(max_examples=400, deadline=None)
@given(states, demands, fleets, configs())
def test_the_decision_stays_within_min_and_max(state, demand, workers, config):
    d = s.decide(state, NOW, demand, workers, config)
    assert config["min_workers"] <= d.total <= config["max_workers"]
    active = [h for h, c in d.classes.items() if c in s.ACTIVE]
    after = set(active) | set(starts(d))
    after -= set(drains(d))
    # Never more running or booting than max_workers because of this tick.
    assert len(after) <= max(config["max_workers"], len(active))
    # Never below min_workers because of a drain (but for a swap held back by max_workers).
    if "wait for a drain" not in d.reason:
        assert not drains(d) or len(after) >= min(config["min_workers"], len(workers))
    # No host both started and drained.
    assert not set(starts(d)) & set(drains(d))


@settings(max_examples=400, deadline=None)
@given(states, demands, fleets, configs())
def test_never_drains_a_busy_worker_or_one_in_warm_up(state, demand, workers, config):
    d = s.decide(state, NOW, demand, workers, config)
    for host in drains(d):
        w = workers[host]
        if w.get("desired") == "running" and w.get("state") != "running":
            continue  # never came up: it has no task (it is "unknown", not running)
        assert w["state"] == "running"
        assert not s.is_busy(w), "drained a busy worker"
        assert w["started_at"] is None or NOW - w["started_at"] >= config["warmup"], "drained inside the warm-up"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 400), min_size=1, max_size=6), st.integers(0, 30), st.integers(0, 2))
def test_scale_in_spares_every_worker_in_its_warm_up(ages, demand, lo):
    workers = dict(("w%d" % i, running(started_at=NOW - age)) for i, age in enumerate(ages))
    d = s.decide({}, NOW, {"default": demand}, workers, cfg(min_workers=min(lo, len(ages)), max_workers=6, stabilization=0.0))
    for host in drains(d):
        assert NOW - workers[host]["started_at"] >= 180.0, "drained inside the warm-up"
    # And the scale-in does happen for those past it (the test can fail the other way too).
    spare = len(ages) - max(min(lo, len(ages)), d.total)
    old = sum(1 for a in ages if a >= 180.0)
    assert len(drains(d)) == max(0, min(spare, old))


@settings(max_examples=300, deadline=None)
@given(demands, fleets, configs(), st.floats(0, 299))
def test_no_scale_in_inside_the_stabilization_window(demand, workers, config, held):
    config = dict(config, stabilization=300.0)
    d = s.decide({"surplus_since": NOW - held, "history": []}, NOW, demand, workers, config)
    running_drains = [h for h in drains(d) if workers[h].get("state") == "running"]
    assert running_drains == []


@settings(max_examples=400, deadline=None)
@given(demands, fleets, configs(), st.sampled_from(["default", "etl", "orphan"]), st.integers(1, 40))
def test_monotonic_in_demand(demand, workers, config, queue, more):
    lower = s.decide({}, NOW, demand, workers, config)
    bigger = dict(demand)
    bigger[queue] = bigger.get(queue, 0) + more
    higher = s.decide({}, NOW, bigger, workers, config)
    assert higher.total >= lower.total
    for q, n in lower.needed.items():
        assert higher.needed.get(q, 0) >= n


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(1, 10), st.integers(0, 3), st.integers(0, 6))
def test_scale_out_is_immediate(demand, concurrency, lo, extra):
    hi = lo + extra
    assume(hi >= 1)
    workers = dict(("w%d" % i, stopped()) for i in range(8))
    d = s.decide({}, NOW, {"default": demand}, workers, cfg(min_workers=lo, max_workers=hi, concurrency=concurrency))
    want = max(lo, min(hi, int(math.ceil(demand / float(concurrency)))))
    assert d.total == want
    assert len(starts(d)) == min(want, len(workers)), "every host needed is started in the same tick"
    assert d.desired["default"] == min(want, len(workers))


def simulate(config, loads, tick=15.0, boot=20.0, hosts=3):
    """A world the decisions act on: started hosts come up after boot seconds, drained ones stop.
    loads: [(seconds, demand)]; returns [(t, decision)]."""
    world = dict(("w%d" % i, {"state": "stopped", "since": 0.0}) for i in range(1, hosts + 1))
    world["w1"] = {"state": "running", "since": 0.0}
    desired = {}
    state, t, out = {}, 0.0, []
    for seconds, demand in loads:
        end = t + seconds
        while t < end:
            for h, w in world.items():
                if w["state"] == "starting" and t - w["since"] >= boot:
                    world[h] = {"state": "running", "since": t}
            up = sorted(h for h, w in world.items() if w["state"] == "running")
            busy_left = demand
            view = {}
            for h, w in sorted(world.items()):
                busy = min(config["concurrency"], busy_left) if w["state"] == "running" else 0
                busy_left -= busy
                view[h] = {"queues": ["default"], "state": w["state"], "started_at": w["since"], "busy": busy,
                           "desired": desired.get(h, (None, None))[0], "desired_at": desired.get(h, (None, None))[1]}
            d = s.decide(state, t, {"default": demand}, view, config)
            state = d.state
            for verb, h in d.actions:
                if verb == s.START:
                    desired[h] = ("running", t)
                    if world[h]["state"] == "stopped":
                        world[h] = {"state": "starting", "since": t}
                else:
                    assert view[h]["busy"] == 0, "drained a busy host"
                    desired[h] = ("stopped", t)
                    world[h] = {"state": "stopped", "since": t}
            out.append((t, d, up))
            t += tick
    return out


def test_a_burst_scales_out_at_once_and_in_only_after_warm_up_and_stabilization():
    config = cfg(min_workers=1, max_workers=3, concurrency=5, warmup=180.0, stabilization=300.0)
    out = simulate(config, [(60, 0), (120, 15), (900, 0)])
    burst = [(t, d) for t, d, _up in out if t >= 60][0]
    assert sorted(starts(burst[1])) == ["w2", "w3"], burst[1].reason
    drain_times = [t for t, d, _up in out if drains(d)]
    assert drain_times, "the extra workers were never drained"
    assert drain_times[0] >= 180 + 300, "scale-in before the surplus held for the stabilization window"
    last_up = out[-1][2]
    assert last_up == ["w1"]


def test_min_workers_zero_first_task_starts_a_worker():
    workers = {"w1": stopped(), "w2": stopped()}
    idle = s.decide({}, NOW, {}, workers, cfg(min_workers=0, max_workers=2))
    assert idle.total == 0 and idle.actions == []
    first = s.decide(idle.state, NOW + 15, {"default": {"queued": 1, "running": 0}}, workers, cfg(min_workers=0, max_workers=2))
    assert first.total == 1 and starts(first) == ["w1"]


def test_min_workers_zero_scales_to_zero_after_stabilization():
    workers = {"w1": running(busy=0)}
    config = cfg(min_workers=0, max_workers=2)
    d = s.decide({}, NOW, {}, workers, config)
    assert drains(d) == [] and "scale-in after 300 s" in d.reason
    d = s.decide(d.state, NOW + 299, {}, workers, config)
    assert drains(d) == []
    d = s.decide(d.state, NOW + 300, {}, workers, config)
    assert drains(d) == ["w1"]


def test_a_demand_blip_resets_the_stabilization_window():
    workers = {"w1": running(), "w2": running()}
    config = cfg(min_workers=1, max_workers=2, concurrency=5)
    d = s.decide({}, NOW, {"default": 1}, workers, config)
    d = s.decide(d.state, NOW + 200, {"default": 10}, workers, config)  # both needed again
    assert d.state["surplus_since"] is None
    d = s.decide(d.state, NOW + 250, {"default": 1}, workers, config)
    d = s.decide(d.state, NOW + 500, {"default": 1}, workers, config)
    assert drains(d) == []
    d = s.decide(d.state, NOW + 550, {"default": 1}, workers, config)
    assert drains(d) == ["w1"] or drains(d) == ["w2"]


def test_the_idle_worker_is_the_one_drained_and_a_busy_one_never():
    workers = {"w1": running(busy=1), "w2": running(busy=0)}
    config = cfg(min_workers=1, max_workers=2, stabilization=0.0)
    d = s.decide({}, NOW, {"default": {"queued": 0, "running": 1}}, workers, config)
    assert drains(d) == ["w2"]
    workers["w2"]["busy"] = 2
    workers["w1"]["busy"] = 0
    d = s.decide({}, NOW, {"default": 2}, workers, config)
    assert drains(d) == ["w1"]
    workers["w1"]["busy"] = 1
    d = s.decide({}, NOW, {"default": 1}, workers, cfg(min_workers=0, max_workers=2, stabilization=0.0))
    assert drains(d) == [], "both busy: nothing is drained"
    assert "busy" in d.reason


def test_unknown_business_counts_as_busy():
    workers = {"w1": running(busy=None), "w2": running(busy=None)}
    d = s.decide({}, NOW, {}, workers, cfg(min_workers=0, max_workers=2, stabilization=0.0))
    assert drains(d) == []


def test_a_worker_in_warm_up_is_kept():
    workers = {"w1": running(busy=1), "w2": running(started_at=NOW - 100)}
    d = s.decide({}, NOW, {"default": 1}, workers, cfg(min_workers=1, max_workers=2, stabilization=0.0))
    assert drains(d) == [] and "w2 (warm-up, 80 s left)" in d.reason
    d = s.decide({}, NOW + 80, {"default": 1}, workers, cfg(min_workers=1, max_workers=2, stabilization=0.0))
    assert drains(d) == ["w2"]


def test_the_old_idle_worker_goes_before_the_one_in_warm_up():
    workers = {"w1": running(), "w2": running(started_at=NOW - 100)}
    d = s.decide({}, NOW, {}, workers, cfg(min_workers=1, max_workers=2, stabilization=0.0))
    assert drains(d) == ["w1"]


def test_a_draining_worker_is_revived_before_a_stopped_one_is_started():
    workers = {"w1": running(busy=5), "w2": stopped(), "w3": dict(running(), state="draining")}
    d = s.decide({}, NOW, {"default": 10}, workers, cfg(max_workers=3))
    assert starts(d) == ["w3"]


def test_a_host_that_does_not_come_up_is_replaced():
    workers = {"w1": running(busy=5), "w2": stopped(desired="running", desired_at=NOW - 200), "w3": stopped()}
    d = s.decide({}, NOW, {"default": 10}, workers, cfg(max_workers=3, warmup=180.0))
    assert starts(d) == ["w3"]
    assert drains(d) == ["w2"] and "w2 did not come up" in d.reason
    workers["w2"]["desired_at"] = NOW - 100  # still booting: counts, nothing else started
    d = s.decide({}, NOW, {"default": 10}, workers, cfg(max_workers=3, warmup=180.0))
    assert d.actions == []


def test_max_workers_caps_starts_while_others_drain():
    workers = {"w1": running(("default",)), "w2": stopped(("etl",))}
    d = s.decide({}, NOW, {"etl": 3}, workers, cfg(min_workers=1, max_workers=1, stabilization=0.0))
    assert d.total == 1
    assert starts(d) == [] and drains(d) == ["w1"], d.reason
    assert "wait for a drain" in d.reason


def test_queues_are_covered_per_queue():
    workers = {"a1": stopped(("default",)), "a2": stopped(("default",)), "e1": stopped(("etl",)),
               "b1": stopped(("default", "etl"))}
    d = s.decide({}, NOW, {"default": 4, "etl": 2}, workers, cfg(min_workers=0, max_workers=4, concurrency=5))
    # One host serving both queues covers both needs, but the 6 tasks need 2 workers' slots.
    assert d.needed == {"default": 1, "etl": 1}
    assert d.total == 2
    assert "b1" in starts(d) and len(starts(d)) == 2
    d = s.decide({}, NOW, {"etl": 12}, workers, cfg(min_workers=0, max_workers=4, concurrency=5))
    assert sorted(starts(d)) == ["b1", "e1"], "only hosts serving etl help etl"
    assert d.desired["etl"] == 2 and d.desired["default"] == 1


def test_unserved_queues_are_reported():
    workers = {"w1": running(busy=0)}
    d = s.decide({}, NOW, {"default": 0, "gpu": {"queued": 3, "running": 0}}, workers, cfg())
    assert d.unserved == {"gpu": 3}
    assert "UNSERVED" in d.reason and "gpu (3 task(s))" in d.reason
    assert d.total == 1 and d.desired["gpu"] == 0


def test_target_utilization_adds_headroom():
    assert s.workers_needed(9, 10, 0.9) == 1
    assert s.workers_needed(27, 10, 0.9) == 3
    assert s.workers_needed(28, 10, 0.9) == 4
    assert s.workers_needed(0, 10) == 0


def test_config_is_checked():
    with pytest.raises(ValueError):
        s.config_with_defaults({"min_workers": 3, "max_workers": 2})
    with pytest.raises(ValueError):
        s.config_with_defaults({"concurrency": 0})


def test_the_decision_state_is_json():
    workers = {"w1": running(), "w2": running()}
    d = s.decide({}, NOW, {}, workers, cfg())
    assert json.loads(json.dumps(d.state)) == d.state


# ---------------------------------------------------------------------------------------------
# The SQL, against sqlite (FILTER and GROUP BY as PostgreSQL runs them).

def test_demand_sql_counts_queued_and_running_celery_tasks_per_queue():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE task_instance (queue TEXT, state TEXT, executor TEXT, hostname TEXT)")
    rows = [("default", "queued", None, ""), ("default", "running", None, "w1.example"),
            ("default", "running", "CeleryExecutor", "w1.example"), ("default", "success", None, "w1.example"),
            ("etl", "queued", "airflow.providers.celery.executors.celery_executor.CeleryExecutor", ""),
            ("etl", "scheduled", None, ""), ("k8s", "queued", "KubernetesExecutor", ""), ("default", "deferred", None, "")]
    db.executemany("INSERT INTO task_instance VALUES (?, ?, ?, ?)", rows)
    demand = s.demand_from_rows(db.execute(s.DEMAND_SQL).fetchall())
    assert demand == {"default": {"queued": 1, "running": 2}, "etl": {"queued": 1, "running": 0}}
    assert dict(db.execute(s.RUNNING_BY_HOST_SQL).fetchall()) == {"w1.example": 2}


def test_the_lock_is_the_environments():
    assert s.LOCK_SQL == "SELECT pg_try_advisory_lock(hashtext(%s))"
    assert s.lock_name("prod") == "airstrip-scaler-prod"


def test_libpq_url_and_redaction():
    assert s.libpq_url("postgresql+psycopg2://a:b@db:5432/airflow") == "postgresql://a:b@db:5432/airflow"
    assert s.libpq_url("postgres://db/airflow") == "postgresql://db/airflow"
    assert s.redact("redis://:secret@broker:6379/0") == "redis://:***@broker:6379/0"
    assert s.redact("postgresql://airflow:pw@db/airflow") == "postgresql://airflow:***@db/airflow"
    assert s.redact("redis://broker:6379/0") == "redis://broker:6379/0"


def test_host_matching_short_and_fully_qualified():
    assert s.host_matches("w1.example.internal", "w1")
    assert s.host_matches("W1", "w1.example.internal")
    assert not s.host_matches("w10.example", "w1")


# ---------------------------------------------------------------------------------------------
# Redis encoding and the scaler's view of the workers.

def test_keys():
    assert s.workers_key("prod") == "airstrip:prod:workers"
    assert s.state_key("prod") == "airstrip:prod:worker-state"
    assert s.scaler_key("prod") == "airstrip:prod:scaler"


def test_desired_round_trip_and_garbage():
    raw = s.encode_desired("stopped", 7, NOW, "drain")
    assert json.loads(raw) == {"desired": "stopped", "generation": 7, "since": NOW, "reason": "drain"}
    assert s.decode_desired(raw.encode()) == {"desired": "stopped", "generation": 7, "since": NOW, "reason": "drain"}
    for bad in (None, b"", b"{", b"[]", b'{"desired": "maybe"}', b"null"):
        assert s.decode_desired(bad) is None
    assert s.decode_desired(b'{"desired": "running", "generation": "x"}')["generation"] == 0
    with pytest.raises(ValueError):
        s.encode_desired("paused", 1, NOW)


def test_report_round_trip():
    report = {"state": "running", "active": 1, "reserved": 0, "since": NOW, "updated": NOW, "queues": ["default"]}
    assert s.decode_report(s.encode_report(report).encode()) == report
    assert s.decode_report(b'{"active": 1}') is None
    assert s.decode_hash({b"w1": s.encode_report(report).encode(), b"w2": b"junk"}, s.decode_report) == {"w1": report}


def test_worker_view():
    reports = {
        "w1": {"state": "running", "active": 1, "reserved": 0, "since": NOW - 500, "updated": NOW - 3, "queues": ["default"]},
        "w2": {"state": "running", "active": 0, "reserved": 0, "since": NOW - 500, "updated": NOW - 3, "refused": 4},
        "w3": {"state": "stopped", "since": NOW - 500, "updated": NOW - 999},
    }
    desired = {"w2": {"desired": "stopped", "generation": 4, "since": NOW - 60},
               "w3": {"desired": "running", "generation": 2, "since": NOW - 10}}
    roster = {"w1": ["default"], "w2": ["default", "etl"], "w3": ["default"], "w4": ["etl"]}
    view = s.worker_view(roster, desired, reports, {"w2.example": 1}, NOW)
    assert view["w1"]["busy"] == 1 and view["w1"]["started_at"] == NOW - 500 and view["w1"]["desired"] is None
    assert view["w2"]["desired"] is None, "a refused drain reads as no intent"
    assert view["w2"]["busy"] == 1, "a running task instance on the host makes it busy"
    assert view["w3"]["state"] is None, "a stale report is not believed"
    assert view["w3"]["desired"] == "running" and view["w3"]["desired_at"] == NOW - 10
    assert view["w4"] == {"queues": ["etl"], "state": None, "started_at": None, "busy": None, "desired": None,
                          "desired_at": None}
    assert sorted(s.worker_view(None, {}, reports, {}, NOW)) == ["w1", "w2", "w3"]


def test_parse_roster(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"w1": ["default", "etl"], "w2": "default"}))
    assert s.parse_roster(["w3=gpu,default", "w4"], str(path)) == {
        "w1": ["default", "etl"], "w2": ["default"], "w3": ["gpu", "default"], "w4": ["default"]}
    assert s.parse_roster([], None) is None
    with pytest.raises(ValueError):
        s.parse_roster(["=x"])


# ---------------------------------------------------------------------------------------------
# The scaler's tick against fakes.

class FakeRedis:
    def __init__(self):
        self.hashes, self.strings = {}, {}

    def hgetall(self, key):
        return dict((k.encode(), v.encode()) for k, v in self.hashes.get(key, {}).items())

    def hget(self, key, field):
        v = self.hashes.get(key, {}).get(field)
        return v.encode() if v is not None else None

    def hset(self, key, field, value):
        self.hashes.setdefault(key, {})[field] = value

    def set(self, key, value, ex=None):
        self.strings[key] = value

    def get(self, key):
        v = self.strings.get(key)
        return v.encode() if v is not None else None


class FakeDB:
    def __init__(self, lead=True, demand=None):
        self.leading, self.rows, self.lock_conn = lead, demand or {}, object()

    def lead(self, name):
        assert name == "airstrip-scaler-test"
        return self.leading

    def demand(self):
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows

    def running_by_host(self):
        return {}

    def close(self):
        pass


class FakeCloudWatch:
    namespace = "Airstrip/test"

    def __init__(self):
        self.sent = []

    def send(self, values, now=None):
        self.sent.append(values)


def report(state, active=0, since=NOW - 3600, updated=NOW, refused=None):
    return s.encode_report({"state": state, "active": active, "reserved": 0, "since": since, "updated": updated,
                            "refused": refused})


def test_scaler_tick_writes_desired_state_status_and_metrics(tmp_path, capsys):
    r = FakeRedis()
    r.hashes[s.state_key("test")] = {"w1": report("running", active=2), "w2": report("stopped")}
    db = FakeDB(demand={"default": {"queued": 4, "running": 2}, "gpu": {"queued": 1, "running": 0}})
    cw = FakeCloudWatch()
    status = tmp_path / "status.json"
    scaler = s.Scaler("test", cfg(min_workers=1, max_workers=2, concurrency=3), db, r,
                      {"w1": ["default"], "w2": ["default"]}, str(status), cw, clock=lambda: NOW)
    d = scaler.tick()
    assert starts(d) == ["w2"]
    assert json.loads(r.hashes[s.workers_key("test")]["w2"])["desired"] == "running"
    assert json.loads(r.hashes[s.workers_key("test")]["w2"])["generation"] == 1
    data = json.loads(status.read_text())
    assert data["leader"] is True and data["healthy"] is True
    assert (data["num_workers"], data["desired_workers"], data["queued"], data["running"]) == (1, 2, 5, 2)
    assert data["unserved_queues"] == {"gpu": 1}
    assert data["queues"]["default"] == {"queued": 4, "running": 2, "needed": 2, "desired": 2}
    assert data["last_action"]["actions"] == [["start", "w2"]]
    assert cw.sent == [{"NumWorkers": 1, "DesiredWorkers": 2, "QueuedTasks": 5, "RunningTasks": 2, "NumAdditionalWorkers": 0}]
    out = capsys.readouterr().out
    assert "decision: demand 7 (queued 5, running 2), desired 2, workers 1, action start w2;" in out
    # The same decision again: nothing written, no new line.
    scaler.tick()
    assert json.loads(r.hashes[s.workers_key("test")]["w2"])["generation"] == 1
    assert "decision:" not in capsys.readouterr().out


def test_scaler_asks_again_after_a_refused_drain():
    r = FakeRedis()
    r.hashes[s.workers_key("test")] = {"w2": s.encode_desired("stopped", 3, NOW - 100)}
    r.hashes[s.state_key("test")] = {"w1": report("running", active=0), "w2": report("running", active=0, refused=3)}
    scaler = s.Scaler("test", cfg(min_workers=1, max_workers=2, stabilization=0.0), FakeDB(), r, None, clock=lambda: NOW)
    d = scaler.tick()
    assert drains(d) == ["w2"] or drains(d) == ["w1"]
    if drains(d) == ["w2"]:
        assert json.loads(r.hashes[s.workers_key("test")]["w2"])["generation"] == 4


def test_a_standby_scaler_changes_nothing(tmp_path):
    r = FakeRedis()
    status = tmp_path / "status.json"
    scaler = s.Scaler("test", cfg(), FakeDB(lead=False), r, {"w1": ["default"]}, str(status), clock=lambda: NOW)
    assert scaler.tick() is None
    assert r.hashes == {} and r.strings == {}
    data = json.loads(status.read_text())
    assert data["leader"] is False and data["active_scaler"] is None
    r.strings[s.scaler_key("test")] = json.dumps({"desired_workers": 2, "host": "sched1"})
    scaler.tick()
    assert json.loads(status.read_text())["active_scaler"]["host"] == "sched1"


def test_a_database_error_changes_nothing_and_is_reported(tmp_path, capsys):
    r = FakeRedis()
    status = tmp_path / "status.json"
    scaler = s.Scaler("test", cfg(), FakeDB(demand=RuntimeError("connection refused")), r, {"w1": ["default"]},
                      str(status), clock=lambda: NOW)
    assert scaler.tick() is None
    assert r.hashes == {}
    data = json.loads(status.read_text())
    assert data["healthy"] is False and "connection refused" in data["error"]
    assert "ERROR cannot scale" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# The drain sequence and the gate, against a fake Celery control.

class FakeInspect:
    def __init__(self, control):
        self.control = control

    def active(self):
        return self.control.answer(self.control.active_seq)

    def reserved(self):
        return self.control.answer(self.control.reserved_seq)


class FakeControl:
    def __init__(self, node="celery@w1", active=None, reserved=None, silent=False):
        self.node = node
        self.active_seq = list(active or [[]])
        self.reserved_seq = list(reserved or [[]])
        self.silent = silent
        self.calls = []

    def answer(self, seq):
        if self.silent:
            return None
        value = seq.pop(0) if len(seq) > 1 else seq[0]
        return {self.node: value}

    def inspect(self, destination, timeout):
        assert destination == [self.node]
        return FakeInspect(self)

    def cancel_consumer(self, queue, destination, reply, timeout):
        self.calls.append(("cancel", queue))
        return [] if self.silent else [{self.node: {"ok": "no longer consuming from %r" % queue}}]

    def add_consumer(self, queue, destination, reply, timeout):
        self.calls.append(("add", queue))
        return [{self.node: {"ok": "add consumer %r" % queue}}]


class Clock:
    def __init__(self):
        self.t = NOW

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def test_drain_idle_worker_checks_twice_apart_then_stops():
    control, clock, stopped_at = FakeControl(), Clock(), []
    result = s.drain(control, "celery@w1", ["default", "etl"], lambda: stopped_at.append(clock()), idle_checks=2,
                     idle_gap=20, sleep=clock.sleep, clock=clock, log=lambda m: None)
    assert result.outcome == "stopped"
    assert control.calls == [("cancel", "default"), ("cancel", "etl")]
    assert stopped_at == [NOW + 20]


def test_drain_revives_a_worker_that_got_a_task():
    control, clock, stops = FakeControl(active=[[], [{"id": "t1"}]]), Clock(), []
    result = s.drain(control, "celery@w1", ["default"], lambda: stops.append(1), sleep=clock.sleep, clock=clock,
                     log=lambda m: None)
    assert result.outcome == "revived" and result.active == 1
    assert stops == [] and control.calls == [("cancel", "default"), ("add", "default")]


def test_drain_waits_for_running_tasks_when_allowed():
    control, clock, stops = FakeControl(active=[[{"id": "t1"}]] * 5 + [[]]), Clock(), []
    result = s.drain(control, "celery@w1", ["default"], lambda: stops.append(clock()), busy_wait=30, poll=1,
                     idle_gap=20, sleep=clock.sleep, clock=clock, log=lambda m: None)
    assert result.outcome == "stopped" and stops == [NOW + 5 + 20]


def test_drain_of_a_silent_worker_stops_nothing():
    control, stops = FakeControl(silent=True), []
    result = s.drain(control, "celery@w1", ["default"], lambda: stops.append(1), log=lambda m: None)
    assert result.outcome == "failed" and stops == []
    assert ("add", "default") in control.calls


def test_drain_aborts_when_asked_to_run_again():
    control, clock, stops = FakeControl(), Clock(), []
    asks = iter([False, True])
    result = s.drain(control, "celery@w1", ["default"], lambda: stops.append(1), abort=lambda: next(asks),
                     sleep=clock.sleep, clock=clock, log=lambda m: None)
    assert result.outcome == "aborted" and stops == []
    assert control.calls[-1] == ("add", "default")


class FakeSystemd:
    def __init__(self, state="inactive"):
        self.state, self.calls = state, []

    def __call__(self, *args):
        self.calls.append(args)
        if args[0] == "is-active":
            return (0 if self.state == "active" else 3), self.state
        if args[0] == "start":
            self.state = "active"
        if args[0] == "stop":
            self.state = "inactive"
        return 0, ""


def make_gate(r, control, systemd, clock, tmp_path=None):
    return s.Gate("test", "w1", ["default"], r, control, node="celery@w1", idle_checks=2, idle_gap=20, run=systemd,
                  clock=clock, sleep=clock.sleep, status_file=str(tmp_path / "gate.json") if tmp_path else None)


def test_gate_starts_drains_and_reports(tmp_path):
    r, control, systemd, clock = FakeRedis(), FakeControl(), FakeSystemd(), Clock()
    gate = make_gate(r, control, systemd, clock, tmp_path)
    gate.step()  # no desired state: reports only
    assert json.loads(r.hashes[s.state_key("test")]["w1"])["state"] == "stopped"
    assert ("start", "airflow-celery-worker") not in systemd.calls
    r.hset(s.workers_key("test"), "w1", s.encode_desired("running", 1, NOW))
    gate.step()
    assert ("start", "airflow-celery-worker") in systemd.calls
    rep = json.loads(r.hashes[s.state_key("test")]["w1"])
    assert rep["state"] == "running" and rep["generation"] == 1 and rep["since"] == NOW
    r.hset(s.workers_key("test"), "w1", s.encode_desired("stopped", 2, NOW))
    gate.step()
    assert ("stop", "airflow-celery-worker") in systemd.calls
    assert control.calls == [("cancel", "default")]
    rep = json.loads(r.hashes[s.state_key("test")]["w1"])
    assert rep["state"] == "stopped" and rep["refused"] is None
    assert json.loads((tmp_path / "gate.json").read_text())["last_drain"]["outcome"] == "stopped"


def test_gate_refuses_a_drain_when_busy_until_asked_again():
    r, systemd, clock = FakeRedis(), FakeSystemd("active"), Clock()
    control = FakeControl(active=[[{"id": "t1"}]])
    gate = make_gate(r, control, systemd, clock)
    r.hset(s.workers_key("test"), "w1", s.encode_desired("stopped", 5, NOW))
    gate.step()
    rep = json.loads(r.hashes[s.state_key("test")]["w1"])
    assert rep["state"] == "running" and rep["refused"] == 5 and rep["active"] == 1
    assert ("stop", "airflow-celery-worker") not in systemd.calls
    gate.step()  # same generation: no second drain
    assert control.calls == [("cancel", "default"), ("add", "default")]
    control.active_seq = [[]]
    r.hset(s.workers_key("test"), "w1", s.encode_desired("stopped", 6, NOW))
    gate.step()
    assert ("stop", "airflow-celery-worker") in systemd.calls


def test_gate_restarted_mid_drain_makes_the_worker_consume_again():
    r, systemd, clock, control = FakeRedis(), FakeSystemd("active"), Clock(), FakeControl()
    r.hset(s.workers_key("test"), "w1", s.encode_desired("running", 2, NOW))
    gate = make_gate(r, control, systemd, clock)
    gate.step()
    assert control.calls == [("add", "default")]
    gate.step()
    assert control.calls == [("add", "default")]


def test_cli_reads_urls_from_the_environment(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_scaler(environment, config, db, redis_client, *args, **kwargs):
        seen.update(db=db.url, config=config)
        raise Stop()

    monkeypatch.setattr(s, "Scaler", fake_scaler)
    monkeypatch.setattr(s, "make_redis", lambda url: seen.setdefault("redis", url))
    monkeypatch.setenv("AIRSTRIP_DATABASE_URL", "postgresql://airflow:pw@db/airflow")
    monkeypatch.setenv("AIRSTRIP_REDIS_URL", "redis://:pw@broker:6379/0")
    with pytest.raises(Stop):
        s.main(["scaler", "--environment", "test", "--min-workers", "0", "--max-workers", "2", "--concurrency", "5"])
    assert seen["db"] == "postgresql://airflow:pw@db/airflow" and seen["redis"] == "redis://:pw@broker:6379/0"
    assert seen["config"]["min_workers"] == 0 and seen["config"]["warmup"] == 180.0
    monkeypatch.delenv("AIRSTRIP_DATABASE_URL")
    with pytest.raises(SystemExit):
        s.main(["scaler", "--environment", "test", "--min-workers", "0", "--max-workers", "2", "--concurrency", "5"])


def test_urls_come_from_airflow_cfg_with_its_escaped_percent(tmp_path):
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text("[database]\nsql_alchemy_conn = postgresql+psycopg2://airflow:p%%40ss@db:5432/airflow\n\n"
                   "[celery]\nbroker_url = redis://:s3cret@broker:6379/0\n")
    assert s.airflow_urls(str(cfg)) == ("postgresql+psycopg2://airflow:p%40ss@db:5432/airflow",
                                        "redis://:s3cret@broker:6379/0")


def test_a_worker_hosts_airflow_cfg_gives_the_broker_and_no_database(tmp_path):
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text("[celery]\nbroker_url = redis://:s3cret@broker:6379/0\n")
    assert s.airflow_urls(str(cfg)) == (None, "redis://:s3cret@broker:6379/0")


# ---------------------------------------------------------------------------------------------
# EC2 stop/start of the worker instances: the roster, the pure plan, the tick against a fake fleet.

I1, I2 = "i-0123456789abcdef0", "i-0aaaaaaaaaaaaaaa1"


def test_parse_roster_with_instance_ids(tmp_path):
    roster = s.parse_roster(["w1=default,etl@" + I1, "w2@i-0123abcd", "w3=gpu"])
    assert roster == {"w1": ["default", "etl"], "w2": ["default"], "w3": ["gpu"]}
    assert roster.instances == {"w1": I1, "w2": "i-0123abcd"}
    assert s.parse_roster(["w1=default"]).instances == {}, "the old form stays valid, without an instance"
    for bad in ("w1=default@", "w1=default@bogus", "w1=default@i-XYZ", "=x@" + I1):
        with pytest.raises(ValueError):
            s.parse_roster([bad])
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"w1": {"queues": ["etl"], "instance_id": I2}, "w2": ["default"]}))
    roster = s.parse_roster(["w3@" + I1], str(path))
    assert roster == {"w1": ["etl"], "w2": ["default"], "w3": ["default"]}
    assert roster.instances == {"w1": I2, "w3": I1}


def gate_report(state, generation, updated=NOW - 2, active=0, since=NOW - 3600):
    return {"state": state, "generation": generation, "updated": updated, "since": since, "active": active,
            "reserved": 0, "refused": None}


def intent(desired, generation, since=NOW - 3600):
    return {"desired": desired, "generation": generation, "since": since}


def inst(state, launched=NOW - 7200):
    return {"state": state, "launched": launched}


def plan_of(desired, reports, instances, running=None, actions=(), classes=None, hosts=("w1",)):
    instance_of = dict((h, "i-%017x" % (i + 1)) for i, h in enumerate(hosts))
    instances = dict((instance_of[h], v) for h, v in instances.items())
    view = s.worker_view(dict((h, ["default"]) for h in hosts), desired, reports, running or {}, NOW)
    view = s.with_instances(view, instance_of, instances, reports, NOW, 180.0)
    if classes is None:
        classes = dict((h, s.classify(w, NOW, s.config_with_defaults(CONFIG))) for h, w in view.items())
    return [(a.verb, a.host) for a in s.ec2_plan(instance_of, instances, desired, reports, running or {}, list(actions),
                                                 classes, NOW)]


def test_a_drained_host_desired_stopped_has_its_instance_stopped():
    assert plan_of({"w1": intent("stopped", 4)}, {"w1": gate_report("stopped", 4)}, {"w1": inst("running")}) == \
        [("stop", "w1")]


@pytest.mark.parametrize("desired, report, instance, running, why", [
    (intent("running", 4), gate_report("stopped", 4), inst("running"), {}, "desired running"),
    (None, gate_report("stopped", None), inst("running"), {}, "never asked: keeps what Ansible gave it"),
    (intent("stopped", 4), gate_report("draining", 4), inst("running"), {}, "draining"),
    (intent("stopped", 4), gate_report("running", 4, active=1), inst("running"), {}, "busy (refused the drain)"),
    (intent("stopped", 4), gate_report("stopped", 4), inst("running"), {"w1.example": 1}, "a task runs there"),
    (intent("stopped", 5), gate_report("stopped", 4), inst("running"), {}, "the gate has not seen generation 5"),
    (intent("stopped", 4), gate_report("stopped", 4, updated=NOW - 120), inst("running"), {}, "a stale report"),
    (intent("stopped", 4), gate_report("stopped", 4), inst("running", launched=NOW - 1), {}, "report from before boot"),
    (intent("stopped", 4), gate_report("stopped", 4), inst("stopping"), {}, "already stopping"),
    (intent("stopped", 4), gate_report("stopped", 4), inst("pending"), {}, "booting"),
])
def test_never_stops_an_instance_that_may_work(desired, report, instance, running, why):
    assert plan_of({"w1": desired} if desired else {}, {"w1": report}, {"w1": instance}, running) == [], why


def test_an_instance_is_stopped_only_after_its_minimum_uptime():
    # A deploy started it (ec2_hosts runs every host) to configure it: not cut off half-way.
    desired, reports = {"w1": intent("stopped", 4)}, {"w1": gate_report("stopped", 4)}
    instance_of = {"w1": "i-%017x" % 1}
    for launched, expected in ((NOW - 600, []), (NOW - 901, [("stop", "w1")])):
        instances = {instance_of["w1"]: inst("running", launched=launched)}
        plan = s.ec2_plan(instance_of, instances, desired, reports, {}, [], {"w1": "stopped"}, NOW, min_uptime=900.0)
        assert [(a.verb, a.host) for a in plan] == expected, launched


def test_a_host_started_this_tick_or_asked_to_drain_this_tick_is_not_stopped():
    desired, reports, instances = {"w1": intent("stopped", 4)}, {"w1": gate_report("stopped", 4)}, {"w1": inst("running")}
    assert plan_of(desired, reports, instances, actions=[("start", "w1")]) == []
    assert plan_of(desired, reports, instances, actions=[("drain", "w1")]) == []


def test_a_started_host_has_its_stopped_instance_started_and_a_stopping_one_waits():
    stale = {"w1": gate_report("stopped", 4, updated=NOW - 900)}
    assert plan_of({"w1": intent("stopped", 4)}, stale, {"w1": inst("stopped")}, actions=[("start", "w1")]) == \
        [("start", "w1")]
    assert plan_of({"w1": intent("stopped", 4)}, stale, {"w1": inst("stopping")}, actions=[("start", "w1")]) == []
    # Desired running already (a start that failed, or an instance stopped behind our back): started again.
    assert plan_of({"w1": intent("running", 5, since=NOW - 30)}, stale, {"w1": inst("stopped")}) == [("start", "w1")]
    # A host without an instance in EC2's answer, or whose describe failed, is left alone.
    assert plan_of({"w1": intent("running", 5)}, stale, {}) == []


def test_instance_states_correct_the_view():
    roster = {"w1": ["default"], "w2": ["default"], "w3": ["default"], "w4": ["default"], "w5": ["default"]}
    instance_of = dict((h, "i-%017x" % i) for i, h in enumerate(sorted(roster), 1))
    reports = {"w1": gate_report("running", 1, updated=NOW - 30), "w3": gate_report("stopped", 1, updated=NOW - 600),
               "w4": gate_report("stopped", 1, updated=NOW - 600), "w5": gate_report("running", 1, updated=NOW - 2)}
    desired = {"w3": intent("running", 2, since=NOW - 900)}
    instances = {instance_of["w1"]: inst("stopped"), instance_of["w2"]: inst("pending"),
                 instance_of["w3"]: inst("running", launched=NOW - 20), instance_of["w4"]: inst("terminated"),
                 instance_of["w5"]: inst("running", launched=NOW - 20)}
    view = s.with_instances(s.worker_view(roster, desired, reports, {}, NOW), instance_of, instances, reports, NOW, 180.0)
    classes = dict((h, s.classify(w, NOW, s.config_with_defaults(CONFIG))) for h, w in view.items())
    assert classes["w1"] == "stopped", "a stopped instance is startable, whatever its gate said last"
    assert classes["w2"] == "pending", "a pending instance is being started"
    assert classes["w3"] == "pending", "booted 20 s ago, its gate has not reported since: being started"
    assert classes["w4"] == "unknown"
    assert classes["w5"] == "idle", "its gate reported since it booted: its report rules"
    # Without EC2's answer nothing changes.
    assert s.with_instances(view, instance_of, {}, reports, NOW, 180.0) == view


ec2_states = st.sampled_from(["pending", "running", "stopping", "stopped", "shutting-down", "terminated"])


@st.composite
def ec2_world(draw):
    hosts = ["w%d" % i for i in range(1, draw(st.integers(1, 5)) + 1)]
    desired, reports, instances, running_tasks = {}, {}, {}, {}
    for h in hosts:
        if draw(st.booleans()):
            desired[h] = intent(draw(st.sampled_from(["running", "stopped"])), draw(st.integers(0, 3)),
                                since=draw(st.floats(NOW - 1000, NOW)))
        if draw(st.booleans()):
            reports[h] = gate_report(draw(st.sampled_from(["running", "starting", "draining", "stopping", "stopped",
                                                           "failed"])),
                                     draw(st.one_of(st.none(), st.integers(0, 3))), updated=draw(st.floats(NOW - 200, NOW)),
                                     active=draw(st.integers(0, 2)))
            reports[h]["refused"] = draw(st.one_of(st.none(), st.integers(0, 3)))
        if draw(st.booleans()):
            instances[h] = inst(draw(ec2_states), launched=draw(st.floats(NOW - 1000, NOW)))
        if draw(st.integers(0, 3)) == 0:
            running_tasks[h + ".example"] = 1
    return hosts, desired, reports, instances, running_tasks


@settings(max_examples=400, deadline=None)
@given(ec2_world(), demands, configs())
def test_the_plan_never_stops_a_host_desired_running_busy_or_draining(world, demand, config):
    hosts, desired, reports, instances, running_tasks = world
    instance_of = dict((h, "i-%017x" % i) for i, h in enumerate(hosts, 1))
    by_id = dict((instance_of[h], v) for h, v in instances.items())
    roster = dict((h, ["default"]) for h in hosts)
    view = s.with_instances(s.worker_view(roster, desired, reports, running_tasks, NOW), instance_of, by_id, reports,
                            NOW, config["warmup"])
    d = s.decide({}, NOW, demand, view, config)
    plan = s.ec2_plan(instance_of, by_id, desired, reports, running_tasks, d.actions, d.classes, NOW)
    after = dict((h, (desired.get(h) or {}).get("desired")) for h in hosts)
    after.update((h, "running" if verb == s.START else "stopped") for verb, h in d.actions)
    for action in plan:
        h = action.host
        assert action.instance == instance_of[h]
        if action.verb == s.EC2_START:
            assert after[h] == "running" and instances[h]["state"] == "stopped"
            continue
        assert after[h] == "stopped" and h not in [x for _v, x in d.actions], "stopped a host desired running"
        assert d.classes[h] == "stopped" and instances[h]["state"] == "running"
        assert reports[h]["state"] == "stopped" and reports[h]["active"] == 0, "stopped a busy or draining host"
        assert reports[h]["generation"] == desired[h]["generation"]
        assert not any(s.host_matches(t, h) for t in running_tasks), "stopped a host with a running task"
    # A host started by this tick is never stopped by it, nor started twice.
    assert len(set(a.host for a in plan)) == len(plan)


class FakeFleet:
    """EC2 as the scaler sees it: states, start and stop, or an error for every call."""

    def __init__(self, states, error=None):
        self.instances = dict((i, {"state": st_, "launched": NOW - 7200}) for i, st_ in states.items())
        self.error, self.calls = error, []

    def states(self, ids):
        self.calls.append(("describe", sorted(ids)))
        if self.error:
            raise self.error
        return dict((i, dict(self.instances[i])) for i in ids if i in self.instances)

    def start(self, instance_id):
        self.calls.append(("start", instance_id))
        if self.error:
            raise self.error
        self.instances[instance_id]["state"] = "pending"
        return "pending"

    def stop(self, instance_id):
        self.calls.append(("stop", instance_id))
        if self.error:
            raise self.error
        self.instances[instance_id]["state"] = "stopping"
        return "stopping"


def test_scaler_stops_a_drained_instance_and_starts_it_on_demand(tmp_path, capsys):
    r, clock = FakeRedis(), Clock()
    clock.t = NOW
    r.hashes[s.workers_key("test")] = {"w2": s.encode_desired("stopped", 3, NOW - 900)}
    r.hashes[s.state_key("test")] = {"w1": report("running", active=1),
                                     "w2": s.encode_report(gate_report("stopped", 3, updated=NOW))}
    fleet = FakeFleet({I1: "running", I2: "running"})
    db = FakeDB(demand={"default": {"queued": 0, "running": 1}})
    status = tmp_path / "status.json"
    roster = s.parse_roster(["w1=default@" + I1, "w2=default@" + I2])
    scaler = s.Scaler("test", cfg(min_workers=1, max_workers=2), db, r, roster, str(status), clock=clock, fleet=fleet)
    scaler.tick()
    assert ("stop", I2) in fleet.calls and ("stop", I1) not in fleet.calls
    data = json.loads(status.read_text())
    assert data["instances"] == {"w1": "running", "w2": "stopping"}
    assert data["ec2_actions"] == [["stop", "w2", I2]] and data["ec2_error"] is None
    assert "ec2: stop %s (w2): drained and stopped (generation 3), no task running; now stopping" % I2 in \
        capsys.readouterr().out
    # Demand beyond w1: w2's instance (stopped now, its report stale) is started, and counts as
    # being started the next ticks: no second start.
    fleet.instances[I2]["state"] = "stopped"
    clock.t = NOW + 120
    r.hashes[s.state_key("test")]["w1"] = report("running", active=5, updated=clock.t)
    db.rows = {"default": {"queued": 8, "running": 5}}
    d = scaler.tick()
    assert starts(d) == ["w2"] and d.classes["w2"] == "stopped"
    assert json.loads(r.hashes[s.workers_key("test")]["w2"])["desired"] == "running"
    assert fleet.calls[-1] == ("start", I2)
    assert json.loads(status.read_text())["instances"]["w2"] == "pending"
    fleet.instances[I2]["state"] = "running"  # EC2's LaunchTime may lag: the scaler's own start time counts
    clock.t += 15
    r.hashes[s.state_key("test")]["w1"] = report("running", active=5, updated=clock.t)
    d = scaler.tick()
    assert d.classes["w2"] == "pending" and starts(d) == []
    assert [c for c in fleet.calls if c[0] == "start"] == [("start", I2)]


def test_ec2_errors_are_logged_and_tried_again_next_tick(tmp_path, capsys):
    r, clock = FakeRedis(), Clock()
    clock.t = NOW
    r.hashes[s.workers_key("test")] = {"w2": s.encode_desired("stopped", 3, NOW - 900)}
    r.hashes[s.state_key("test")] = {"w1": report("running", active=1),
                                     "w2": s.encode_report(gate_report("stopped", 3, updated=NOW))}

    class Denied(Exception):
        response = {"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized to perform ec2:StopInstances"}}

    fleet = FakeFleet({I1: "running", I2: "running"})
    status = tmp_path / "status.json"
    scaler = s.Scaler("test", cfg(min_workers=1, max_workers=2), FakeDB(demand={"default": {"queued": 0, "running": 1}}),
                      r, s.parse_roster(["w1@" + I1, "w2@" + I2]), str(status), clock=clock, fleet=fleet)

    def denied(instance_id):
        raise Denied()

    fleet.stop = denied
    assert scaler.tick() is not None, "an EC2 failure does not stop the scaling"
    out = capsys.readouterr().out
    assert "ERROR ec2: cannot stop %s (w2): UnauthorizedOperation: not authorized" % I2 in out
    data = json.loads(status.read_text())
    assert data["healthy"] is True and "UnauthorizedOperation" in data["ec2_error"] and data["ec2_actions"] == []
    scaler.tick()
    out = capsys.readouterr().out
    assert "ERROR" not in out and "works again" not in out, "the same error is logged once"
    assert "UnauthorizedOperation" in json.loads(status.read_text())["ec2_error"]
    del fleet.stop
    scaler.tick()
    assert fleet.instances[I2]["state"] == "stopping" and "ec2: stop " + I2 in capsys.readouterr().out
    assert json.loads(status.read_text())["ec2_error"] is None
    # DescribeInstances failing: the decision goes on without EC2, nothing is started or stopped.
    fleet.error = Denied()
    assert scaler.tick() is not None
    assert "ERROR ec2: cannot describe the worker instances (UnauthorizedOperation" in capsys.readouterr().out
    assert json.loads(status.read_text())["instances"] == {"w1": None, "w2": None}


def test_ec2_fleet_reads_the_endpoint_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic")
    assert (s.Ec2Fleet().region, s.Ec2Fleet().endpoint_url) == ("eu-west-1", "http://generic")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://ec2")
    assert s.Ec2Fleet().endpoint_url == "http://ec2"
    assert s.Ec2Fleet("us-east-2", "http://given").endpoint_url == "http://given"


def test_the_scaler_unit_gives_each_worker_its_instance_only_when_it_has_one():
    """The --worker loop of the scaling role's unit, as the scaler's parse_roster reads it."""
    import shlex
    from pathlib import Path

    import jinja2

    template = Path(s.__file__).resolve().parents[2] / "roles" / "scaling" / "templates" / "airstrip-scaler.service.j2"
    env = jinja2.Environment()
    env.filters["quote"] = shlex.quote
    env.filters["bool"] = bool
    text = env.from_string(template.read_text()).render(
        scaling_workers=["w1", "w2"], scaling_queues=["default"], scaling_env_name="test", ansible_managed="",
        scaling_stop_instances=True, hostvars={"w1": {"ec2_instance_id": I1}, "w2": {}})
    args = shlex.split(next(line for line in text.splitlines() if line.startswith("ExecStart=")))
    workers = [args[i + 1] for i, a in enumerate(args) if a == "--worker"]
    assert workers == ["w1=default@" + I1, "w2=default"]
    roster = s.parse_roster(workers)
    assert roster.instances == {"w1": I1} and roster == {"w1": ["default"], "w2": ["default"]}
