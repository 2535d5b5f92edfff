"""The airstrip.airflow.s3_sync module, run by ansible against the emulated S3."""

from pathlib import Path

import adhoc
import boto3
import pytest


def run_module(args, check=False):
    return adhoc.run_module("airstrip.airflow.s3_sync", args, check)[0]


@pytest.fixture
def args(moto_url, tmp_path, request):
    bucket = "module-" + request.node.name.replace("_", "-")[:40].lower()
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=bucket)
    return {"bucket": bucket, "prefix": "dags", "dest": str(tmp_path / "dags"), "endpoint_url": moto_url,
            "region": "us-east-1"}


def test_check_mode_then_real_then_no_change(moto_url, args):
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.put_object(Bucket=args["bucket"], Key="dags/a.py", Body=b"a = 1\n")
    s3.put_object(Bucket=args["bucket"], Key="dags/etl/b.py", Body=b"b = 1\n")

    r = run_module(args, check=True)
    assert r["changed"] is True and r["counts"] == {"added": 2, "updated": 0, "deleted": 0, "unchanged": 0}
    assert not Path(args["dest"]).exists()

    r = run_module(args)
    assert r["changed"] is True and r["added"] == ["a.py", "etl/b.py"] and r["bytes"] == 12
    assert (Path(args["dest"]) / "etl" / "b.py").read_text() == "b = 1\n"

    for check in (True, False):
        r = run_module(args, check=check)
        assert r["changed"] is False and r["counts"]["unchanged"] == 2

    s3.delete_object(Bucket=args["bucket"], Key="dags/a.py")
    s3.put_object(Bucket=args["bucket"], Key="dags/etl/b.py", Body=b"b = 2\n")
    r = run_module(dict(args, delete=False))
    assert (r["updated"], r["deleted"]) == (["etl/b.py"], [])
    assert (Path(args["dest"]) / "a.py").exists()
    r = run_module(args)
    assert r["deleted"] == ["a.py"] and not (Path(args["dest"]) / "a.py").exists()


def test_missing_bucket_fails_naming_it_and_keeps_files(args):
    Path(args["dest"]).mkdir()
    (Path(args["dest"]) / "keep.py").write_text("k\n")
    r = run_module(dict(args, bucket="no-such-bucket-here"))
    assert r["failed"] is True
    assert r["msg"].startswith("cannot list s3://no-such-bucket-here/dags/ (NoSuchBucket")
    assert (Path(args["dest"]) / "keep.py").read_text() == "k\n"


def test_diff_mode_lists_the_paths_added_updated_and_deleted(moto_url, args):
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.put_object(Bucket=args["bucket"], Key="dags/a.py", Body=b"a = 1\n")
    s3.put_object(Bucket=args["bucket"], Key="dags/b.py", Body=b"b = 1\n")
    adhoc.run_module("airstrip.airflow.s3_sync", args)
    s3.delete_object(Bucket=args["bucket"], Key="dags/a.py")
    s3.put_object(Bucket=args["bucket"], Key="dags/b.py", Body=b"b = 2\n")
    s3.put_object(Bucket=args["bucket"], Key="dags/c.py", Body=b"c = 1\n")
    r, out = adhoc.run_module("airstrip.airflow.s3_sync", args, True, ("--diff",))
    assert r["diff"]["prepared"] == "+ c.py\n~ b.py\n- a.py\n", r.get("diff")
    assert r["diff"]["after_header"] == "s3://%s/dags/" % args["bucket"]
    assert not (Path(args["dest"]) / "c.py").exists()
    r, out = adhoc.run_module("airstrip.airflow.s3_sync", args, False)
    assert "diff" not in r
