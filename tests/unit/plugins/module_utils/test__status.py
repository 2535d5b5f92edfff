from __future__ import annotations

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils._status import (
    NOT_FOUND, derive_status, last_operation, not_found_message)


def rec(op, status, started="2026-11-23T10:00:00Z", host="a"):
    return {"operation": op, "status": status, "started_at": started, "host": host}


@pytest.mark.parametrize("records,installed,healthy,expected", [
    ([rec("CREATE", "IN_PROGRESS")], True, False, "CREATING"),
    ([rec("CREATE", "FAILED")], True, False, "CREATE_FAILED"),
    ([rec("CREATE", "SUCCESS")], True, True, "AVAILABLE"),
    ([rec("CREATE", "SUCCESS")], True, False, "UNAVAILABLE"),
    ([rec("UPDATE", "IN_PROGRESS")], True, True, "UPDATING"),
    ([rec("UPDATE", "FAILED")], True, True, "UPDATE_FAILED"),
    ([rec("UPDATE", "SUCCESS")], True, True, "AVAILABLE"),
    ([rec("DELETE", "IN_PROGRESS")], True, False, "DELETING"),
    ([rec("DELETE", "FAILED")], True, False, "UNAVAILABLE"),
    # The delete playbook keeps its record: a deleted environment is DELETED, not unknown.
    ([rec("DELETE", "SUCCESS")], False, False, "DELETED"),
    ([rec("CREATE", "SUCCESS"), rec("DELETE", "SUCCESS", "2026-11-24T10:00:00Z", "b")], False, False, "DELETED"),
    # A record of a create whose services are gone (removed by hand).
    ([rec("CREATE", "SUCCESS")], False, False, "DELETED"),
    # No record on any host: an environment deployed by site.yml alone, or none at all.
    ([], True, True, "AVAILABLE"),
    (None, True, False, "UNAVAILABLE"),
    ([], False, False, NOT_FOUND),
    (None, False, False, NOT_FOUND),
    ([{"status": "SUCCESS"}, "junk"], False, False, NOT_FOUND),
    # The marker of an operation under way keeps the last final record inside it.
    ([dict(rec("UPDATE", "IN_PROGRESS", "2026-11-24T10:00:00Z"), previous=rec("CREATE", "SUCCESS"))],
     True, True, "UPDATING"),
])
def test_status(records, installed, healthy, expected):
    assert derive_status(records, installed, healthy) == expected


@pytest.mark.parametrize("name,hosts,expected", [
    ("prod", {"web": {}, "control": {}},
     "environment prod not found: no host of the inventory holds its record or its services "
     "(hosts read: control, web); check the environment's name and the inventory, or set missing_ok "
     "to accept a missing environment"),
    ("prod", {}, "environment prod not found: no host of the inventory holds its record or its services "
     "(hosts read: none); "),
    (None, ["a"], "environment not found: no host of the inventory holds its record or its services "
     "(hosts read: a); "),
])
def test_not_found_message(name, hosts, expected):
    assert not_found_message(name, hosts).startswith(expected)


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
