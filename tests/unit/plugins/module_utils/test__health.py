from __future__ import annotations

from ansible_collections.airstrip.airflow.plugins.module_utils._health import describe, evaluate

HEALTHY = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-01-01T00:00:00+00:00"},
    "triggerer": {"status": "healthy"},
    "dag_processor": {"status": "healthy"},
}


def test_all_healthy():
    statuses, unhealthy = evaluate(HEALTHY)
    assert unhealthy == []
    assert set(statuses.values()) == {"healthy"}


def test_unhealthy_and_missing_map_to_components():
    health = dict(HEALTHY, dag_processor={"status": "unhealthy"})
    del health["triggerer"]
    statuses, unhealthy = evaluate(health)
    assert unhealthy == ["dag-processor", "triggerer"]  # in the model's start order
    assert statuses["triggerer"] == "missing"
    assert "dag_processor unhealthy" in describe(statuses)


def test_database_problem_points_at_the_api_server():
    _statuses, unhealthy = evaluate(dict(HEALTHY, metadatabase={"status": "unhealthy"}))
    assert unhealthy == ["api-server"]


def test_only_required_entries_count():
    _statuses, unhealthy = evaluate({"scheduler": {"status": "healthy"}}, required=["scheduler"])
    assert unhealthy == []


def test_garbage_answer():
    statuses, unhealthy = evaluate("not json")
    assert unhealthy == ["scheduler", "dag-processor", "triggerer", "api-server"]
    assert set(statuses.values()) == {"missing"}
