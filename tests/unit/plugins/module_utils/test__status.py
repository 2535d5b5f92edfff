from __future__ import annotations

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils._status import derive_status, last_operation


def rec(op, status, started="2026-11-23T10:00:00Z", host="a"):
    return {"operation": op, "status": status, "started_at": started, "host": host}


@pytest.mark.parametrize("op,status,installed,healthy,expected", [
    ("CREATE", "IN_PROGRESS", True, False, "CREATING"),
    ("CREATE", "FAILED", True, False, "CREATE_FAILED"),
    ("CREATE", "SUCCESS", True, True, "AVAILABLE"),
    ("CREATE", "SUCCESS", True, False, "UNAVAILABLE"),
    ("UPDATE", "IN_PROGRESS", True, True, "UPDATING"),
    ("UPDATE", "FAILED", True, True, "UPDATE_FAILED"),
    ("UPDATE", "SUCCESS", True, True, "AVAILABLE"),
    ("DELETE", "IN_PROGRESS", True, False, "DELETING"),
    ("DELETE", "SUCCESS", False, False, "DELETED"),
    ("DELETE", "FAILED", True, False, "UNAVAILABLE"),
])
def test_status_from_last_operation(op, status, installed, healthy, expected):
    assert derive_status([rec(op, status)], installed, healthy) == expected


def test_no_record():
    assert derive_status([], False, False) == "DELETED"
    assert derive_status([], True, True) == "AVAILABLE"
    assert derive_status(None, True, False) == "UNAVAILABLE"


def test_newest_operation_wins_and_a_failed_host_wins_a_tie():
    older = rec("CREATE", "SUCCESS", "2026-11-22T10:00:00Z")
    ok = rec("UPDATE", "SUCCESS", host="a")
    failed = rec("UPDATE", "FAILED", host="b")
    assert last_operation([older, ok, failed]) is failed
    assert derive_status([older, ok, failed], True, True) == "UPDATE_FAILED"
    assert last_operation([{"status": "SUCCESS"}, "junk"]) is None


def test_unit_states_from_systemctl_show():
    from ansible_collections.airstrip.airflow.plugins.module_utils._status import unit_states

    out = "loaded\nactive\n\nnot-found\ninactive\n\nloaded\nfailed\n"
    assert unit_states(out, ["scheduler", "triggerer", "celery-worker"]) == {
        "scheduler": "active", "triggerer": "missing", "celery-worker": "failed"}
    assert unit_states("", ["scheduler"]) == {"scheduler": "missing"}
