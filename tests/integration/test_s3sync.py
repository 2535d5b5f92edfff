"""The sync engine and its agent against the emulated S3 (moto_server on loopback)."""

import json
import os
import subprocess
import sys
import time

import boto3
import pytest

from loopback_moto import start as start_moto
from ansible_collections.airstrip.airflow.plugins.module_utils import _s3sync

ENGINE = _s3sync.__file__


@pytest.fixture
def s3(moto_url):
    return boto3.client("s3", endpoint_url=moto_url)


@pytest.fixture
def bucket(s3, request):
    name = "sync-" + request.node.name.replace("_", "-")[:40].lower()
    s3.create_bucket(Bucket=name)
    return name


def tree(root):
    out = {}
    for folder, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_new_changed_and_deleted_files(s3, bucket, tmp_path):
    dest = str(tmp_path / "dags")
    s3.put_object(Bucket=bucket, Key="dags/a.py", Body=b"a = 1\n")
    s3.put_object(Bucket=bucket, Key="dags/sub/b.py", Body=b"b = 1\n")
    s3.put_object(Bucket=bucket, Key="dags-other/c.py", Body=b"not mine\n")
    s3.put_object(Bucket=bucket, Key="dags/gone.py", Body=b"x\n")

    r = _s3sync.sync(s3, bucket, "dags", dest)
    assert (r["added"], r["updated"], r["deleted"]) == (["a.py", "gone.py", "sub/b.py"], [], [])
    assert r["bytes"] == 14

    s3.put_object(Bucket=bucket, Key="dags/a.py", Body=b"a = 2  # changed\n")
    s3.delete_object(Bucket=bucket, Key="dags/gone.py")
    (tmp_path / "dags" / "__pycache__").mkdir()
    (tmp_path / "dags" / "__pycache__" / "a.pyc").write_bytes(b"cache")
    r = _s3sync.sync(s3, bucket, "dags", dest)
    assert (r["added"], r["updated"], r["deleted"], r["unchanged"]) == ([], ["a.py"], ["gone.py"], 1)
    files = tree(dest)
    assert files.pop(_s3sync.MANIFEST_NAME)
    assert files == {"a.py": b"a = 2  # changed\n", "sub/b.py": b"b = 1\n", "__pycache__/a.pyc": b"cache"}
    assert not [f for f in os.listdir(dest) if f.startswith(_s3sync.TMP_PREFIX)]

    r = _s3sync.sync(s3, bucket, "dags", dest)
    assert not _s3sync.changed(r) and r["unchanged"] == 2

    s3.delete_object(Bucket=bucket, Key="dags/sub/b.py")
    r = _s3sync.sync(s3, bucket, "dags", dest)
    assert r["deleted"] == ["sub/b.py"] and not os.path.exists(os.path.join(dest, "sub"))


def test_check_mode_reports_without_writing(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="dags/a.py", Body=b"a\n")
    r = _s3sync.sync(s3, bucket, "dags/", str(tmp_path / "d"), check_mode=True)
    assert r["added"] == ["a.py"] and not (tmp_path / "d").exists()


def test_many_pages_into_new_folders_in_parallel(s3, bucket, tmp_path):
    for i in range(1105):
        s3.put_object(Bucket=bucket, Key="dags/d%02d/f%04d.py" % (i % 20, i), Body=b"%d\n" % i)
    r = _s3sync.sync(s3, bucket, "dags", str(tmp_path))
    assert r["failed"] == {}
    assert len(r["added"]) == 1105 and (tmp_path / "d05" / "f1085.py").read_bytes() == b"1085\n"


def test_sse_kms_objects(moto_url, s3, bucket, tmp_path):
    key = boto3.client("kms", endpoint_url=moto_url).create_key()["KeyMetadata"]["Arn"]
    s3.put_object(Bucket=bucket, Key="dags/secret.py", Body=b"s = 1\n", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=key)
    assert s3.head_object(Bucket=bucket, Key="dags/secret.py")["ServerSideEncryption"] == "aws:kms"
    r = _s3sync.sync(s3, bucket, "dags", str(tmp_path))
    assert r["added"] == ["secret.py"] and (tmp_path / "secret.py").read_bytes() == b"s = 1\n"


def test_missing_bucket_keeps_local_files(s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="dags/a.py", Body=b"a\n")
    _s3sync.sync(s3, bucket, "dags", str(tmp_path))
    s3.delete_object(Bucket=bucket, Key="dags/a.py")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(_s3sync.SyncError, match=r"cannot list s3://%s/dags/ \(NoSuchBucket" % bucket):
        _s3sync.sync(s3, bucket, "dags", str(tmp_path))
    assert (tmp_path / "a.py").read_bytes() == b"a\n"


def test_denied_listing_keeps_local_files(tmp_path):
    # A second emulated AWS that enforces IAM after its first four calls: the bucket, a user,
    # its key and a policy that allows GetObject but not ListBucket.
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="denied")
        iam = boto3.client("iam", endpoint_url=url)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="get-only", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
        (tmp_path / "kept.py").write_text("kept\n")
        _s3sync.write_manifest(str(tmp_path), "denied", "dags/", {"kept.py": {"etag": "x", "size": 5}})
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        status = tmp_path.parent / "status.json"
        run = subprocess.run([sys.executable, ENGINE, "once", "--bucket", "denied", "--prefix", "dags",
                              "--dest", str(tmp_path), "--endpoint-url", url, "--status-file", str(status)],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        proc.kill()
    assert run.returncode == 1
    assert run.stdout.strip().splitlines() == [
        "ERROR cannot list s3://denied/dags/ (AccessDenied: Access Denied); local files kept as they were"]
    assert (tmp_path / "kept.py").read_text() == "kept\n"
    st = json.loads(status.read_text())
    assert st["healthy"] is False and "AccessDenied" in st["error"] and st["last_success"] is None


def test_agent_reports_healthy_then_unhealthy_then_recovers(moto_url, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="dags/a.py", Body=b"a\n")
    dest, status = tmp_path / "dags", tmp_path / "status.json"
    args = [sys.executable, ENGINE, "once", "--bucket", bucket, "--prefix", "dags", "--dest", str(dest),
            "--endpoint-url", moto_url, "--status-file", str(status)]

    def once():
        return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)

    run = once()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "synced s3://%s/dags/ to %s: 1 added, 0 updated, 0 deleted, 2 bytes" % (bucket, dest) in run.stdout
    st = json.loads(status.read_text())
    assert st["healthy"] is True and st["files"] == 1 and st["last_success"]

    # The network goes away (nothing listens there any more): the DAG stays, the agent says why.
    args[args.index("--endpoint-url") + 1] = "http://127.0.0.1:9"
    run = once()
    assert run.returncode == 1 and "ERROR cannot list s3://%s/dags/" % bucket in run.stdout
    assert (dest / "a.py").read_bytes() == b"a\n"
    assert json.loads(status.read_text())["healthy"] is False


def test_agent_loop_polls_at_its_interval(moto_url, s3, bucket, tmp_path):
    # run_agent forever, with a sleep that uploads a file on the first wait and stops on the second.
    client = _s3sync.make_client(moto_url)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 1:
            s3.put_object(Bucket=bucket, Key="d/new.py", Body=b"n\n")
        else:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _s3sync.run_agent(bucket, "d", str(tmp_path), interval=5, client=client, sleep=sleep)
    assert (tmp_path / "new.py").read_bytes() == b"n\n"
    assert all(4.0 <= w <= 5.0 for w in waits)


def test_network_errors_are_retried_with_backoff(tmp_path):
    # Nothing listens on port 9: every attempt fails to connect, and is retried after a pause.
    client = _s3sync.make_client("http://127.0.0.1:9", "us-east-1")
    attempts = []
    client.meta.events.register("before-send.s3.ListObjectsV2", lambda **kw: attempts.append(time.monotonic()))
    with pytest.raises(_s3sync.SyncError, match=r"cannot list s3://bkt/dags/ \(EndpointConnectionError"):
        _s3sync.sync(client, "bkt", "dags", str(tmp_path))
    assert len(attempts) == 6  # the first try and 5 retries (botocore's standard mode, as for throttling)
    assert attempts[-1] - attempts[0] > 0.2  # with backoff between them, not at once
