# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The metrics bridge: Airflow's StatsD in, MWAA's CloudWatch metrics and Prometheus text out.

Copied to every Airflow host as a plain file and run by systemd as ``airstrip-metrics``
(``python airstrip_metrics.py agent ...``), the StatsD receiver on 127.0.0.1:8125/udp:

* parse Airflow's wire format with ``statsd_influxdb_enabled=True``
  (``airflow.<name>[,k=v...]:<value>|<c|g|ms>[|@rate]``, several lines a packet);
* drop the legacy names that embed variables (``pool.open_slots.default_pool``), which Airflow
  sends beside the tagged name while ``legacy_names_on`` is on, so nothing counts twice;
* apply the user's ``metrics_allow_list`` / ``metrics_block_list`` as Airflow's validators do
  (Airflow itself emits everything, as on MWAA, where the sidecar filters);
* every interval, turn what came in into MWAA's metric names and dimensions (MWAA_METRICS) and
  PutMetricData them, at most 1,000 datums a call, keeping a bounded backlog when CloudWatch
  fails;
* serve the current values as Prometheus text on ``/metrics``.

Stdlib only at import time; boto3 is imported by the CloudWatch sender, from Airflow's
virtualenv.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

try:  # Python 3
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from socketserver import ThreadingMixIn
    import queue
except ImportError:  # pragma: no cover - Python 2 sanity only
    from BaseHTTPServer import BaseHTTPRequestHandler, HTTPServer  # noqa: F401
    from SocketServer import ThreadingMixIn  # noqa: F401
    import Queue as queue  # noqa: F401

DEFAULT_PREFIX = "airflow"
DEFAULT_INTERVAL = 60.0
# PutMetricData: at most 1,000 datums and 1 MB a request; stay well under the size.
MAX_DATUMS = 1000
MAX_PAYLOAD = 800000
# Datums kept for the next interval while CloudWatch fails (about 20 minutes of a busy host).
MAX_BACKLOG = 20000
# Prometheus series kept at most (a tag with unbounded values must not eat the host's memory).
MAX_SERIES = 20000
# CloudWatch dimension values are 1-1024 characters.
MAX_DIMENSION_VALUE = 1024

KINDS = {"c": "counter", "g": "gauge", "ms": "timer", "h": "timer"}
# Airflow's stat_name_default_handler: the characters a metric name may have.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/]+$")


class Line(collections.namedtuple("Line", "name tags value kind delta rate stat")):
    """One StatsD line. name: the Airflow name without the prefix; tags: ((key, value), ...) as
    sent; value: a float (a gauge's delta when delta is true); kind: counter, gauge or timer;
    rate: the sample rate; stat: the name as Airflow's validators saw it (name plus ',k=v' tags)."""

    __slots__ = ()


def parse_line(line, prefix=DEFAULT_PREFIX):
    """A Line, or None for a line to ignore (a set, another prefix); ValueError when malformed."""
    head, sep, rest = line.partition("|")
    if not sep:
        raise ValueError("no '|<type>'")
    fields = rest.split("|")
    kind = fields[0]
    if kind == "s":
        return None
    if kind not in KINDS:
        raise ValueError("unknown type %r" % kind)
    rate = 1.0
    for field in fields[1:]:
        if field.startswith("@"):
            rate = float(field[1:])
            if not 0 < rate <= 1:
                raise ValueError("sample rate %r out of (0, 1]" % field)
    # Tag values may hold ':' (a run_id), the value never does.
    stat, sep, text = head.rpartition(":")
    if not sep or not stat or not text:
        raise ValueError("no ':<value>'")
    delta = KINDS[kind] == "gauge" and text[0] in "+-"
    value = float(text)
    if math.isnan(value) or math.isinf(value):
        raise ValueError("value %r is not finite" % text)
    if prefix:
        if not stat.startswith(prefix + "."):
            return None
        stat = stat[len(prefix) + 1:]
    parts = stat.split(",")
    name = parts[0]
    if not NAME_RE.match(name):
        raise ValueError("bad metric name %r" % name)
    tags = []
    for part in parts[1:]:
        key, sep, tag_value = part.partition("=")
        if not sep or not key:
            raise ValueError("bad tag %r" % part)
        tags.append((key, tag_value))
    return Line(name, tuple(tags), value, KINDS[kind], delta, rate, stat)


def parse_packet(data, prefix=DEFAULT_PREFIX):
    """([Line], bad lines, ignored lines) of one UDP packet; never raises."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    lines, bad, ignored = [], 0, 0
    for raw in data.split("\n"):
        raw = raw.strip()
        if not raw:
            continue
        try:
            parsed = parse_line(raw, prefix)
        except ValueError:
            bad += 1
            continue
        if parsed is None:
            ignored += 1
        else:
            lines.append(parsed)
    return lines, bad, ignored


# ---------------------------------------------------------------------------------------------
# Legacy names: with legacy_names_on (the default in 3.3.2) Airflow sends each of these beside
# the tagged name, with the same tags (DualStatsManager). From Airflow's metrics_template.yaml.

LEGACY_NAMES = (
    "operator_failures_{operator_name}",
    "operator_successes_{operator_name}",
    "ti.start.{dag_id}.{task_id}",
    "ti.finish.{dag_id}.{task_id}.{state}",
    "dag.serialization.version_created.{dag_id}.{bundle_name}",
    "dag.serialization.version_updated.{dag_id}.{bundle_name}",
    "task_removed_from_dag.{dag_id}",
    "task_restored_to_dag.{dag_id}",
    "task_instance_created_{task_type}",
    "dag_processing.last_run.seconds_ago.{file_name}",
    "scheduler.dagruns.running.{dag_id}",
    "scheduler.dagruns.queued.{dag_id}",
    "executor.open_slots.{executor_class_name}",
    "executor.queued_tasks.{executor_class_name}",
    "executor.running_tasks.{executor_class_name}",
    "pool.open_slots.{pool_name}",
    "pool.queued_slots.{pool_name}",
    "pool.running_slots.{pool_name}",
    "pool.deferred_slots.{pool_name}",
    "pool.scheduled_slots.{pool_name}",
    "pool.starving_tasks.{pool_name}",
    "triggers.running.{hostname}",
    "triggerer.capacity_left.{hostname}",
    "ti.scheduled.{queue}.{dag_id}.{task_id}",
    "ti.queued.{queue}.{dag_id}.{task_id}",
    "ti.running.{queue}.{dag_id}.{task_id}",
    "ti.deferred.{queue}.{dag_id}.{task_id}",
    "dagrun.dependency-check.{dag_id}",
    "dag.{dag_id}.{task_id}.duration",
    "dag.{dag_id}.{task_id}.scheduled_duration",
    "dag.{dag_id}.{task_id}.queued_duration",
    "dag_processing.last_duration.{bundle_name}.{file_name}",
    "dagrun.duration.success.{dag_id}",
    "dagrun.duration.failed.{dag_id}",
    "dagrun.schedule_delay.{dag_id}",
    "dagrun.{dag_id}.first_task_scheduling_delay",
    "ol.event.size.{event_type}.{operator_name}",
    "ol.emit.attempts.{event_type}.{transport_type}",
    "edge_worker.status.{worker_name}",
    "edge_worker.connected.{worker_name}",
    "edge_worker.maintenance.{worker_name}",
    "edge_worker.jobs_active.{worker_name}",
    "edge_worker.concurrency.{worker_name}",
    "edge_worker.free_concurrency.{worker_name}",
    "edge_worker.num_queues.{worker_name}",
    "edge_worker.heartbeat_count.{worker_name}",
    "edge_worker.ti.start.{queue}.{dag_id}.{task_id}",
    "edge_worker.ti.finish.{queue}.{state}.{dag_id}.{task_id}",
)


def _template_re(template):
    pieces = re.split(r"\{[a-z_]+\}", template)
    return re.compile("^" + ".+".join(re.escape(p) for p in pieces) + "$")


LEGACY_RES = tuple(_template_re(t) for t in LEGACY_NAMES)


def is_legacy(name):
    """Whether an Airflow name (without the prefix) is the legacy form of a tagged metric."""
    return any(r.match(name) for r in LEGACY_RES)


# ---------------------------------------------------------------------------------------------
# The allow and block lists, as Airflow 3.3.2's validators apply them (validators.py): entries
# split on ',', stripped and lowercased; each a regex searched anywhere in the lowercased stat
# (the name without the prefix, with its ',k=v' tags); the allow list wins when both are set.

def split_list(text):
    return tuple(item.strip().lower() for item in text.split(",")) if text else None


def make_validator(allow_list="", block_list=""):
    """A function stat -> whether Airflow would emit it under these lists."""
    allow, block = split_list(allow_list), split_list(block_list)
    entries, keep = (allow, True) if allow else (block, False) if block else (None, True)
    if entries is None:
        return lambda stat: True
    patterns = [re.compile(e) for e in entries]

    def test(stat):
        found = any(p.findall(stat.strip().lower()) for p in patterns)
        return found if keep else not found
    return test


# ---------------------------------------------------------------------------------------------
# MWAA's names, units and dimensions (awsdocs access-metrics-cw-202), for the Airflow 3.3.2
# names. Dimensions: (name, source), source a tag name, '=literal', or '@host' (this host).
# Every datum also has Environment=<env> first.

SCHEDULER = (("Function", "=Scheduler"),)
EXECUTOR = (("Function", "=Executor"),)
DAG_PROCESSING = (("Function", "=DAG Processing"),)
TRIGGERER = (("Function", "=Triggerer"),)
ALL_TASKS = (("DAG", "=All"), ("Task", "=All"))
POOL = (("Pool", "pool_name"),)
DAG = (("DAG", "dag_id"),)
DAG_TASK = (("DAG", "dag_id"), ("Task", "task_id"))
DAG_FILE = (("DAG Filename", "file_name"),)
COUNT, SECONDS, MS = "Count", "Seconds", "Milliseconds"
# Gauges every scheduler (triggerer) emits for its own share: each host sends one Value per
# interval (its last), so that CloudWatch's Sum over the interval is the environment's total
# (MWAA's dimensions, no metric math) and Maximum the busiest host's.
SUMMED = frozenset(["OpenSlots", "QueuedTasks", "RunningTasks", "TriggersRunning", "TriggererCapacityLeft"])

MWAA_METRICS = {
    # Counters
    "scheduler_heartbeat": ("SchedulerHeartbeat", COUNT, SCHEDULER),
    "scheduler.critical_section_busy": ("CriticalSectionBusy", COUNT, SCHEDULER),
    "scheduler.tasks.killed_externally": ("TasksKilledExternally", COUNT, SCHEDULER),
    "scheduler.orphaned_tasks.adopted": ("OrphanedTasksAdopted", COUNT, SCHEDULER),
    "scheduler.orphaned_tasks.cleared": ("OrphanedTasksCleared", COUNT, SCHEDULER),
    "dag_processor_heartbeat": ("DagProcessorHeartbeat", COUNT, DAG_PROCESSING),
    "dag_processing.processes": ("Processes", COUNT, DAG_PROCESSING),
    "dag_processing.processor_timeouts": ("ProcessorTimeouts", COUNT, DAG_PROCESSING),
    "dag_processing.manager_stalls": ("ManagerStalls", COUNT, DAG_PROCESSING),
    "triggerer_heartbeat": ("TriggererHeartbeat", COUNT, (("Function", "=Triggerer"),)),
    "celery.task_timeout_error": ("TaskTimeoutError", COUNT, (("Function", "=Celery"),)),
    "ti_failures": ("TaskInstanceFailures", COUNT, ALL_TASKS),
    "ti_successes": ("TaskInstanceSuccesses", COUNT, ALL_TASKS),
    "previously_succeeded": ("TaskInstancePreviouslySucceeded", COUNT, ALL_TASKS),
    "task_instances_without_heartbeats_killed": ("ZombiesKilled", COUNT, ALL_TASKS),
    "ti.start": ("StartedTaskInstances", COUNT, ALL_TASKS),
    "ti.finish": ("FinishedTaskInstances", COUNT, ALL_TASKS + (("State", "state"),)),
    "dag.callback_exceptions": ("DagCallbackExceptions", COUNT, (("DAG", "=All"),)),
    "operator_failures": ("OperatorFailures", COUNT, (("Operator", "operator_name"),)),
    "operator_successes": ("OperatorSuccesses", COUNT, (("Operator", "operator_name"),)),
    "task_instance_created": ("TaskInstanceCreatedUsingOperator", COUNT, (("Operator", "task_type"),)),
    "task_removed_from_dag": ("TaskRemovedFromDAG", COUNT, DAG),
    "task_restored_to_dag": ("TaskRestoredToDAG", COUNT, DAG),
    # Gauges
    "executor.open_slots": ("OpenSlots", COUNT, EXECUTOR),
    "executor.queued_tasks": ("QueuedTasks", COUNT, EXECUTOR),
    "executor.running_tasks": ("RunningTasks", COUNT, EXECUTOR),
    "scheduler.tasks.starving": ("TasksStarving", COUNT, SCHEDULER),
    "scheduler.tasks.executable": ("TasksExecutable", COUNT, SCHEDULER),
    "dagbag_size": ("DagBagSize", COUNT, DAG_PROCESSING),
    "dag_processing.import_errors": ("ImportErrors", COUNT, DAG_PROCESSING),
    "dag_processing.total_parse_time": ("TotalParseTime", SECONDS, DAG_PROCESSING),
    "dag_processing.last_run.seconds_ago": ("DAGFileProcessingLastRunSecondsAgo", SECONDS, DAG_FILE),
    "pool.open_slots": ("PoolOpenSlots", COUNT, POOL),
    "pool.queued_slots": ("PoolQueuedSlots", COUNT, POOL),
    "pool.running_slots": ("PoolRunningSlots", COUNT, POOL),
    "pool.deferred_slots": ("PoolDeferredSlots", COUNT, POOL),
    "pool.scheduled_slots": ("PoolScheduledSlots", COUNT, POOL),
    "pool.starving_tasks": ("PoolStarvingTasks", COUNT, POOL),
    "triggers.running": ("TriggersRunning", COUNT, TRIGGERER),
    "triggerer.capacity_left": ("TriggererCapacityLeft", COUNT, TRIGGERER),
    # Timers
    "task.duration": ("TaskInstanceDuration", MS, DAG_TASK),
    "scheduler.critical_section_duration": ("CriticalSectionDuration", MS, SCHEDULER),
    "scheduler.scheduler_loop_duration": ("SchedulerLoopDuration", MS, SCHEDULER),
    "collect_db_dags": ("CollectDBDags", MS, DAG_PROCESSING),
    "dag_processing.last_duration": ("DAGFileProcessingLastDuration", MS, DAG_FILE),
    "dagrun.dependency-check": ("DAGDependencyCheck", MS, DAG),
    "dagrun.duration.success": ("DAGDurationSuccess", MS, DAG),
    "dagrun.duration.failed": ("DAGDurationFailed", MS, DAG),
    "dagrun.schedule_delay": ("DAGScheduleDelay", MS, DAG),
    "dagrun.first_task_scheduling_delay": ("FirstTaskSchedulingDelay", MS, DAG),
}
# Names that carry a variable in the tagged form too: <job>_start, <job>_end, <job>_heartbeat_failure.
JOB_RE = re.compile(r"^(?P<job>[A-Za-z]+Job)_(?P<event>start|end|heartbeat_failure)$")
JOB_METRICS = {"start": "JobStart", "end": "JobEnd", "heartbeat_failure": "JobHeartbeatFailure"}


def mwaa_metric(name, tags, environment, host):
    """(MWAA metric name, unit, ((dimension, value), ...)) of an Airflow metric, or None when it
    has no MWAA name, or lacks a tag its dimensions need (sent without influx tags)."""
    spec = MWAA_METRICS.get(name)
    if spec is None:
        job = JOB_RE.match(name)
        if not job:
            return None
        spec = (JOB_METRICS[job.group("event")], COUNT, (("Job", "=" + job.group("job")),))
    metric, unit, sources = spec
    tag_values = dict(tags)
    dims = [("Environment", environment)]
    for dim, source in sources:
        if source.startswith("="):
            value = source[1:]
        elif source == "@host":
            value = host
        else:
            value = tag_values.get(source)
        if not value:
            return None
        dims.append((dim, value[:MAX_DIMENSION_VALUE]))
    return metric, unit, tuple(dims)


# ---------------------------------------------------------------------------------------------
# Aggregation: one interval's statistics for CloudWatch, the current values for Prometheus.

class Aggregator:
    """Receives Lines; flush() returns one interval's CloudWatch datums; prometheus() the text."""

    def __init__(self, environment, allow_list="", block_list="", host=None, prefix=DEFAULT_PREFIX,
                 max_series=MAX_SERIES):
        self.environment = environment
        self.prefix = prefix
        self.host = host or socket.gethostname()
        self.allowed = make_validator(allow_list, block_list)
        self.max_series = max_series
        self.lock = threading.Lock()
        self.gauges = {}       # (name, tags) -> last absolute value
        self.interval = {}     # (metric, unit, dims, kind) -> [count, sum, min, max]
        self.families = {}     # prometheus name -> [type, {labels: value or [sum, count]}]
        self.series = 0
        self.counts = {"packets": 0, "lines": 0, "bad_lines": 0, "ignored_lines": 0, "legacy_lines": 0,
                       "filtered_lines": 0, "dropped_series": 0}

    def add_packet(self, data):
        lines, bad, ignored = parse_packet(data, self.prefix)
        with self.lock:
            self.counts["packets"] += 1
            self.counts["bad_lines"] += bad
            self.counts["ignored_lines"] += ignored
            for line in lines:
                self._add(line)

    def add(self, line):
        with self.lock:
            self._add(line)

    def _add(self, line):
        self.counts["lines"] += 1
        if is_legacy(line.name):
            self.counts["legacy_lines"] += 1
            return
        if not self.allowed(line.stat):
            self.counts["filtered_lines"] += 1
            return
        value, weight = line.value, 1.0
        if line.kind == "gauge":
            key = (line.name, line.tags)
            if line.delta:
                value += self.gauges.get(key, 0.0)
            self.gauges[key] = value
        else:
            weight = 1.0 / line.rate
        self._prometheus(line, value, weight)
        mapped = mwaa_metric(line.name, line.tags, self.environment, self.host)
        if mapped is None:
            return
        # [samples, sum, min, max]; a counter only sends its sum, a summed gauge its last value.
        key = mapped + (line.kind,)
        stats = self.interval.get(key)
        if line.kind == "gauge" and mapped[0] in SUMMED:
            self.interval[key] = [1.0, value, value, value]
        elif stats is None:
            self.interval[key] = [weight, value * weight, value, value]
        else:
            stats[0] += weight
            stats[1] += value * weight
            stats[2] = min(stats[2], value)
            stats[3] = max(stats[3], value)

    def flush(self, now=None):
        """The interval's datums (and a fresh interval): counters as Value=<sum>, summed gauges
        as Value=<last>, other gauges and timers as StatisticValues over their samples."""
        with self.lock:
            interval, self.interval = self.interval, {}
        timestamp = int(now if now is not None else time.time())
        datums = []
        for (metric, unit, dims, kind), (count, total, low, high) in sorted(interval.items()):
            datum = {"MetricName": metric, "Dimensions": [{"Name": n, "Value": v} for n, v in dims],
                     "Timestamp": timestamp, "Unit": unit}
            if kind == "counter" or (kind == "gauge" and metric in SUMMED):
                datum["Value"] = total
            else:
                datum["StatisticValues"] = {"SampleCount": count, "Sum": total, "Minimum": low, "Maximum": high}
            datums.append(datum)
        return datums

    def _prometheus(self, line, value, weight):
        name = prometheus_name(line.name)
        kind = "summary" if line.kind == "timer" else line.kind
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = [kind, {}]
        elif family[0] != kind:
            return  # the same name sent as two types: keep the first
        labels = prometheus_labels(line.tags, self.environment)
        series = family[1]
        if labels not in series:
            if self.series >= self.max_series:
                self.counts["dropped_series"] += 1
                return
            self.series += 1
            series[labels] = 0.0 if kind != "summary" else [0.0, 0.0]
        if kind == "gauge":
            series[labels] = value
        elif kind == "counter":
            series[labels] += value * weight
        else:
            series[labels][0] += value * weight
            series[labels][1] += weight

    def prometheus(self):
        """The current values as Prometheus text (exposition format 0.0.4)."""
        out = []
        with self.lock:
            for name in sorted(self.families):
                kind, series = self.families[name]
                out.append("# TYPE %s %s" % (name, kind))
                for labels in sorted(series):
                    text = _label_text(labels)
                    if kind == "summary":
                        out.append("%s_sum%s %s" % (name, text, _number(series[labels][0])))
                        out.append("%s_count%s %s" % (name, text, _number(series[labels][1])))
                    else:
                        out.append("%s%s %s" % (name, text, _number(series[labels])))
        return "\n".join(out) + "\n" if out else ""

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


def prometheus_name(name):
    return "airflow_" + re.sub(r"[^A-Za-z0-9_:]", "_", name)


def prometheus_labels(tags, environment):
    labels = {}
    for key, value in tags:
        key = re.sub(r"[^A-Za-z0-9_]", "_", key).lstrip("_")
        if not key or key == "environment":
            continue
        if key[0].isdigit():
            key = "_" + key
        labels[key] = value
    labels["environment"] = environment
    return tuple(sorted(labels.items()))


def _label_text(labels):
    return "{%s}" % ",".join('%s="%s"' % (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
                             for k, v in labels)


def _number(value):
    if value == int(value) and abs(value) < 1e15:
        return "%d" % value
    return repr(float(value))


def batches(datums, size=MAX_DATUMS, max_bytes=MAX_PAYLOAD):
    """Lists of at most size datums and about max_bytes of JSON, in order: one PutMetricData each."""
    batch, used = [], 0
    for datum in datums:
        cost = len(json.dumps(datum)) + 2
        if batch and (len(batch) >= size or used + cost > max_bytes):
            yield batch
            batch, used = [], 0
        batch.append(datum)
        used += cost
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# CloudWatch.

def _describe(exc):
    """'AccessDenied: message' for a botocore ClientError, the class and message otherwise."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        err = response["Error"]
        return "%s: %s" % (err.get("Code", "Error"), err.get("Message", "") or str(exc))
    return "%s: %s" % (type(exc).__name__, exc)


# Errors about the data itself: sending the same batch again would fail again.
REJECTED = ("InvalidParameterValue", "InvalidParameterCombination", "MissingParameter", "InvalidParameterValueException")


def make_cloudwatch(region=None, endpoint_url=None):
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=15)
    return boto3.session.Session().client("cloudwatch", region_name=region or None,
                                          endpoint_url=endpoint_url or None, config=config)


class Sender:
    """PutMetricData with a bounded backlog: what could not be sent is tried again first next
    time; the oldest datums go when the backlog is full."""

    def __init__(self, namespace, client=None, region=None, endpoint_url=None, max_backlog=MAX_BACKLOG):
        self.namespace = namespace
        self.client = client
        self.region, self.endpoint_url = region, endpoint_url
        self.backlog = collections.deque()
        self.max_backlog = max_backlog
        self.sent = self.dropped = self.errors = 0
        self.last_error = None

    def send(self, datums):
        """Send the backlog, then datums. Returns None, or the error (the rest is kept)."""
        self.backlog.extend(datums)
        while len(self.backlog) > self.max_backlog:
            self.backlog.popleft()
            self.dropped += 1
        error = None
        try:
            if self.client is None:
                self.client = make_cloudwatch(self.region, self.endpoint_url)
            for batch in batches(list(self.backlog)):
                try:
                    self.client.put_metric_data(Namespace=self.namespace, MetricData=batch)
                except Exception as e:
                    code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
                    if code not in REJECTED:
                        raise
                    self.dropped += len(batch)
                    error = "CloudWatch rejected %d datum(s), dropped: %s" % (len(batch), _describe(e))
                else:
                    self.sent += len(batch)
                for _datum in batch:
                    self.backlog.popleft()
        except Exception as e:  # botocore's ClientError, EndpointConnectionError, NoCredentialsError...
            error = "cannot put metrics in CloudWatch namespace %s (%s); %d datum(s) kept for the next try" % (
                self.namespace, _describe(e), len(self.backlog))
        if error:
            self.errors += 1
        self.last_error = error
        return error


# ---------------------------------------------------------------------------------------------
# The agent.

def parse_address(text, default_host="127.0.0.1"):
    """'127.0.0.1:8125', ':9102', '[::1]:9102' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("%r is not ADDRESS:PORT" % text)
    return host.strip("[]") or default_host, int(port)


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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


class _HTTPServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_prometheus(host, port, render):
    """Start a thread serving render() on GET /metrics (404 elsewhere); returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = render().encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server_class = type("Server", (_HTTPServer,), {"address_family": _family(host)})
    server = server_class((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="prometheus")
    thread.daemon = True
    thread.start()
    return server


class Agent:
    """The bridge's loop: UDP in, a flush every interval to the sender thread, a status file."""

    def __init__(self, listen, environment, namespace="", region=None, endpoint_url=None, interval=DEFAULT_INTERVAL,
                 prometheus=None, prefix=DEFAULT_PREFIX, allow_list="", block_list="", status_file=None,
                 host=None, client=None):
        self.aggregator = Aggregator(environment, allow_list, block_list, host, prefix)
        self.sender = Sender(namespace, client, region, endpoint_url) if namespace else None
        self.interval = interval
        self.status_file = status_file
        self.stopping = threading.Event()
        self.queue = queue.Queue()
        self.status_lock = threading.Lock()
        self.sock = socket.socket(_family(listen[0]), socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        except OSError:
            pass
        self.sock.bind(listen)
        self.http = serve_prometheus(prometheus[0], prometheus[1], self.aggregator.prometheus) if prometheus else None
        self.status = {
            "environment": environment, "namespace": namespace or None, "healthy": True, "started": time.time(),
            "last_flush": None, "datums_sent": 0, "errors": 0, "last_error": None, "backlog": 0, "dropped": 0,
            "listen": "%s:%d" % self.sock.getsockname()[:2],
            "prometheus": "%s:%d" % self.http.server_address[:2] if self.http else None,
        }

    def write_status(self, **changes):
        with self.status_lock:
            self.status.update(changes)
            self.status.update(self.aggregator.snapshot())
            if self.sender:
                self.status.update(datums_sent=self.sender.sent, errors=self.sender.errors, dropped=self.sender.dropped,
                                   last_error=self.sender.last_error, backlog=len(self.sender.backlog),
                                   healthy=self.sender.last_error is None)
            write_status(self.status_file, self.status)

    def _send_loop(self):
        last_error = None
        while True:
            datums = self.queue.get()
            if datums is None:
                return
            error = self.sender.send(datums)
            if error != last_error:
                _log(("ERROR " + error) if error else "sending to CloudWatch works again")
                last_error = error
            self.write_status()

    def flush(self):
        datums = self.aggregator.flush()
        if self.sender:
            self.queue.put(datums)
        self.write_status(last_flush=time.time())

    def run(self):
        _log("airstrip-metrics: StatsD on %s/udp, %s, Prometheus %s, every %.0f s" % (
            self.status["listen"], "CloudWatch namespace " + self.sender.namespace if self.sender else "no CloudWatch",
            "on " + self.status["prometheus"] if self.http else "off", self.interval))
        sender = None
        if self.sender:
            sender = threading.Thread(target=self._send_loop, name="cloudwatch")
            sender.daemon = True
            sender.start()
        self.write_status()
        deadline = time.time() + self.interval
        while not self.stopping.is_set():
            self.sock.settimeout(max(0.05, min(0.5, deadline - time.time())))
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                data = None
            except (OSError, IOError):
                data = None
            if data:
                self.aggregator.add_packet(data)
            if time.time() >= deadline:
                self.flush()
                deadline = max(deadline + self.interval, time.time() + self.interval / 2)
        # Stopping: what is already in the socket, one last flush, and a bounded wait for the send.
        self.sock.settimeout(0)
        while True:
            try:
                self.aggregator.add_packet(self.sock.recv(65535))
            except (OSError, IOError):
                break
        self.flush()
        if sender:
            self.queue.put(None)
            sender.join(20)
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        self.sock.close()
        return 0

    def stop(self, *_args):
        self.stopping.set()


def main(argv=None):
    import argparse

    def address(text):
        try:
            return parse_address(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))

    parser = argparse.ArgumentParser(description="Airflow's StatsD to CloudWatch (MWAA's names) and Prometheus.")
    parser.add_argument("command", choices=["agent"])
    parser.add_argument("--listen", type=address, default=("127.0.0.1", 8125), help="StatsD ADDRESS:PORT (UDP)")
    parser.add_argument("--environment", required=True, help="the Environment dimension and label")
    parser.add_argument("--namespace", default="", help="CloudWatch namespace; empty: nothing goes to CloudWatch")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or None)
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_CLOUDWATCH") or None)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between two flushes")
    parser.add_argument("--prometheus", type=address, default=None, help="serve /metrics on ADDRESS:PORT")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="Airflow's [metrics] statsd_prefix")
    parser.add_argument("--allow-list", default="", help="Airflow's metrics_allow_list (wins over the block list)")
    parser.add_argument("--block-list", default="", help="Airflow's metrics_block_list")
    parser.add_argument("--host", default=None, help="the Host dimension of per-host gauges (default: hostname)")
    parser.add_argument("--status-file", default=None)
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    for option, text in (("--allow-list", args.allow_list), ("--block-list", args.block_list)):
        for entry in split_list(text) or ():
            try:
                re.compile(entry)
            except re.error as e:
                parser.error("%s: %r is not a regular expression (%s)" % (option, entry, e))
    try:
        agent = Agent(args.listen, args.environment, args.namespace, args.region, args.endpoint_url, args.interval,
                      args.prometheus, args.prefix, args.allow_list, args.block_list, args.status_file, args.host)
    except (OSError, IOError) as e:  # the port is taken, the address is not this host's...
        _log("ERROR cannot listen on %s/udp%s: %s" % (
            "%s:%d" % args.listen, " and %s:%d/tcp" % args.prometheus if args.prometheus else "", e))
        return 1
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    return agent.run()


if __name__ == "__main__":
    raise SystemExit(main())
