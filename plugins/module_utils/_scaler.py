# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Worker scaling: the decision, the scaler daemon and the worker gate.

Copied alone to the hosts as a plain file and run by systemd from Airflow's virtualenv:

* ``python airstrip_scaler.py scaler ...`` on every scheduler host. One is active at a time (a
  PostgreSQL advisory lock on its own connection, tried again every tick by the others). Every
  interval it reads the demand per queue from the metadata database (task instances queued +
  running, the signal KEDA, MWAA and Astro use), the workers' reports from Redis, decides
  (``decide``, pure), and writes each worker host's desired state into a Redis hash. It writes
  a status file, one log line per decision, and optionally CloudWatch metrics. On AWS (worker
  hosts given with their instance id) it also stops the EC2 instance of a host drained and
  stopped, and starts it again when the host is wanted (``ec2_plan``, pure; ``Ec2Fleet``).
* ``python airstrip_scaler.py gate ...`` on every worker host. Every interval it reads its own
  desired state, reports its state back, starts its Celery worker unit, or drains and stops it
  (``drain``): stop consuming, confirm idle twice, then ``systemctl stop`` (the unit's
  KillMode=mixed signals only Celery's main process: a warm shutdown). A worker that got a task
  meanwhile consumes again and says so, and the scaler picks another. Nothing here ever signals
  a pool child: with Airflow 3.3.2 a SIGTERM reaching a task kills it.

Redis layout (``<env>`` the environment's name):

* ``airstrip:<env>:workers``, hash, written by the scaler: host -> JSON
  ``{"desired": "running"|"stopped", "generation": n, "since": t, "reason": "..."}``;
* ``airstrip:<env>:worker-state``, hash, written by each gate: host -> JSON ``{"state":
  "running"|"starting"|"draining"|"stopping"|"stopped"|"failed", "active": n, "reserved": n,
  "since": t, "updated": t, "queues": [...], "generation": n, "refused": n|null, "node": ...}``;
* ``airstrip:<env>:scaler``, string with a TTL, written by the active scaler: its last decision
  (JSON: num_workers, desired_workers, queued, running, queues, unserved_queues, reason, ...).

Status files (JSON, replaced atomically): the scaler's has leader, healthy, error, num_workers,
desired_workers, queued, running, queues {queue: queued, running, needed, desired},
unserved_queues, reason, actions, workers {host: how it was seen}, last_action, config, and
with EC2 instances, instances {host: EC2 state}, ec2_actions, ec2_error, last_ec2_action (a
standby's has active_scaler instead); the gate's has its report plus last_drain and error.

Stdlib only at import time; psycopg2 (or psycopg), redis, celery and boto3 are imported where
they are used, from Airflow's virtualenv (apache-airflow[celery,postgres,amazon]).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

DEFAULTS = {
    "min_workers": 1,
    "max_workers": 1,
    "concurrency": 16,
    "target_utilization": 1.0,
    # A worker started is kept at least this long (MWAA's 3 minute warm-up); a host asked to start
    # that is not running after this long no longer counts as capacity.
    "warmup": 180.0,
    # Scale in only after the surplus has held this long (the HPA default, Astro's 5 minutes).
    "stabilization": 300.0,
    # An instance is stopped only once it has been up this long: a deploy starts a stopped
    # worker's instance to configure it (ec2_hosts), and must not lose it half-way.
    "instance_min_uptime": 900.0,
}
DEFAULT_QUEUE = "default"
DEFAULT_UNIT = "airflow-celery-worker"
SCALER_INTERVAL = 15.0
GATE_INTERVAL = 5.0
# A gate's report older than this is not believed: the host counts as unknown.
STALE_AFTER = 60.0
# Combinations of hosts per queue set tried for the exact smallest cover, then greedy.
MAX_COMBINATIONS = 20000

RUNNING, STOPPED = "running", "stopped"
START, DRAIN = "start", "drain"

# How decide() sees a host, best kept first: busy and booting hosts must run anyway, hosts in
# their warm-up cannot be drained, a draining host is revived faster than a stopped one boots.
TIERS = ("busy", "pending", "warming", "idle", "draining", "stopped", "unknown")
ACTIVE = frozenset(["busy", "pending", "warming", "idle"])
UP = frozenset(["busy", "warming", "idle"])


def workers_key(environment):
    return "airstrip:%s:workers" % environment


def state_key(environment):
    return "airstrip:%s:worker-state" % environment


def scaler_key(environment):
    return "airstrip:%s:scaler" % environment


def lock_name(environment):
    return "airstrip-scaler-%s" % environment


# ---------------------------------------------------------------------------------------------
# The decision (pure).

Decision = collections.namedtuple("Decision", "desired actions reason total needed unserved state classes")
Decision.__doc__ = """What decide() returns.

desired: {queue: running hosts serving it once the actions are done}; actions: [("start" |
"drain", host)]; reason: one line saying why; total: the workers wanted (always in [min_workers,
max_workers]); needed: {queue: ceil(demand / (concurrency x target))}; unserved: {queue: tasks}
for queues with tasks that no worker host serves; state: the memory to pass to the next call;
classes: {host: one of TIERS}, how each host was seen."""


def config_with_defaults(config):
    merged = dict(DEFAULTS)
    merged.update(dict((k, v) for k, v in (config or {}).items() if v is not None))
    if merged["concurrency"] < 1:
        raise ValueError("concurrency must be at least 1")
    if merged["target_utilization"] <= 0:
        raise ValueError("target_utilization must be more than 0")
    if merged["min_workers"] < 0 or merged["max_workers"] < merged["min_workers"]:
        raise ValueError("need 0 <= min_workers <= max_workers, got %s and %s" % (merged["min_workers"], merged["max_workers"]))
    return merged


def workers_needed(demand, concurrency, target_utilization=1.0):
    """ceil(demand / (concurrency x target_utilization)), robust to float noise (27 / 9.000000001)."""
    if demand <= 0:
        return 0
    return int(math.ceil(demand / (concurrency * float(target_utilization)) - 1e-9))


def _count(value):
    """Demand for a queue: a number, or {"queued": q, "running": r}."""
    if isinstance(value, dict):
        return int(value.get("queued") or 0) + int(value.get("running") or 0)
    return int(value or 0)


def is_busy(worker):
    """Whether a host has work: busy true, or an active (or reserved) count above 0. Unknown
    counts as busy, so that a host nobody measured is never drained."""
    busy = worker.get("busy")
    if busy is None:
        return True
    if isinstance(busy, bool):
        return busy
    return busy > 0


def classify(worker, now, config):
    """One of TIERS for a host record {queues, state, started_at, busy, desired, desired_at,
    booting}. state is what its gate reported (None: no fresh report); desired what the scaler
    asked (None: never asked, the host keeps what Ansible gave it); booting (optional) that its
    EC2 instance is starting and its gate has not reported since (see with_instances)."""
    state, desired = worker.get("state"), worker.get("desired")
    warmup = config["warmup"]
    asked_at = worker.get("desired_at")
    recently_asked = asked_at is not None and now - asked_at < warmup
    if worker.get("booting") and desired != STOPPED:
        return "pending"  # its EC2 instance boots: the gate has not said anything since
    if state in ("draining", "stopping"):
        return "draining"
    if state == RUNNING:
        if desired == STOPPED:
            return "draining"  # the gate will drain it within its interval
        if is_busy(worker):
            return "busy"
        started = worker.get("started_at")
        if started is not None and now - started < warmup:
            return "warming"
        return "idle"
    if state == "starting":
        return "pending" if desired != STOPPED and (recently_asked or asked_at is None) else "unknown"
    if desired == RUNNING:
        return "pending" if recently_asked else "unknown"
    if state in (STOPPED, "failed"):
        return "stopped"
    return "unknown"


def _host_key(classes):
    def key(host):
        return (TIERS.index(classes[host]), host)
    return key


def _best_cover(types, want, max_hosts):
    """({queue set: hosts to run}, shortfall) covering want ({queue: hosts}) with the fewest
    hosts, at most max_hosts; types: {queue set: ([hosts, best first], [their tier ranks])}.
    Lexicographic goal: the least shortfall, then the fewest hosts, then the best-ranked hosts
    (the least churn). None when there are too many combinations to try them all."""
    keys = sorted(types, key=sorted)
    ranges = [range(len(types[k][0]) + 1) for k in keys]
    combinations = 1
    for r in ranges:
        combinations *= len(r)
    if combinations > MAX_COMBINATIONS:
        return None
    best, best_score = None, None
    for counts in itertools.product(*ranges):
        size = sum(counts)
        if size > max_hosts:
            continue
        cover = dict((q, 0) for q in want)
        rank = 0
        for k, n in zip(keys, counts):
            for q in k:
                if q in cover:
                    cover[q] += n
            rank += sum(types[k][1][:n])
        score = (sum(max(0, want[q] - cover[q]) for q in want), size, rank)
        if best_score is None or score < best_score:
            best, best_score = dict(zip(keys, counts)), score
    return dict((k, types[k][0][:n]) for k, n in best.items()), best_score[0]


def _greedy_cover(hosts, queues_of, want, max_hosts, key):
    chosen, cover = [], dict((q, 0) for q in want)
    while len(chosen) < max_hosts:
        gains = [(-sum(1 for q in queues_of[h] if cover.get(q, 0) < want.get(q, 0)), key(h), h)
                 for h in hosts if h not in chosen]
        gains = [g for g in gains if g[0] < 0]
        if not gains:
            break
        host = min(gains)[2]
        chosen.append(host)
        for q in queues_of[host]:
            if q in cover:
                cover[q] += 1
    return chosen, sum(max(0, want[q] - cover[q]) for q in want)


def _ago(seconds):
    return "%d s" % int(round(seconds))


def decide(state, now, demand, workers, config):
    """The scaling decision of one tick. Pure.

    state: what the previous call returned as .state ({} the first time); now: seconds (epoch);
    demand: {queue: tasks queued + running} (or {queue: {"queued", "running"}}); workers: {host:
    {"queues": [...], "state": reported or None, "started_at": t, "busy": bool or active count,
    "desired": what the scaler last asked or None, "desired_at": t}}; config: min_workers,
    max_workers, concurrency, target_utilization, warmup, stabilization (DEFAULTS for missing).

    Rules:
    * per queue, needed = ceil(demand / (concurrency x target_utilization)), at most the hosts
      serving it. A host serving several queues counts once for each of them, since Celery
      takes from all of them into the same slots; to keep shared hosts honest the fleet must
      also hold the whole demand: total = clamp(max(the fewest hosts covering every queue's
      need, ceil(all served demand / (concurrency x target)) at most the hosts serving a queue
      with tasks), min_workers, max_workers); max_workers when some queue's need does not fit;
    * which hosts: the smallest cover, preferring (in order) busy, booting, warming and idle
      running hosts, then draining ones (revived), then stopped ones, then hosts whose gate is
      silent; then filled up to total with hosts serving a queue that has tasks first;
    * scale-out is immediate: every host of that set not running is started in the same tick,
      never past max_workers running or booting (at max_workers, a host serving the wrong
      queues is drained first, after the stabilization window, and the right one started once
      it is gone: the one case where the running count may dip below min_workers for a boot);
    * scale-in: only when some running host is outside the set, continuously for stabilization
      seconds, down to the largest total of that window; only idle hosts past their warm-up,
      never a busy one, never below min_workers;
    * a host asked to start that is not running after warmup seconds is no longer counted, and
      is told to stop when it is not wanted (it never ran a task);
    * tasks on a queue no host serves are reported in unserved and in the reason.
    """
    config = config_with_defaults(config)
    state = dict(state or {})
    lo, hi = int(config["min_workers"]), int(config["max_workers"])
    per_worker = config["concurrency"] * float(config["target_utilization"])
    counts = dict((q or DEFAULT_QUEUE, 0) for q in demand)
    for q, v in demand.items():
        counts[q or DEFAULT_QUEUE] += _count(v)

    queues_of = dict((h, tuple(sorted(set(w.get("queues") or [DEFAULT_QUEUE])))) for h, w in workers.items())
    classes = dict((h, classify(w, now, config)) for h, w in workers.items())
    key = _host_key(classes)
    hosts = sorted(workers, key=key)
    serving = collections.defaultdict(list)
    for h in hosts:
        for q in queues_of[h]:
            serving[q].append(h)

    unserved = dict((q, n) for q, n in counts.items() if n > 0 and not serving.get(q))
    needed = dict((q, workers_needed(n, config["concurrency"], config["target_utilization"])) for q, n in counts.items())
    want = dict((q, min(n, len(serving[q]))) for q, n in needed.items() if n > 0 and serving.get(q))
    served_demand = sum(n for q, n in counts.items() if serving.get(q))

    # The smallest set of hosts covering every queue's need.
    types = {}
    for h in hosts:
        types.setdefault(frozenset(queues_of[h]), ([], []))
        types[frozenset(queues_of[h])][0].append(h)
        types[frozenset(queues_of[h])][1].append(TIERS.index(classes[h]))
    found = _best_cover(types, want, hi) if want else ({}, 0)
    if found is None:
        chosen, shortfall = _greedy_cover(hosts, queues_of, want, hi, key)
    else:
        chosen, shortfall = sorted((h for group in found[0].values() for h in group), key=key), found[1]
    # The slots for all of it; some queue cannot get all it needs within max_workers: want them all.
    base = hi if shortfall else max(len(chosen), workers_needed(served_demand, per_worker, 1.0))
    total = max(lo, min(hi, base))

    # Filled up to total with hosts that serve a queue with tasks (the best kept first), and up
    # to min_workers with any: a host serving none of them adds no useful slot.
    useful = set(q for q, n in counts.items() if n > 0)
    rest = [h for h in hosts if h not in chosen]
    helpers = [h for h in rest if useful.intersection(queues_of[h])]
    others = [h for h in rest if not useful.intersection(queues_of[h])]
    target = chosen + helpers[:max(0, total - len(chosen))]
    target += others[:max(0, min(lo, total) - len(target))]
    target_set = set(target)

    active = [h for h in hosts if classes[h] in ACTIVE]
    actions, notes = [], []

    # Scale out now, never past max_workers.
    room = hi - len(active)
    starts = wanted = [h for h in target if classes[h] not in ACTIVE]
    if len(starts) > room:
        notes.append("%d start(s) wait for a drain (max_workers %d)" % (len(starts) - max(room, 0), hi))
        starts = starts[:max(room, 0)]
    actions.extend((START, h) for h in starts)

    # Booted too long ago without coming up, and not wanted: stop asking.
    for h in hosts:
        if classes[h] == "unknown" and workers[h].get("desired") == RUNNING and h not in target_set:
            actions.append((DRAIN, h))
            notes.append("%s did not come up within %s" % (h, _ago(config["warmup"])))

    # Scale in, only after the surplus has held for the stabilization window.
    # The hosts wanted over the window (not total: total may be more than the hosts that help).
    window = [(t, n) for t, n in state.get("history", []) if t > now - config["stabilization"]] + [(now, len(target))]
    surplus = [h for h in active if h not in target_set]
    if surplus:
        since = state.get("surplus_since")
        if since is None or since > now:
            since = now
        state["surplus_since"] = since
        held = now - since
        if held >= config["stabilization"]:
            floor = max(lo, max(n for _t, n in window))
            # Starts held back by max_workers count: at max_workers, a host serving the wrong
            # queues must go before the right one can start (running may dip by one boot).
            room_in = len(active) + len(wanted) - floor
            idle = [h for h in surplus if classes[h] == "idle"]
            drains = sorted(idle)[:max(0, room_in)]
            actions.extend((DRAIN, h) for h in drains)
            kept = [h for h in surplus if h not in drains]
            if kept:
                notes.append("kept %s" % ", ".join("%s (%s)" % (h, _why_kept(classes[h], workers[h], now, config))
                                                   for h in kept))
        else:
            notes.append("surplus of %d for %s, scale-in after %s" % (
                len(surplus), _ago(held), _ago(config["stabilization"])))
    else:
        state["surplus_since"] = None
    state["history"] = [[t, n] for t, n in window]

    desired = dict((q, sum(1 for h in target if q in queues_of[h])) for q in set(serving) | set(counts))
    if hosts and len(target) < total:
        notes.append("only %d host(s) can serve the queues with tasks" % len(target))
    reason = _reason(counts, per_worker, needed, total, active, classes, actions, notes, unserved, hosts)
    return Decision(desired, actions, reason, total, needed, unserved, state, classes)


def _why_kept(tier, worker, now, config):
    if tier == "warming":
        return "warm-up, %s left" % _ago(config["warmup"] - (now - worker.get("started_at", now)))
    if tier == "busy":
        return "busy"
    if tier == "pending":
        return "starting"
    return "wanted within the stabilization window"


def _reason(counts, per_worker, needed, total, active, classes, actions, notes, unserved, hosts):
    demand = sum(counts.values())
    parts = ["demand %d (%s)" % (demand, ", ".join("%s=%d" % kv for kv in sorted(counts.items())) or "none")]
    parts.append("%s per worker -> %d wanted" % (("%g" % per_worker), total))
    up = sum(1 for h in active if classes[h] in UP)
    parts.append("%d running, %d starting of %d hosts" % (up, len(active) - up, len(hosts)))
    if actions:
        parts.append("; ".join("%s %s" % a for a in actions))
    else:
        parts.append("steady")
    parts.extend(notes)
    if unserved:
        parts.append("UNSERVED queue(s) no worker host serves: %s" % ", ".join(
            "%s (%d task(s))" % kv for kv in sorted(unserved.items())))
    if not hosts:
        parts.append("no worker hosts known")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# The metadata database: demand per queue, running tasks per worker host.

DEMAND_SQL = (
    "SELECT queue,"
    " count(*) FILTER (WHERE state = 'queued') AS queued,"
    " count(*) FILTER (WHERE state = 'running') AS running"
    " FROM task_instance"
    " WHERE state IN ('queued', 'running')"
    " AND (executor IS NULL OR executor LIKE '%CeleryExecutor')"
    " GROUP BY queue"
)
RUNNING_BY_HOST_SQL = (
    "SELECT hostname, count(*) FROM task_instance"
    " WHERE state = 'running' AND hostname IS NOT NULL AND hostname <> ''"
    " GROUP BY hostname"
)
LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext(%s))"


def demand_from_rows(rows):
    """{queue: {"queued", "running"}} from DEMAND_SQL's rows (a NULL queue is the default)."""
    demand = {}
    for queue, queued, running in rows:
        entry = demand.setdefault(queue or DEFAULT_QUEUE, {"queued": 0, "running": 0})
        entry["queued"] += int(queued or 0)
        entry["running"] += int(running or 0)
    return demand


def host_matches(task_hostname, host):
    """task_instance.hostname is the worker's FQDN; a host key may be its short name."""
    a, b = task_hostname.lower(), host.lower()
    return a == b or a.split(".")[0] == b.split(".")[0]


def libpq_url(url):
    """SQLAlchemy's postgresql+psycopg2://... as libpq wants it (postgresql://...)."""
    scheme, sep, rest = url.partition("://")
    if sep and "+" in scheme:
        scheme = scheme.split("+")[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return scheme + sep + rest


def _connect(url):
    try:
        import psycopg2 as driver
    except ImportError:  # Airflow's postgres extra brings psycopg2; psycopg 3 is the fallback
        try:
            import psycopg as driver
        except ImportError:
            raise ImportError("neither psycopg2 nor psycopg is installed: run the scaler with Airflow's virtualenv")
    conn = driver.connect(libpq_url(url), connect_timeout=5, application_name="airstrip-scaler")
    conn.autocommit = True
    return conn


class Database:
    """Two connections: one holding the advisory lock for as long as this scaler leads, one for
    the queries (autocommit, so that no transaction stays open between ticks)."""

    def __init__(self, url, connect=_connect):
        self.url = url
        self.connect = connect
        self.lock_conn = None
        self.query_conn = None

    def _query(self, sql, params=None, conn=None):
        if conn is None:
            if self.query_conn is None:
                self.query_conn = self.connect(self.url)
            conn = self.query_conn
        cur = conn.cursor()
        try:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, params)
            return cur.fetchall()
        finally:
            cur.close()

    def lead(self, name):
        """Whether this process holds the lock, trying to take it when it does not."""
        try:
            if self.lock_conn is not None:
                self._query("SELECT 1", conn=self.lock_conn)
                return True
        except Exception:
            self._close("lock_conn")  # the connection died and the lock with it
        conn = self.connect(self.url)
        try:
            held = bool(self._query(LOCK_SQL, (name,), conn=conn)[0][0])
        except Exception:
            conn.close()
            raise
        if held:
            self.lock_conn = conn
        else:
            conn.close()
        return held

    def demand(self):
        try:
            return demand_from_rows(self._query(DEMAND_SQL))
        except Exception:
            self._close("query_conn")
            raise

    def running_by_host(self):
        try:
            return dict((h, int(n)) for h, n in self._query(RUNNING_BY_HOST_SQL))
        except Exception:
            self._close("query_conn")
            raise

    def _close(self, attr):
        conn = getattr(self, attr)
        setattr(self, attr, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self):
        self._close("query_conn")
        self._close("lock_conn")


# ---------------------------------------------------------------------------------------------
# Redis encoding.

def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def encode_desired(desired, generation, since, reason=""):
    if desired not in (RUNNING, STOPPED):
        raise ValueError("desired must be running or stopped, not %r" % (desired,))
    return _json({"desired": desired, "generation": int(generation), "since": since, "reason": reason})


def decode_desired(raw):
    """{"desired", "generation", "since", "reason"}, or None for a missing or unreadable field."""
    try:
        data = json.loads(_text(raw)) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("desired") not in (RUNNING, STOPPED):
        return None
    try:
        data["generation"] = int(data.get("generation") or 0)
    except (TypeError, ValueError):
        data["generation"] = 0
    return data


def encode_report(report):
    return _json(report)


def decode_report(raw):
    try:
        data = json.loads(_text(raw)) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("state"), str) else None


def decode_hash(raw, decode):
    return dict((_text(k), v) for k, v in ((k, decode(v)) for k, v in (raw or {}).items()) if v is not None)


def worker_view(roster, desired, reports, running_by_host, now, stale_after=STALE_AFTER):
    """decide()'s workers from what the scaler reads. roster: {host: [queues]} (None: the
    hosts that report); desired: decoded workers hash; reports: decoded worker-state hash;
    running_by_host: {task_instance.hostname: running tasks}."""
    if roster is None:
        roster = dict((h, r.get("queues") or [DEFAULT_QUEUE]) for h, r in reports.items())
    view = {}
    for host, queues in roster.items():
        report = reports.get(host)
        if report is not None and now - float(report.get("updated") or 0) > stale_after:
            report = None
        intent = desired.get(host)
        # The gate refused this drain (a task arrived): the host runs as if never asked.
        if intent and report and report.get("refused") == intent.get("generation") and intent["desired"] == STOPPED:
            intent = None
        tasks = sum(n for h, n in running_by_host.items() if host_matches(h, host))
        busy = None
        if report is not None and report.get("active") is not None:
            busy = int(report.get("active") or 0) + int(report.get("reserved") or 0) + tasks
        elif report is not None and report.get("state") != RUNNING:
            busy = tasks
        view[host] = {
            "queues": list(queues or [DEFAULT_QUEUE]),
            "state": report.get("state") if report else None,
            "started_at": report.get("since") if report and report.get("state") == RUNNING else None,
            "busy": busy,
            "desired": intent["desired"] if intent else None,
            "desired_at": intent.get("since") if intent else None,
        }
    return view


# ---------------------------------------------------------------------------------------------
# EC2 stop/start of the worker instances (pure): on AWS a worker host beyond the minimum is
# stopped once drained, and started again on demand, so that an idle environment costs only its
# minimum. Hosts without an instance id (on-premises) are never touched.

EC2_START, EC2_STOP = "start", "stop"
# EC2 instance ids: i- and 8 (old) or 17 hex digits.
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
# Instance states in which nothing runs on the host.
HALTED = frozenset(["stopped", "stopping"])

Ec2Action = collections.namedtuple("Ec2Action", "verb host instance why")
Ec2Action.__doc__ = """One EC2 call ec2_plan() asks for: verb "start" or "stop", the host, its
instance id, and why (for the log line)."""


def with_instances(view, instance_of, instances, reports, now, warmup):
    """decide()'s workers corrected by what EC2 says of their instances. view: worker_view()'s;
    instance_of: {host: instance id}; instances: {instance id: {"state": EC2's state name,
    "launched": t}} (a host whose instance is not in it stays as it is); reports: the decoded
    worker-state hash. Returns a new view:

    * stopped or stopping: the host is stopped (startable), whatever its gate said last: a
      stopped instance has no gate to refresh its report;
    * pending, or running for less than warmup without a report sent since it booted: booting
      (classify: pending, being started), so that decide() starts no other host for it;
    * shutting-down or terminated: nothing known (unknown, never chosen before the others).
    """
    out = {}
    for host, worker in view.items():
        worker = dict(worker)
        instance = instances.get(instance_of[host]) if instance_of.get(host) else None
        if instance:
            name, launched = instance.get("state"), instance.get("launched")
            updated = float((reports.get(host) or {}).get("updated") or 0)
            if name in HALTED:
                worker.update(state=STOPPED, started_at=None, busy=0)
            elif name == "pending" or (name == RUNNING and launched is not None and now - launched < warmup
                                       and updated < launched):
                worker["booting"] = True
            elif name in ("shutting-down", "terminated"):
                worker.update(state=None, started_at=None)
        out[host] = worker
    return out


def ec2_plan(instance_of, instances, desired, reports, running_by_host, actions, classes, now,
             stale_after=STALE_AFTER, min_uptime=0.0):
    """The EC2 calls of one tick, after decide(): [Ec2Action], by host. Pure.

    instance_of: {host: instance id}; instances: {instance id: {"state", "launched"}} (an
    instance not in it is left alone); desired: the decoded workers hash before this tick's
    writes; reports: the decoded worker-state hash; running_by_host: {task_instance.hostname:
    running tasks}; actions and classes: the Decision's.

    * start: the host is desired running once this tick's actions are written, and its
      instance is stopped (a stopping one waits: it is started the tick it is stopped); its
      gate boots with it, reads desired running and starts the worker;
    * stop, only when all hold: its instance is running; the host is desired stopped and this
      tick did not change that (the gate must have seen the generation it confirms); its
      gate's fresh report, sent since the instance booted, says stopped for that generation,
      nothing active or reserved; the database has no task running on it; decide() saw it
      stopped (not busy, draining, booting); the instance has been up min_uptime seconds
      (a deploy that started it to configure it is not cut off). A host desired running,
      busy or draining is never stopped.
    """
    touched = dict((h, RUNNING if verb == START else STOPPED) for verb, h in actions)
    plan = []
    for host in sorted(instance_of):
        instance_id = instance_of[host]
        instance = instances.get(instance_id)
        if not instance:
            continue
        name = instance.get("state")
        intent = desired.get(host) or {}
        want = touched.get(host, intent.get("desired"))
        if want == RUNNING:
            if name == STOPPED:
                plan.append(Ec2Action(EC2_START, host, instance_id, "desired running, its instance stopped"))
            continue
        if want != STOPPED or host in touched or name != RUNNING or classes.get(host) != "stopped":
            continue
        report = reports.get(host) or {}
        updated = float(report.get("updated") or 0)
        if report.get("state") != STOPPED or now - updated > stale_after:
            continue
        if report.get("generation") != intent.get("generation"):
            continue
        if int(report.get("active") or 0) + int(report.get("reserved") or 0) > 0:
            continue
        launched = instance.get("launched")
        if launched is not None and (updated < launched or now - launched < min_uptime):
            continue
        if sum(n for h, n in running_by_host.items() if host_matches(h, host)):
            continue
        plan.append(Ec2Action(EC2_STOP, host, instance_id, "drained and stopped (generation %s), no task running"
                              % intent.get("generation")))
    return plan


# ---------------------------------------------------------------------------------------------
# Small helpers shared by both daemons (this file is copied alone, so they live here).

def write_status(path, status):
    if not path:
        return
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status, f, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _log(message):
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _describe(exc):
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        err = response["Error"]
        return "%s: %s" % (err.get("Code", "Error"), err.get("Message", "") or str(exc))
    return ("%s: %s" % (type(exc).__name__, exc)).strip().rstrip(":")


def redact(url):
    """A URL without its password, for log lines."""
    scheme, sep, rest = (url or "").partition("://")
    if not sep or "@" not in rest.split("/")[0]:
        return url
    cred, at, tail = rest.partition("@")
    user = cred.split(":")[0]
    return "%s://%s%s%s" % (scheme, user + ":***" if ":" in cred else user, at, tail)


def make_redis(url):
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


class CloudWatch:
    """The scaler's few gauges, one PutMetricData a tick; errors logged once, never fatal."""

    def __init__(self, namespace, environment, region=None, endpoint_url=None, client=None):
        self.namespace, self.environment = namespace, environment
        self.region, self.endpoint_url = region, endpoint_url
        self.client = client
        self.last_error = None

    def send(self, values, now=None):
        import datetime

        stamp = datetime.datetime.fromtimestamp(now or time.time(), tz=_utc())
        dims = [{"Name": "Environment", "Value": self.environment}]
        data = [{"MetricName": k, "Dimensions": dims, "Timestamp": stamp, "Value": float(v), "Unit": "Count"}
                for k, v in sorted(values.items())]
        error = None
        try:
            if self.client is None:
                import boto3
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
                self.client = boto3.session.Session().client("cloudwatch", region_name=self.region or None,
                                                             endpoint_url=self.endpoint_url or None, config=config)
            self.client.put_metric_data(Namespace=self.namespace, MetricData=data)
        except Exception as e:  # botocore's ClientError, EndpointConnectionError, NoCredentialsError...
            error = "cannot put metrics in CloudWatch namespace %s (%s)" % (self.namespace, _describe(e))
        if error != self.last_error:
            _log(("ERROR " + error) if error else "sending to CloudWatch works again")
        self.last_error = error
        return error


def _utc():
    import datetime

    return datetime.timezone.utc


def _epoch(value):
    """Seconds since the epoch of botocore's datetime (or None)."""
    return value.timestamp() if hasattr(value, "timestamp") else None


class Ec2Fleet:
    """The worker hosts' EC2 instances: their states in one DescribeInstances, StartInstances,
    StopInstances. Region and endpoint as boto3 reads them (AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL_EC2, then AWS_ENDPOINT_URL) unless given. Errors are raised: the scaler
    logs them and tries again next tick."""

    def __init__(self, region=None, endpoint_url=None, client=None):
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or None
        self.endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_EC2")
                             or os.environ.get("AWS_ENDPOINT_URL") or None)
        self.client = client

    def _ec2(self):
        if self.client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
            self.client = boto3.session.Session().client("ec2", region_name=self.region, endpoint_url=self.endpoint_url,
                                                         config=config)
        return self.client

    def states(self, instance_ids):
        """{instance id: {"state": EC2's name, "launched": t}}; an id EC2 does not know is left out
        (a filter, not InstanceIds, so that one unknown id does not fail the whole call)."""
        ids = sorted(set(i for i in instance_ids if i))
        found, token = {}, None
        while ids:
            kwargs = {"Filters": [{"Name": "instance-id", "Values": ids}]}
            if token:
                kwargs["NextToken"] = token
            page = self._ec2().describe_instances(**kwargs)
            for reservation in page.get("Reservations") or []:
                for instance in reservation.get("Instances") or []:
                    found[instance["InstanceId"]] = {"state": instance["State"]["Name"],
                                                     "launched": _epoch(instance.get("LaunchTime"))}
            token = page.get("NextToken")
            if not token:
                break
        return found

    def start(self, instance_id):
        """StartInstances; returns the instance's state after the call (pending)."""
        answer = self._ec2().start_instances(InstanceIds=[instance_id])
        return answer["StartingInstances"][0]["CurrentState"]["Name"]

    def stop(self, instance_id):
        """StopInstances; returns the instance's state after the call (stopping)."""
        answer = self._ec2().stop_instances(InstanceIds=[instance_id])
        return answer["StoppingInstances"][0]["CurrentState"]["Name"]


# ---------------------------------------------------------------------------------------------
# The scaler daemon.

class Scaler:
    """fleet: an Ec2Fleet (or None): the hosts of instances ({host: instance id}, by default the
    roster's .instances) have their EC2 instance stopped once drained and started on demand."""

    def __init__(self, environment, config, database, redis_client, roster=None, status_file=None, cloudwatch=None,
                 stale_after=STALE_AFTER, clock=time.time, interval=SCALER_INTERVAL, fleet=None, instances=None):
        self.environment = environment
        self.config = config_with_defaults(config)
        self.db, self.redis = database, redis_client
        self.roster = roster
        self.status_file = status_file
        self.cloudwatch = cloudwatch
        self.stale_after = stale_after
        self.clock = clock
        self.interval = interval
        self.state = {}
        self.leader = False
        self.last_logged = None
        self.last_error = None
        self.last_action = None
        self.stopping = threading.Event()
        self.hostname = socket.gethostname()
        self.fleet = fleet
        self.instances = dict(instances if instances is not None else getattr(roster, "instances", None) or {})
        # When this scaler started each instance: moto (and a clock behind EC2's) may not move
        # LaunchTime, and a host must count as booting from then on.
        self.boots = {}
        self.describe_error = None
        self.ec2_errors = {}  # (verb, instance) -> the last failure of that call
        self.last_ec2_action = None

    def tick(self):
        """One round; returns the Decision, or None when not leading or something failed."""
        now = self.clock()
        status = {"environment": self.environment, "host": self.hostname, "updated": now, "config": self.config,
                  "interval": self.interval}
        decision, error = None, None
        try:
            leader = self.db.lead(lock_name(self.environment))
            if leader != self.leader:
                _log("this scaler %s" % ("is now the active one" if leader else "is on standby (another holds the lock)"))
                if not leader:
                    self.state = {}
            self.leader = leader
            if leader:
                decision, extra = self._decide(now)
                status.update(extra)
        except Exception as e:  # database or Redis unreachable: change nothing, say so once
            error = "cannot scale: %s; the workers keep their state" % _describe(e)
            if getattr(self.db, "lock_conn", None) is None:
                self.leader = False  # the lock went with its connection
        if error != self.last_error:
            _log(("ERROR " + error) if error else "scaling works again")
            self.last_error = error
        status.update(leader=self.leader, healthy=error is None, error=error, last_action=self.last_action)
        if not self.leader and error is None:
            try:  # the active scaler's view, so that any scheduler host can tell it
                status["active_scaler"] = json.loads(_text(self.redis.get(scaler_key(self.environment))) or "null")
            except Exception:
                status["active_scaler"] = None
        write_status(self.status_file, status)
        return decision

    def _decide(self, now):
        demand = self.db.demand()
        busy = self.db.running_by_host()
        desired = decode_hash(self.redis.hgetall(workers_key(self.environment)), decode_desired)
        reports = decode_hash(self.redis.hgetall(state_key(self.environment)), decode_report)
        instances = self._instance_states(now)
        view = worker_view(self.roster, desired, reports, busy, now, self.stale_after)
        if instances:
            view = with_instances(view, self.instances, instances, reports, now, self.config["warmup"])
        decision = decide(self.state, now, demand, view, self.config)
        self.state = decision.state
        written = self._apply(decision, desired, reports, now)
        ec2_actions = []
        if instances is not None:
            plan = ec2_plan(self.instances, instances, desired, reports, busy, decision.actions, decision.classes, now,
                            self.stale_after, float(self.config["instance_min_uptime"]))
            ec2_actions = self._ec2_apply(plan, instances, now)
        queued = sum(d["queued"] for d in demand.values())
        running = sum(d["running"] for d in demand.values())
        num = sum(1 for c in decision.classes.values() if c in UP)
        summary = {"num_workers": num, "desired_workers": decision.total, "queued": queued, "running": running,
                   "queues": dict((q, {"queued": demand.get(q, {}).get("queued", 0), "running": demand.get(q, {}).get("running", 0),
                                       "needed": decision.needed.get(q, 0), "desired": decision.desired.get(q, 0)})
                                  for q in set(decision.desired) | set(demand)),
                   "unserved_queues": decision.unserved, "reason": decision.reason,
                   "actions": [list(a) for a in decision.actions], "workers": decision.classes, "decided": now}
        if self.fleet is not None and self.instances:
            errors = [self.describe_error] if self.describe_error else sorted(self.ec2_errors.values())
            seen = instances or {}
            summary.update(instances=dict((h, seen.get(i, {}).get("state")) for h, i in self.instances.items()),
                           ec2_actions=ec2_actions, ec2_error="; ".join(errors) or None,
                           last_ec2_action=self.last_ec2_action)
        if written:
            self.last_action = {"at": now, "actions": summary["actions"], "reason": decision.reason}
        self.redis.set(scaler_key(self.environment), _json(dict(summary, host=self.hostname)),
                       ex=int(max(60, 4 * self.interval)))
        logged = (decision.total, num, tuple(sorted(decision.unserved)))
        if written or logged != self.last_logged:
            _log("decision: demand %d (queued %d, running %d), desired %d, workers %d, action %s; %s" % (
                queued + running, queued, running, decision.total, num,
                ", ".join("%s %s" % a for a in decision.actions) or "none", decision.reason))
            self.last_logged = logged
        if self.cloudwatch:
            self.cloudwatch.send({"NumWorkers": num, "DesiredWorkers": decision.total, "QueuedTasks": queued,
                                  "RunningTasks": running,
                                  "NumAdditionalWorkers": max(0, num - int(self.config["min_workers"]))}, now)
        return decision, summary

    def _apply(self, decision, desired, reports, now):
        """Write each action's desired state; returns how many fields changed."""
        changed = 0
        for verb, host in decision.actions:
            want = RUNNING if verb == START else STOPPED
            current = desired.get(host) or {}
            report = reports.get(host) or {}
            refused = current.get("desired") == STOPPED and report.get("refused") == current.get("generation")
            if current.get("desired") == want and not refused:
                continue
            self.redis.hset(workers_key(self.environment), host,
                            encode_desired(want, int(current.get("generation") or 0) + 1, now, verb))
            changed += 1
        return changed

    def _instance_states(self, now):
        """{instance id: {"state", "launched"}} of the roster's instances, or None (no EC2, or
        DescribeInstances failed: then nothing is started or stopped, and it is tried next tick)."""
        if self.fleet is None or not self.instances:
            return None
        try:
            instances = self.fleet.states(self.instances.values())
            error = None
        except Exception as e:  # botocore's ClientError (UnauthorizedOperation, throttling), no endpoint...
            instances, error = None, "ec2: cannot describe the worker instances (%s); again next tick" % _describe(e)
        if error != self.describe_error:
            _log(("ERROR " + error) if error else "ec2: describing the worker instances works again")
        self.describe_error = error
        for instance_id, instance in (instances or {}).items():
            booted = self.boots.get(instance_id)
            if booted is not None and (instance.get("launched") is None or instance["launched"] < booted):
                instance["launched"] = booted
        return instances

    def _ec2_apply(self, plan, instances, now):
        """Make ec2_plan()'s calls, one log line each; a failure is logged (once while it
        stays the same) and the call made again next tick. Returns [[verb, host, instance]] done."""
        done = []
        # A call no longer planned (the host is wanted again, or stopped otherwise) has no error.
        planned = set((a.verb, a.instance) for a in plan)
        for key in [k for k in self.ec2_errors if k not in planned]:
            del self.ec2_errors[key]
        for action in plan:
            key = (action.verb, action.instance)
            try:
                call = self.fleet.start if action.verb == EC2_START else self.fleet.stop
                state = call(action.instance)
            except Exception as e:
                error = "ec2: cannot %s %s (%s): %s; again next tick" % (action.verb, action.instance, action.host,
                                                                         _describe(e))
                if self.ec2_errors.get(key) != error:
                    _log("ERROR " + error)
                self.ec2_errors[key] = error
                continue
            self.ec2_errors.pop(key, None)
            instances[action.instance] = dict(instances[action.instance], state=state)
            if action.verb == EC2_START:
                self.boots[action.instance] = now
                instances[action.instance]["launched"] = now
            _log("ec2: %s %s (%s): %s; now %s" % (action.verb, action.instance, action.host, action.why, state))
            done.append([action.verb, action.host, action.instance])
        if done:
            self.last_ec2_action = {"at": now, "actions": done}
        return done

    def run(self):
        _log("airstrip-scaler for %s: min %d, max %d, concurrency %d, target %g, every %.0f s, warm-up %.0f s, "
             "stabilization %.0f s%s%s" % (
                 self.environment, self.config["min_workers"], self.config["max_workers"], self.config["concurrency"],
                 self.config["target_utilization"], self.interval, self.config["warmup"], self.config["stabilization"],
                 ", CloudWatch namespace " + self.cloudwatch.namespace if self.cloudwatch else "",
                 ", EC2 stop/start of %d worker instance(s)" % len(self.instances) if self.fleet and self.instances
                 else ""))
        while not self.stopping.is_set():
            started = time.time()
            self.tick()
            self.stopping.wait(max(0.5, self.interval - (time.time() - started)))
        self.db.close()
        return 0

    def stop(self, *_args):
        self.stopping.set()


# ---------------------------------------------------------------------------------------------
# The drain: the only way a worker is taken out while it may hold tasks.

def celery_control(broker_url):
    """A Celery app's control for remote control of the workers on this broker."""
    from celery import Celery

    app = Celery("airstrip-gate", broker=broker_url, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, broker_connection_timeout=5,
                    worker_enable_remote_control=True)
    return app.control


def worker_load(control, node, timeout=5.0):
    """(active, reserved) task counts of one Celery node, or None when it did not answer."""
    inspect = control.inspect(destination=[node], timeout=timeout)
    active = (inspect.active() or {}).get(node)
    reserved = (inspect.reserved() or {}).get(node)
    if active is None or reserved is None:
        return None
    return len(active), len(reserved)


def _broadcast_ok(replies, node):
    for reply in replies or []:
        answer = reply.get(node) if isinstance(reply, dict) else None
        if isinstance(answer, dict) and ("ok" in answer or "error" not in answer):
            return True
    return False


def consume(control, node, queues, timeout=5.0):
    """add_consumer for each queue (the worker answers 'already consuming' when it does)."""
    return all(_broadcast_ok(control.add_consumer(q, destination=[node], reply=True, timeout=timeout), node) for q in queues)


DrainResult = collections.namedtuple("DrainResult", "outcome active detail")
DrainResult.__doc__ = """outcome: stopped (idle, then the stop step ran), revived (a task was
there: consuming again), aborted (asked to run again: consuming again), failed (the worker did
not answer or the stop failed: consuming again); active: the tasks seen at the end."""


def drain(control, node, queues, stop, idle_checks=2, idle_gap=20.0, busy_wait=0.0, poll=1.0, timeout=5.0,
          abort=None, sleep=time.sleep, clock=time.time, log=_log):
    """Take a Celery worker out without losing a task.

    1. cancel_consumer for each queue: the worker takes nothing new; messages stay in Redis.
    2. Wait up to busy_wait seconds for the tasks it has (active or reserved) to finish.
    3. Confirm it idle idle_checks times, idle_gap seconds apart.
    4. stop(): systemctl stop of the unit (KillMode=mixed: SIGTERM to Celery's main process
       only, a warm shutdown) -- or, in tests, os.kill(main_pid, SIGTERM).
    Busy at any check, asked to stop draining (abort() true) or no answer: add_consumer again.
    Never signals a pool child."""
    def revive(outcome, active, detail):
        if not consume(control, node, queues, timeout):
            detail += "; and it did not confirm consuming again from %s" % ",".join(queues)
        log("drain of %s: %s, %s" % (node, outcome, detail))
        return DrainResult(outcome, active, detail)

    for q in queues:
        if not _broadcast_ok(control.cancel_consumer(q, destination=[node], reply=True, timeout=timeout), node):
            return revive("failed", None, "no answer to cancel_consumer(%s)" % q)
    log("drain of %s: no longer consuming from %s" % (node, ",".join(queues)))
    deadline = clock() + busy_wait
    idle_seen = 0
    while True:
        if abort is not None and abort():
            return revive("aborted", None, "asked to run again")
        load = worker_load(control, node, timeout)
        if load is None:
            return revive("failed", None, "no answer to inspect")
        busy = load[0] + load[1]
        if busy:
            idle_seen = 0
            if clock() >= deadline:
                return revive("revived", busy, "%d active, %d reserved task(s)" % load)
            sleep(poll)
            continue
        idle_seen += 1
        if idle_seen >= idle_checks:
            break
        sleep(idle_gap)
    try:
        result = stop()
    except Exception as e:
        return revive("failed", 0, "stop failed: %s" % _describe(e))
    if result is False:
        return revive("failed", 0, "stop failed")
    log("drain of %s: idle %d times %s apart, stopped" % (node, idle_checks, _ago(idle_gap)))
    return DrainResult("stopped", 0, "idle %d times, stopped" % idle_checks)


# ---------------------------------------------------------------------------------------------
# The gate daemon.

UNIT_STATES = {"active": RUNNING, "reloading": RUNNING, "activating": "starting", "deactivating": "stopping",
               "inactive": STOPPED, "failed": "failed"}


def systemctl(*args):
    """(return code, stdout) of systemctl; the gate runs it for its own unit only."""
    proc = subprocess.Popen(("systemctl",) + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate()[0]
    return proc.returncode, _text(out).strip()


class Gate:
    def __init__(self, environment, host, queues, redis_client, control, unit=DEFAULT_UNIT, node=None,
                 idle_checks=2, idle_gap=20.0, busy_wait=0.0, status_file=None, run=systemctl,
                 clock=time.time, sleep=time.sleep, timeout=5.0):
        self.environment, self.host, self.queues = environment, host, list(queues)
        self.redis, self.control = redis_client, control
        self.unit = unit
        self.node = node or "celery@" + socket.gethostname()
        self.idle_checks, self.idle_gap, self.busy_wait = idle_checks, idle_gap, busy_wait
        self.status_file = status_file
        self.run_systemctl = run
        self.clock, self.sleep, self.timeout = clock, sleep, timeout
        self.report = {"state": None, "active": None, "reserved": None, "since": None, "generation": None,
                       "refused": None, "queues": self.queues, "node": self.node, "unit": unit}
        self.consuming_checked = False
        self.last_error = None
        self.last_drain = None
        self.stopping = threading.Event()

    def unit_state(self):
        _code, out = self.run_systemctl("is-active", self.unit)
        return UNIT_STATES.get(out.splitlines()[-1] if out else "", STOPPED)

    def desired(self):
        return decode_desired(self.redis.hget(workers_key(self.environment), self.host))

    def publish(self, state, **fields):
        now = self.clock()
        if state != self.report["state"]:
            self.report["since"] = now
        self.report.update(fields, state=state, updated=now)
        self.redis.hset(state_key(self.environment), self.host, encode_report(self.report))
        write_status(self.status_file, dict(self.report, host=self.host, environment=self.environment,
                                            last_drain=self.last_drain, error=self.last_error))

    def measure(self):
        try:
            load = worker_load(self.control, self.node, self.timeout)
        except Exception:
            load = None
        return (None, None) if load is None else load

    def step(self):
        intent = self.desired()
        unit = self.unit_state()
        generation = intent["generation"] if intent else None
        want = intent["desired"] if intent else None
        if want == RUNNING and unit in (STOPPED, "failed"):
            _log("generation %s: starting %s (%s)" % (generation, self.unit, intent.get("reason") or "asked"))
            code, out = self.run_systemctl("start", self.unit)
            if code != 0:
                self.last_error = "systemctl start %s failed: %s" % (self.unit, out[-300:])
                _log("ERROR " + self.last_error)
            else:
                self.last_error = None
            self.consuming_checked = True  # a fresh worker consumes its -Q queues
            self.publish(self.unit_state(), generation=generation, refused=None, active=0, reserved=0)
            return
        if want == STOPPED and unit == RUNNING and generation != self.report.get("refused"):
            self.publish("draining", generation=generation)
            result = drain(self.control, self.node, self.queues, self._stop, self.idle_checks, self.idle_gap,
                           self.busy_wait, timeout=self.timeout, abort=lambda: self._abort(generation),
                           sleep=self.sleep, clock=self.clock)
            self.last_drain = {"generation": generation, "outcome": result.outcome, "detail": result.detail,
                               "at": self.clock()}
            if result.outcome == "stopped":
                self.publish(self.unit_state(), generation=generation, refused=None, active=0, reserved=0)
            else:
                # Say no to this generation: the scaler sees the host running (busy) and asks again.
                refused = generation if result.outcome in ("revived", "failed") else None
                active, reserved = self.measure()
                self.publish(RUNNING, generation=generation, refused=refused, active=active, reserved=reserved)
            return
        if unit == RUNNING and not self.consuming_checked and want != STOPPED:
            # After a gate restart in the middle of a drain the worker would never consume again.
            try:
                self.consuming_checked = consume(self.control, self.node, self.queues, self.timeout)
            except Exception:
                self.consuming_checked = False
        active, reserved = self.measure() if unit == RUNNING else (0, 0)
        self.publish(unit, generation=generation, active=active, reserved=reserved)

    def _stop(self):
        code, out = self.run_systemctl("stop", self.unit)
        if code != 0:
            raise RuntimeError("systemctl stop %s: %s" % (self.unit, out[-300:]))
        return True

    def _abort(self, generation):
        """Between two idle checks: keep the report fresh, and stop draining when asked to run."""
        try:
            self.publish("draining", generation=generation)
            intent = self.desired()
        except Exception:
            return False
        return intent is not None and (intent["desired"] == RUNNING or intent["generation"] != generation)

    def run(self, interval=GATE_INTERVAL):
        _log("airstrip-worker-gate for %s: host %s, node %s, unit %s, queues %s, every %.0f s" % (
            self.environment, self.host, self.node, self.unit, ",".join(self.queues), interval))
        last_error = None
        while not self.stopping.is_set():
            started = time.time()
            try:
                self.step()
                error = None
            except Exception as e:  # Redis or the broker unreachable: do nothing, say so once
                error = "cannot read or report the desired state: %s" % _describe(e)
            if error != last_error:
                _log(("ERROR " + error) if error else "the gate works again")
                last_error = error
            self.stopping.wait(max(0.2, interval - (time.time() - started)))
        return 0

    def stop(self, *_args):
        self.stopping.set()


# ---------------------------------------------------------------------------------------------
# The command line.

class Roster(dict):
    """{host: [queues]}, and .instances: {host: EC2 instance id} for the hosts that have one."""

    def __init__(self, *args, **kwargs):
        dict.__init__(self, *args, **kwargs)
        self.instances = {}


def _instance_id(value, what):
    if not INSTANCE_ID.match(value or ""):
        raise ValueError("%s: %r is not an EC2 instance id (i-0123abcd...)" % (what, value))
    return value


def parse_roster(items, path=None):
    """--worker HOST=Q1,Q2[@INSTANCE] (repeated) and/or --workers-file (JSON {host: [queues]} or
    {host: {"queues": [...], "instance_id": "i-..."}}); a Roster, or None for none."""
    roster = None
    if path:
        with open(path) as f:
            data = json.load(f)
        roster = Roster()
        for h, q in data.items():
            if isinstance(q, dict):
                if q.get("instance_id"):
                    roster.instances[str(h)] = _instance_id(q["instance_id"], "%s in %s" % (h, path))
                q = q.get("queues") or [DEFAULT_QUEUE]
            roster[str(h)] = list(q) if isinstance(q, list) else [str(q)]
    for item in items or []:
        body, at, instance = item.rpartition("@") if "@" in item else (item, "", "")
        host, sep, queues = body.partition("=")
        if not host:
            raise ValueError("--worker wants HOST or HOST=QUEUE[,QUEUE], optionally @INSTANCE_ID, got %r" % item)
        roster = roster if roster is not None else Roster()
        roster[host] = [q for q in queues.split(",") if q] if sep else [DEFAULT_QUEUE]
        if at:
            roster.instances[host] = _instance_id(instance, "--worker %s" % item)
        else:
            roster.instances.pop(host, None)
    return roster


def airflow_urls(path):
    """(database URL, broker URL) from an airflow.cfg (Airflow's own, so that no other file holds
    the passwords); Airflow writes a literal % as %%. A worker host's file has no database URL:
    None (the gate needs the broker only)."""
    try:
        from configparser import ConfigParser
    except ImportError:  # pragma: no cover - Python 2 sanity only
        from ConfigParser import ConfigParser
    parser = ConfigParser()
    if not parser.read(path):
        raise ValueError("cannot read %s" % path)
    database = parser.get("database", "sql_alchemy_conn") if parser.has_option("database", "sql_alchemy_conn") else None
    return database, parser.get("celery", "broker_url")


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Airstrip's Celery worker scaling.")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    s = sub.add_parser("scaler", help="decide the worker count (on the scheduler hosts; one leads)")
    s.add_argument("--environment", required=True)
    s.add_argument("--airflow-config", default=None,
                   help="read the database and broker URLs from this airflow.cfg (instead of the options below)")
    s.add_argument("--database-url", default=None, help="default: $AIRSTRIP_DATABASE_URL (keeps the password out of ps)")
    s.add_argument("--redis-url", default=None, help="default: $AIRSTRIP_REDIS_URL")
    s.add_argument("--min-workers", type=int, required=True)
    s.add_argument("--max-workers", type=int, required=True)
    s.add_argument("--concurrency", type=int, required=True, help="Celery worker_concurrency")
    s.add_argument("--target", type=float, default=DEFAULTS["target_utilization"], help="target slot utilization")
    s.add_argument("--interval", type=float, default=SCALER_INTERVAL)
    s.add_argument("--warmup", type=float, default=DEFAULTS["warmup"])
    s.add_argument("--stabilization", type=float, default=DEFAULTS["stabilization"])
    s.add_argument("--instance-min-uptime", type=float, default=DEFAULTS["instance_min_uptime"],
                   help="seconds an EC2 worker instance stays up before it may be stopped")
    s.add_argument("--worker", action="append", default=[], metavar="HOST=QUEUE[,QUEUE][@INSTANCE_ID]",
                   help="a worker host, its queues and its EC2 instance (stopped once drained, started on demand;"
                        " repeat); default: the hosts whose gates report")
    s.add_argument("--workers-file", default=None, help="JSON {host: [queues]}")
    s.add_argument("--stale-after", type=float, default=STALE_AFTER, help="seconds a gate's report is believed")
    s.add_argument("--namespace", default="", help="CloudWatch namespace; empty: no CloudWatch")
    s.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or None,
                   help="CloudWatch's and EC2's region (EC2's endpoint: $AWS_ENDPOINT_URL_EC2)")
    s.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_CLOUDWATCH") or None)
    s.add_argument("--status-file", default=None)
    s.add_argument("--once", action="store_true", help="one tick, then exit")
    g = sub.add_parser("gate", help="obey the desired state (on each worker host)")
    g.add_argument("--environment", required=True)
    g.add_argument("--airflow-config", default=None,
                   help="read the broker URL (also the Redis URL) from this airflow.cfg")
    g.add_argument("--redis-url", default=None, help="default: $AIRSTRIP_REDIS_URL")
    g.add_argument("--broker-url", default=None, help="Celery's broker; default: $AIRSTRIP_BROKER_URL, then the Redis URL")
    g.add_argument("--host", required=True, help="this host's field in the hash (as the scaler names it)")
    g.add_argument("--queues", default=DEFAULT_QUEUE, help="the queues this worker serves, comma-separated")
    g.add_argument("--node", default=None, help="Celery node name; default celery@<hostname>, as the unit runs it")
    g.add_argument("--unit", default=DEFAULT_UNIT)
    g.add_argument("--interval", type=float, default=GATE_INTERVAL)
    g.add_argument("--idle-checks", type=int, default=2)
    g.add_argument("--idle-gap", type=float, default=20.0)
    g.add_argument("--busy-wait", type=float, default=0.0,
                   help="seconds to let running tasks finish after cancel_consumer before reviving")
    g.add_argument("--status-file", default=None)
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    from_config = (None, None)
    if args.airflow_config:
        try:
            from_config = airflow_urls(args.airflow_config)
        except Exception as e:  # configparser's errors have no common base here
            parser.error("--airflow-config %s: %s" % (args.airflow_config, e))
    redis_url = args.redis_url or os.environ.get("AIRSTRIP_REDIS_URL") or from_config[1]
    if not redis_url:
        parser.error("--redis-url or $AIRSTRIP_REDIS_URL is required")

    if args.command == "scaler":
        database_url = args.database_url or os.environ.get("AIRSTRIP_DATABASE_URL") or from_config[0]
        if not database_url:
            parser.error("--database-url or $AIRSTRIP_DATABASE_URL is required")
        config = {"min_workers": args.min_workers, "max_workers": args.max_workers, "concurrency": args.concurrency,
                  "target_utilization": args.target, "warmup": args.warmup, "stabilization": args.stabilization,
                  "instance_min_uptime": args.instance_min_uptime}
        try:
            config_with_defaults(config)
            roster = parse_roster(args.worker, args.workers_file)
        except (ValueError, OSError, IOError) as e:
            parser.error(str(e))
        cloudwatch = CloudWatch(args.namespace, args.environment, args.region, args.endpoint_url) if args.namespace else None
        fleet = Ec2Fleet(args.region) if roster is not None and roster.instances else None
        scaler = Scaler(args.environment, config, Database(database_url), make_redis(redis_url), roster,
                        args.status_file, cloudwatch, args.stale_after, interval=args.interval, fleet=fleet)
        if args.once:
            scaler.tick()
            scaler.db.close()
            return 0 if scaler.last_error is None else 1
        signal.signal(signal.SIGTERM, scaler.stop)
        signal.signal(signal.SIGINT, scaler.stop)
        return scaler.run()

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if not queues:
        parser.error("--queues names no queue")
    broker_url = args.broker_url or os.environ.get("AIRSTRIP_BROKER_URL") or redis_url
    gate = Gate(args.environment, args.host, queues, make_redis(redis_url), celery_control(broker_url), args.unit,
                args.node, args.idle_checks, args.idle_gap, args.busy_wait, args.status_file)
    signal.signal(signal.SIGTERM, gate.stop)
    signal.signal(signal.SIGINT, gate.stop)
    return gate.run(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
