"""airstrip.airflow.environment_info run by ansible: an environment that never existed."""

import adhoc

MISSING = {"control": {"scheduler": "missing", "api-server": "missing"}, "worker": {"celery-worker": "missing"}}


def test_an_environment_that_never_existed_fails_unless_missing_ok():
    r, dummy = adhoc.run_module("airstrip.airflow.environment_info", {"name": "prod", "services": MISSING})
    assert r["failed"] is True
    assert r["msg"].startswith("environment prod not found: no host of the inventory holds its record or its "
                               "services (hosts read: control, worker)"), r["msg"]
    assert r["environment"]["status"] == "NOT_FOUND"

    r, dummy = adhoc.run_module("airstrip.airflow.environment_info",
                                {"name": "prod", "services": MISSING, "missing_ok": True})
    assert not r.get("failed") and r["changed"] is False
    assert r["environment"]["status"] == "NOT_FOUND" and r["environment"]["workers"] == 0


def test_a_deleted_environment_is_deleted_not_missing():
    record = {"operation": "DELETE", "status": "SUCCESS", "started_at": "2026-11-23T10:00:00Z", "host": "control"}
    r, dummy = adhoc.run_module("airstrip.airflow.environment_info",
                                {"name": "prod", "services": MISSING, "records": [record]})
    assert not r.get("failed") and r["environment"]["status"] == "DELETED"


def test_the_hosts_of_another_environment_do_not_make_this_one_exist():
    """An inventory whose hosts run environment dev, asked for prod: not found, dev named."""
    running = {"control": {"scheduler": "active", "api-server": "active"}, "worker": {"celery-worker": "active"}}
    r, dummy = adhoc.run_module("airstrip.airflow.environment_info",
                                {"name": "prod", "services": running, "other_environments": ["dev", "prod", "dev"]})
    assert r["failed"] is True and r["environment"]["status"] == "NOT_FOUND"
    assert r["msg"].startswith("environment prod not found: the hosts hold the record of environment(s) dev instead "
                               "(hosts read: control, worker)"), r["msg"]
