"""The airstrip.airflow.s3_sync module, run by ansible against the emulated S3."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = str(Path(sys.executable).parent / "ansible")


def run_module(args, check=False):
    cmd = [ANSIBLE, "localhost", "-c", "local", "-m", "airstrip.airflow.s3_sync", "-a", json.dumps(args),
           "-e", "ansible_python_interpreter=" + sys.executable]
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    out = json.loads(proc.stdout)
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"]


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
