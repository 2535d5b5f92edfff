"""The sync engine's pure logic: which keys map where, and what a sync must do."""

import random

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _s3sync as s


def obj(key, etag="e1", size=10):
    return {"Key": key, "ETag": '"%s"' % etag, "Size": size}


@pytest.mark.parametrize("prefix,want", [("dags", "dags/"), ("/dags/", "dags/"), ("a/b", "a/b/"), ("", ""), ("/", "")])
def test_normalize_prefix(prefix, want):
    assert s.normalize_prefix(prefix) == want


def test_nested_prefixes_do_not_leak_into_each_other():
    pages = [{"Contents": [obj("dags/a.py"), obj("dags/sub/b.py"), obj("dags-old/c.py"), obj("dagsx.py"),
                           obj("dags/"), obj("dags/sub/"), obj("other/dags/d.py")]}]
    objects, skipped = s.remote_index(pages, "dags/")
    assert sorted(objects) == ["a.py", "sub/b.py"]
    assert skipped == []


def test_unsafe_keys_are_skipped_and_reported():
    pages = [{"Contents": [obj("dags/../etc/passwd"), obj("dags/a//b.py"), obj("dags/./c.py"),
                           obj("dags/" + s.MANIFEST_NAME), obj("dags/x/" + s.TMP_PREFIX + "1"), obj("dags/ok.py")]}]
    objects, skipped = s.remote_index(pages, "dags/")
    assert list(objects) == ["ok.py"]
    assert len(skipped) == 5


def test_whole_bucket_prefix():
    objects, _skipped = s.remote_index([{"Contents": [obj("a.py"), obj("d/b.py")]}], "")
    assert sorted(objects) == ["a.py", "d/b.py"]


def test_many_pages_are_all_read():
    pages = [{"Contents": [obj("dags/%04d.py" % (p * 1000 + i)) for i in range(1000)]} for p in range(5)]
    pages.append({"KeyCount": 0})  # an empty last page has no Contents at all
    objects, _skipped = s.remote_index(iter(pages), "dags/")
    assert len(objects) == 5000 and "4999.py" in objects


def test_etag_quotes_are_stripped():
    objects, _skipped = s.remote_index([{"Contents": [obj("dags/a.py", etag="abc-2", size=7)]}], "dags/")
    assert objects["a.py"] == {"etag": "abc-2", "size": 7}


def R(**kw):
    return {k: {"etag": v[0], "size": v[1]} for k, v in kw.items()}


def test_plan_new_changed_deleted_unchanged():
    remote = R(new=("n", 1), same=("s", 2), etag=("e2", 3), size=("z", 5))
    manifest = R(same=("s", 2), etag=("e1", 3), size=("z", 4), gone=("g", 6))
    local = {"same": 2, "etag": 3, "size": 4, "gone": 6}
    p = s.plan(remote, manifest, local)
    assert p == {"add": ["new"], "update": ["etag", "size"], "delete": ["gone"], "unchanged": 1}


def test_plan_refetches_files_lost_or_changed_locally():
    remote = R(lost=("a", 1), edited=("b", 2))
    manifest = R(lost=("a", 1), edited=("b", 2))
    p = s.plan(remote, manifest, {"edited": 99})
    assert p["update"] == ["edited", "lost"] and p["unchanged"] == 0


def test_plan_overwrites_a_local_file_it_did_not_sync():
    p = s.plan(R(a=("x", 1)), {}, {"a": 1})
    assert p["update"] == ["a"] and p["add"] == []


def test_plan_deletes_only_what_it_synced():
    # Files the sync never put there (say __pycache__) are not its to delete.
    p = s.plan({}, R(mine=("m", 1)), {"mine": 1, "__pycache__/x.pyc": 3})
    assert p["delete"] == ["mine"]


def test_plan_without_delete_keeps_everything():
    assert s.plan({}, R(a=("a", 1)), {"a": 1}, delete=False)["delete"] == []


def test_plan_nothing_to_do():
    remote = R(a=("a", 1), b=("b", 2))
    assert s.plan(remote, remote, {"a": 1, "b": 2}) == {"add": [], "update": [], "delete": [], "unchanged": 2}


def test_next_wait_stays_within_one_interval():
    rng = random.Random(1)
    waits = [s.next_wait(5.0, rng) for _i in range(1000)]
    assert 4.0 <= min(waits) and max(waits) <= 5.0
    assert max(waits) - min(waits) > 0.5  # jitter really spreads the polls


class FailingPaginator:
    def paginate(self, **kw):
        yield {"Contents": [obj("dags/a.py")]}
        raise ConnectionError("network down")


class Client:
    def get_paginator(self, name):
        return FailingPaginator()


def test_a_listing_that_fails_on_a_later_page_changes_nothing(tmp_path):
    (tmp_path / "keep.py").write_text("x")
    s.write_manifest(str(tmp_path), "b", "dags/", R(**{"keep.py": ("k", 1)}))
    with pytest.raises(s.SyncError, match=r"cannot list s3://b/dags/ \(ConnectionError: network down\)"):
        s.sync(Client(), "b", "dags", str(tmp_path))
    assert (tmp_path / "keep.py").read_text() == "x"
