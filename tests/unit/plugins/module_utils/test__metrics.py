"""The metrics bridge's pure logic: Airflow's StatsD lines in, MWAA datums and Prometheus text out."""

import json
import re

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _metrics as m

# What Airflow 3.3.2 sends with statsd_influxdb_enabled=True and legacy_names_on=True (pystatsd
# formats each line; a pipeline joins lines with '\n').
SCHEDULER_PACKET = (
    b"airflow.executor.open_slots,status=open,executor_class_name=CeleryExecutor:30|g\n"
    b"airflow.executor.open_slots.CeleryExecutor,status=open,executor_class_name=CeleryExecutor:30|g\n"
    b"airflow.executor.queued_tasks,status=queued,executor_class_name=CeleryExecutor:4|g\n"
    b"airflow.executor.running_tasks,status=running,executor_class_name=CeleryExecutor:2|g"
)


def lines(text, prefix="airflow"):
    parsed, bad, ignored = m.parse_packet(text, prefix)
    return parsed


def test_parse_tagged_counter_gauge_timer():
    c, g, t = lines(b"airflow.ti_failures,dag_id=etl,task_id=load:1|c\n"
                    b"airflow.pool.open_slots,pool_name=default_pool:128|g\n"
                    b"airflow.task.duration,dag_id=etl,task_id=load:1534.25|ms")
    assert c == m.Line("ti_failures", (("dag_id", "etl"), ("task_id", "load")), 1.0, "counter", False, 1.0,
                       "ti_failures,dag_id=etl,task_id=load")
    assert (g.name, g.tags, g.value, g.kind, g.delta) == ("pool.open_slots", (("pool_name", "default_pool"),),
                                                          128.0, "gauge", False)
    assert (t.kind, t.value) == ("timer", 1534.25)


def test_parse_untagged_deltas_and_rate():
    hb, plus, minus, sampled = lines("airflow.scheduler_heartbeat:1|c\nairflow.dagbag_size:+2|g\n"
                                     "airflow.dagbag_size:-1|g\nairflow.ti.start:1|c|@0.1")
    assert (hb.name, hb.tags, hb.stat) == ("scheduler_heartbeat", (), "scheduler_heartbeat")
    assert (plus.delta, plus.value, minus.delta, minus.value) == (True, 2.0, True, -1.0)
    assert sampled.rate == 0.1
    # A counter's '-1' is a decrement, not a delta flag.
    (decr,) = lines("airflow.dag_processing.processes:-1|c")
    assert (decr.value, decr.delta) == (-1.0, False)


def test_tag_values_may_hold_colons():
    (line,) = lines("airflow.dagrun.duration.success,dag_id=d,run_id=manual__2026-01-01T00:00:00+00:00:12|ms")
    assert dict(line.tags)["run_id"] == "manual__2026-01-01T00:00:00+00:00" and line.value == 12.0


@pytest.mark.parametrize("garbage", [
    "", "airflow.x", "airflow.x:1", "airflow.x:abc|c", "airflow.x:1|zz", "airflow.x,novalue:1|c",
    "airflow.x:1|c|@0", "airflow.x:1|c|@2", "airflow.x:nan|g", "airflow.bad name:1|c", ":1|c", "airflow.x:|c",
    "\xff\xfe", "airflow.x,=v:1|c",
])
def test_garbage_is_counted_never_raised(garbage):
    parsed, bad, ignored = m.parse_packet(garbage.encode("utf-8", "surrogateescape") if garbage else b"")
    assert parsed == [] and bad + ignored == (1 if garbage else 0)


def test_a_packet_with_good_and_bad_lines_keeps_the_good():
    parsed, bad, ignored = m.parse_packet(b"airflow.a:1|c\nnot a metric\nairflow.u:3|s\nother.b:1|c\n\nairflow.b:2|g\n")
    assert [p.name for p in parsed] == ["a", "b"] and bad == 1 and ignored == 2  # a set, another prefix


def test_custom_and_empty_prefix():
    assert [p.name for p in lines("af.scheduler_heartbeat:1|c\nairflow.x:1|c", prefix="af")] == ["scheduler_heartbeat"]
    assert [p.name for p in lines("airflow.x:1|c", prefix="")] == ["airflow.x"]


# --- legacy names -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "executor.open_slots.CeleryExecutor", "executor.queued_tasks.CeleryExecutor", "pool.open_slots.default_pool",
    "pool.starving_tasks.my-pool", "dag.etl.load.duration", "ti.start.etl.load", "ti.finish.etl.load.success",
    "dagrun.duration.success.etl", "dagrun.etl.first_task_scheduling_delay", "triggers.running.host-1",
    "operator_failures_BashOperator", "task_instance_created_PythonOperator",
    "dag_processing.last_duration.dags-folder.etl.py", "ti.running.default.etl.load",
])
def test_legacy_forms_are_recognised(name):
    assert m.is_legacy(name)


def test_no_tagged_name_is_mistaken_for_a_legacy_one():
    tagged = set(m.MWAA_METRICS) | {"dag_processing.file_path_queue_size", "ti.running", "scheduler.dagruns.running",
                                    "SchedulerJob_start", "dagrun.first_task_start_delay", "ol.emit.attempts"}
    assert [n for n in tagged if m.is_legacy(n)] == []


def test_legacy_lines_are_not_counted_twice():
    agg = m.Aggregator("dev", host="sched-1")
    agg.add_packet(SCHEDULER_PACKET)
    datums = {d["MetricName"]: d for d in agg.flush(0)}
    assert datums["OpenSlots"]["Value"] == 30
    assert agg.snapshot()["legacy_lines"] == 1
    text = agg.prometheus()
    assert 'status="open"} 30' in text and "open_slots_CeleryExecutor" not in text


# --- allow and block lists, against Airflow 3.3.2's validators ---------------------------------

class AirflowValidator:
    """airflow/_shared/observability/metrics/validators.py (3.3.2), get_validator() and
    PatternAllowListValidator / PatternBlockListValidator, as Airflow runs them."""

    def __init__(self, allow, block):
        self.kind, text = ("allow", allow) if allow else ("block", block) if block else ("allow", None)
        self.validate_list = tuple(item.strip().lower() for item in text.split(",")) if text else None

    def test(self, name):
        if self.validate_list is None:
            return True
        found = any(re.findall(entry, name.strip().lower()) for entry in self.validate_list)
        return found if self.kind == "allow" else not found


STATS = ["scheduler_heartbeat", "executor.open_slots,status=open,executor_class_name=CeleryExecutor",
         "pool.open_slots,pool_name=default_pool", "ti_failures,dag_id=ETL,task_id=load", "task.duration,dag_id=x",
         "dag_processing.total_parse_time", "SchedulerJob_start"]
LISTS = ["", "scheduler", "SCHEDULER", "^pool", "pool$", "executor,pool", "dag_id=etl", "open_slots,", "ti_[a-z]+s$",
         "celery", " executor ", r"\.duration"]


@pytest.mark.parametrize("allow", LISTS)
@pytest.mark.parametrize("block", LISTS)
def test_lists_decide_as_airflow_does(allow, block):
    ours, airflow = m.make_validator(allow, block), AirflowValidator(allow, block)
    assert [ours(s) for s in STATS] == [airflow.test(s) for s in STATS]


def test_the_allow_list_wins_and_the_bridge_filters():
    assert m.make_validator("pool", "pool")("pool.open_slots")
    agg = m.Aggregator("dev", block_list="executor.queued", host="h")
    agg.add_packet(SCHEDULER_PACKET + b"\nairflow.scheduler_heartbeat:1|c")
    names = sorted(d["MetricName"] for d in agg.flush(0))
    assert names == ["OpenSlots", "RunningTasks", "SchedulerHeartbeat"]
    assert agg.snapshot()["filtered_lines"] == 1 and "queued_tasks" not in agg.prometheus()


# --- the MWAA mapping --------------------------------------------------------------------------

@pytest.mark.parametrize("line,metric,unit,dims", [
    ("executor.queued_tasks,status=queued,executor_class_name=CeleryExecutor:4|g", "QueuedTasks", "Count",
     {"Function": "Executor"}),
    ("executor.running_tasks:2|g", "RunningTasks", "Count", {"Function": "Executor"}),
    ("scheduler_heartbeat:1|c", "SchedulerHeartbeat", "Count", {"Function": "Scheduler"}),
    ("scheduler.tasks.starving:0|g", "TasksStarving", "Count", {"Function": "Scheduler"}),
    ("scheduler.tasks.executable:3|g", "TasksExecutable", "Count", {"Function": "Scheduler"}),
    ("scheduler.critical_section_duration:4.2|ms", "CriticalSectionDuration", "Milliseconds", {"Function": "Scheduler"}),
    ("dag_processing.total_parse_time:0.81|g", "TotalParseTime", "Seconds", {"Function": "DAG Processing"}),
    ("dag_processing.import_errors:0|g", "ImportErrors", "Count", {"Function": "DAG Processing"}),
    ("dagbag_size:12|g", "DagBagSize", "Count", {"Function": "DAG Processing"}),
    ("dag_processor_heartbeat:1|c", "DagProcessorHeartbeat", "Count", {"Function": "DAG Processing"}),
    ("pool.open_slots,pool_name=default_pool:128|g", "PoolOpenSlots", "Count", {"Pool": "default_pool"}),
    ("pool.queued_slots,pool_name=p:1|g", "PoolQueuedSlots", "Count", {"Pool": "p"}),
    ("pool.running_slots,pool_name=p:1|g", "PoolRunningSlots", "Count", {"Pool": "p"}),
    ("pool.starving_tasks,pool_name=p:1|g", "PoolStarvingTasks", "Count", {"Pool": "p"}),
    ("ti_failures,dag_id=etl,task_id=load:1|c", "TaskInstanceFailures", "Count", {"DAG": "All", "Task": "All"}),
    ("ti_successes,dag_id=etl,task_id=load:1|c", "TaskInstanceSuccesses", "Count", {"DAG": "All", "Task": "All"}),
    ("task.duration,dag_id=etl,task_id=load:1500|ms", "TaskInstanceDuration", "Milliseconds",
     {"DAG": "etl", "Task": "load"}),
    ("triggers.running,hostname=t1:3|g", "TriggersRunning", "Count", {"Function": "Triggerer"}),
    ("triggerer_heartbeat:1|c", "TriggererHeartbeat", "Count", {"Function": "Triggerer"}),
    ("SchedulerJob_start:1|c", "JobStart", "Count", {"Job": "SchedulerJob"}),
    ("dagrun.duration.success,dag_id=etl:90000|ms", "DAGDurationSuccess", "Milliseconds", {"DAG": "etl"}),
])
def test_mapping(line, metric, unit, dims):
    agg = m.Aggregator("prod", host="h1")
    agg.add_packet("airflow." + line)
    (datum,) = agg.flush(0)
    assert (datum["MetricName"], datum["Unit"]) == (metric, unit)
    assert datum["Dimensions"][0] == {"Name": "Environment", "Value": "prod"}
    assert dict((d["Name"], d["Value"]) for d in datum["Dimensions"][1:]) == dims


def test_unmapped_or_untagged_metrics_stay_out_of_cloudwatch():
    agg = m.Aggregator("prod", host="h1")
    agg.add_packet(b"airflow.dag_processing.file_path_queue_size:3|g\nairflow.pool.open_slots:5|g\n"
                   b"airflow.task.duration,dag_id=etl:5|ms")
    assert agg.flush(0) == []
    text = agg.prometheus()
    assert "airflow_dag_processing_file_path_queue_size{environment=\"prod\"} 3" in text
    assert "airflow_pool_open_slots{environment=\"prod\"} 5" in text


def test_dimension_values_are_kept_within_cloudwatch_limits():
    assert m.mwaa_metric("pool.open_slots", (("pool_name", "p" * 2000),), "e", "h")[2][1][1] == "p" * 1024
    assert m.mwaa_metric("pool.open_slots", (("pool_name", ""),), "e", "h") is None


# --- aggregation -------------------------------------------------------------------------------

def test_statistics_per_interval():
    agg = m.Aggregator("dev", host="h")
    agg.add_packet(b"airflow.scheduler_heartbeat:1|c\n" * 5 + b"airflow.scheduler_heartbeat:1|c|@0.5")
    agg.add_packet(b"airflow.dagbag_size:4|g\nairflow.dagbag_size:+3|g\n"
                   b"airflow.dagbag_size:-6|g\nairflow.dagbag_size:0|g\nairflow.dagbag_size:-2|g")
    agg.add_packet(b"airflow.executor.queued_tasks:4|g\nairflow.executor.queued_tasks:9|g\nairflow.executor.queued_tasks:6|g")
    agg.add_packet(b"airflow.scheduler.critical_section_duration:10|ms\nairflow.scheduler.critical_section_duration:30|ms")
    d = dict((x["MetricName"], x) for x in agg.flush(1700000000.7))
    assert d["SchedulerHeartbeat"]["Value"] == 7 and "StatisticValues" not in d["SchedulerHeartbeat"]
    # Absolute values after the deltas: 4, 7, 1, 0, -2 (pystatsd sends a negative gauge as 0 then -2).
    assert d["DagBagSize"]["StatisticValues"] == {"SampleCount": 5, "Sum": 10, "Minimum": -2, "Maximum": 7}
    # Each scheduler's share of the executor's demand: its last value, so that CloudWatch's Sum
    # over the interval adds the schedulers up.
    assert d["QueuedTasks"]["Value"] == 6 and "StatisticValues" not in d["QueuedTasks"]
    assert d["CriticalSectionDuration"]["StatisticValues"] == {
        "SampleCount": 2, "Sum": 40, "Minimum": 10, "Maximum": 30}
    assert d["CriticalSectionDuration"]["Unit"] == "Milliseconds"
    assert all(x["Timestamp"] == 1700000000 for x in d.values())
    assert agg.flush(0) == []  # each interval starts empty...
    agg.add_packet(b"airflow.dagbag_size:+1|g")
    (again,) = agg.flush(0)
    assert again["StatisticValues"]["Sum"] == -1  # ...but a gauge's delta applies to its last value


def test_series_of_one_mwaa_metric_are_aggregated_together():
    agg = m.Aggregator("dev", host="h")
    agg.add_packet(b"airflow.ti_failures,dag_id=a,task_id=x:1|c\nairflow.ti_failures,dag_id=b,task_id=y:2|c")
    (datum,) = agg.flush(0)
    assert datum["Value"] == 3
    assert agg.prometheus().count("airflow_ti_failures{") == 2


def test_batches_of_at_most_1000_datums():
    datums = [{"MetricName": "M%d" % i, "Value": i} for i in range(2501)]
    sizes = [len(b) for b in m.batches(datums)]
    assert sizes == [1000, 1000, 501]
    assert [d for b in m.batches(datums) for d in b] == datums
    assert list(m.batches([])) == []


def test_batches_respect_the_payload_size():
    big = [{"MetricName": "M", "Dimensions": [{"Name": "DAG", "Value": "x" * 1000}] * 30} for _i in range(100)]
    out = list(m.batches(big))
    assert len(out) > 1 and all(len(json.dumps(b)) < 1000000 for b in out)


class FakeCloudWatch:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def put_metric_data(self, Namespace, MetricData):
        if self.fail:
            raise self.fail
        self.calls.append((Namespace, len(MetricData)))


class ClientError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": "nope"}}


def test_sender_keeps_a_bounded_backlog_and_retries():
    cw = FakeCloudWatch(fail=ClientError("Throttling"))
    sender = m.Sender("Airstrip/dev", client=cw, max_backlog=1500)
    error = sender.send([{"MetricName": "A", "Value": 1}] * 1200)
    assert "Throttling" in error and "1200 datum(s) kept" in error and sender.errors == 1
    sender.send([{"MetricName": "B", "Value": 1}] * 1200)
    assert len(sender.backlog) == 1500 and sender.dropped == 900
    cw.fail = None
    assert sender.send([]) is None
    assert cw.calls == [("Airstrip/dev", 1000), ("Airstrip/dev", 500)] and sender.sent == 1500
    assert not sender.backlog and sender.last_error is None


def test_sender_drops_what_cloudwatch_rejects():
    cw = FakeCloudWatch(fail=ClientError("InvalidParameterValue"))
    sender = m.Sender("N", client=cw)
    assert "rejected 3 datum(s)" in sender.send([{"MetricName": "A"}] * 3)
    assert not sender.backlog and sender.dropped == 3


# --- Prometheus --------------------------------------------------------------------------------

def test_prometheus_text():
    agg = m.Aggregator("dev", host="h")
    agg.add_packet(SCHEDULER_PACKET + b"\nairflow.scheduler_heartbeat:1|c\nairflow.scheduler_heartbeat:1|c\n"
                   b"airflow.task.duration,dag_id=etl,task_id=load:1.5|ms\nairflow.task.duration,dag_id=etl,task_id=load:2|ms\n"
                   b"airflow.dagrun.dependency-check,dag_id=a\"b\\c:1|ms\nairflow.x,environment=other,9k=v:1|g")
    agg.flush(0)  # Prometheus keeps totals across intervals
    text = agg.prometheus()
    assert text.endswith("\n")
    assert ("# TYPE airflow_executor_queued_tasks gauge\n"
            "airflow_executor_queued_tasks{environment=\"dev\",executor_class_name=\"CeleryExecutor\","
            "status=\"queued\"} 4\n") in text
    assert "# TYPE airflow_scheduler_heartbeat counter\nairflow_scheduler_heartbeat{environment=\"dev\"} 2\n" in text
    assert ("# TYPE airflow_task_duration summary\n"
            "airflow_task_duration_sum{dag_id=\"etl\",environment=\"dev\",task_id=\"load\"} 3.5\n"
            "airflow_task_duration_count{dag_id=\"etl\",environment=\"dev\",task_id=\"load\"} 2\n") in text
    assert 'airflow_dagrun_dependency_check_sum{dag_id="a\\"b\\\\c",environment="dev"} 1' in text
    assert 'airflow_x{_9k="v",environment="dev"} 1' in text
    for row in text.splitlines():
        assert row.startswith("# TYPE ") or re.match(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\} -?[0-9.e+-]+$', row), row


def test_prometheus_series_are_bounded():
    agg = m.Aggregator("dev", host="h", max_series=3)
    agg.add_packet("\n".join("airflow.ti.running,dag_id=d%d:1|g" % i for i in range(5)))
    assert agg.prometheus().count("airflow_ti_running{") == 3 and agg.snapshot()["dropped_series"] == 2


@pytest.mark.parametrize("text,want", [("127.0.0.1:8125", ("127.0.0.1", 8125)), (":9102", ("127.0.0.1", 9102)),
                                       ("[::1]:9102", ("::1", 9102)), ("0.0.0.0:0", ("0.0.0.0", 0))])
def test_parse_address(text, want):
    assert m.parse_address(text) == want


@pytest.mark.parametrize("text", ["8125", "host:", "host:port", "h:70000"])
def test_parse_address_errors(text):
    with pytest.raises(ValueError):
        m.parse_address(text)
