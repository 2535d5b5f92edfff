# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental one-way sync of an S3 prefix to a local folder.

Used by the ``airstrip.airflow.s3_sync`` module and, copied to the hosts as a plain file, by
the DAG sync agent (``python _s3sync.py agent ...``), so both sync the same way:

* list the prefix with ListObjectsV2 (every page) before touching anything, so a failing
  listing (AccessDenied, NoSuchBucket, network down) changes nothing locally;
* compare each object's ETag and size with a local manifest of what was synced before;
* download only what is new or changed, a few at a time, each into a temporary name in the
  same folder and then renamed, so a reader (the DAG processor) never sees half a file;
* delete locally only the files this sync put there whose objects are gone from S3.

The planning is pure (``plan``); the client is any boto3 S3 client, so any S3-compatible
endpoint works, and SSE-KMS objects are decrypted by S3 on GetObject.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

MANIFEST_NAME = ".airstrip-s3sync.json"
TMP_PREFIX = ".airstrip-tmp-"
DEFAULT_WORKERS = 16


class SyncError(Exception):
    """The prefix could not be listed: nothing was changed locally."""


def normalize_prefix(prefix):
    """'dags', '/dags/', 'dags/' -> 'dags/'; '' or '/' -> '' (the whole bucket)."""
    prefix = (prefix or "").strip("/")
    return prefix + "/" if prefix else ""


def relative_path(key, prefix):
    """The local path of an object key under prefix, or None when the key must not be synced:
    outside the prefix, a folder marker, or a path that would escape the destination."""
    if not key.startswith(prefix):
        return None
    rel = key[len(prefix):]
    if not rel or rel.endswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel:
        return None
    if parts[-1] == MANIFEST_NAME or any(p.startswith(TMP_PREFIX) for p in parts):
        return None
    return rel


def remote_index(pages, prefix):
    """{relative path: {"etag", "size"}} from ListObjectsV2 pages; skipped keys are returned apart."""
    objects, skipped = {}, []
    for page in pages:
        for obj in page.get("Contents", []) or []:
            rel = relative_path(obj["Key"], prefix)
            if rel is None:
                if obj["Key"] != prefix and not obj["Key"].endswith("/") and obj["Key"].startswith(prefix):
                    skipped.append(obj["Key"])
                continue
            objects[rel] = {"etag": obj.get("ETag", "").strip('"'), "size": int(obj.get("Size", 0))}
    return objects, skipped


def plan(remote, manifest, local_sizes, delete=True):
    """What to do, as sorted lists: add (not here yet), update (changed in S3, or changed or lost
    locally), delete (synced before, gone from S3), and the number unchanged.

    remote: {path: {"etag", "size"}} from the listing; manifest: the same shape, as last synced;
    local_sizes: {path: size} of the manifest's files that still exist locally."""
    add, update, remove = [], [], []
    unchanged = 0
    for path, obj in remote.items():
        known = manifest.get(path)
        if known is None:
            (update if path in local_sizes else add).append(path)
        elif known.get("etag") != obj["etag"] or known.get("size") != obj["size"] \
                or local_sizes.get(path) != obj["size"]:
            update.append(path)
        else:
            unchanged += 1
    if delete:
        remove = [p for p in manifest if p not in remote]
    return {"add": sorted(add), "update": sorted(update), "delete": sorted(remove), "unchanged": unchanged}


def read_manifest(dest):
    try:
        with open(os.path.join(dest, MANIFEST_NAME)) as f:
            data = json.load(f)
        return data.get("objects", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_manifest(dest, bucket, prefix, objects):
    _write_atomic(dest, MANIFEST_NAME, json.dumps({"bucket": bucket, "prefix": prefix, "objects": objects},
                                                  sort_keys=True).encode(), 0o644)


def local_sizes(dest, paths):
    sizes = {}
    for path in paths:
        try:
            sizes[path] = os.stat(os.path.join(dest, path)).st_size
        except OSError:
            pass
    return sizes


def _write_atomic(dest, rel, data, mode):
    target = os.path.join(dest, rel)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o755, exist_ok=True)  # parallel downloads may make it at once
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _describe(exc):
    """'AccessDenied: Access Denied' for a botocore ClientError, the message otherwise."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        err = response["Error"]
        return "%s: %s" % (err.get("Code", "Error"), err.get("Message", "") or str(exc))
    return "%s: %s" % (type(exc).__name__, exc)


def list_prefix(client, bucket, prefix):
    """Every page of ListObjectsV2 under prefix; SyncError naming bucket and prefix if any page fails."""
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return remote_index(pages, prefix)
    except Exception as e:  # botocore's ClientError, EndpointConnectionError, NoCredentialsError...
        raise SyncError("cannot list s3://%s/%s (%s); local files kept as they were" % (bucket, prefix, _describe(e)))


def _remove_empty_parents(dest, rel):
    folder = os.path.dirname(os.path.join(dest, rel))
    root = os.path.abspath(dest)
    while os.path.abspath(folder) != root:
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


def sync(client, bucket, prefix, dest, delete=True, workers=DEFAULT_WORKERS, check_mode=False):
    """Bring dest up to date with s3://bucket/prefix. Returns a dict: added, updated, deleted
    (paths), bytes (downloaded), unchanged, skipped (keys not synced), failed ({path: error}).
    Raises SyncError, changing nothing, when the prefix cannot be listed."""
    prefix = normalize_prefix(prefix)
    remote, skipped = list_prefix(client, bucket, prefix)
    manifest = read_manifest(dest)
    todo = plan(remote, manifest, local_sizes(dest, set(remote) | set(manifest)), delete)
    result = {"added": todo["add"], "updated": todo["update"], "deleted": todo["delete"], "unchanged": todo["unchanged"],
              "skipped": skipped, "failed": {}, "bytes": sum(remote[p]["size"] for p in todo["add"] + todo["update"])}
    if check_mode or not (todo["add"] or todo["update"] or todo["delete"]):
        return result

    if not os.path.isdir(dest):
        os.makedirs(dest, 0o755)

    def fetch(path):
        response = client.get_object(Bucket=bucket, Key=prefix + path)
        data = response["Body"].read()
        _write_atomic(dest, path, data, 0o644)
        return {"etag": response.get("ETag", remote[path]["etag"]).strip('"'), "size": len(data)}

    new_manifest = dict((p, manifest[p]) for p in manifest if p in remote or not delete)
    downloads = todo["add"] + todo["update"]
    if downloads:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(downloads)))) as pool:
            futures = [(p, pool.submit(fetch, p)) for p in downloads]
            for path, future in futures:
                try:
                    new_manifest[path] = future.result()
                except Exception as e:
                    result["failed"][path] = _describe(e)
                    new_manifest.pop(path, None)
    result["bytes"] = sum(new_manifest[p]["size"] for p in downloads if p in new_manifest)
    result["added"] = [p for p in todo["add"] if p not in result["failed"]]
    result["updated"] = [p for p in todo["update"] if p not in result["failed"]]

    for path in todo["delete"]:
        try:
            os.unlink(os.path.join(dest, path))
        except FileNotFoundError:
            pass
        _remove_empty_parents(dest, path)
    write_manifest(dest, bucket, prefix, new_manifest)
    return result


def changed(result):
    return bool(result["added"] or result["updated"] or result["deleted"])


# ---------------------------------------------------------------------------------------------
# The agent: a long-running loop around sync(), run by systemd on every host that needs DAGs.

def client_config(workers=DEFAULT_WORKERS):
    """botocore settings of every sync client: throttling and network errors retried with
    backoff, a connection per download thread."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=max(10, workers),
                  connect_timeout=5, read_timeout=30)


def make_client(endpoint_url=None, region=None, workers=DEFAULT_WORKERS):
    """A boto3 S3 client for the agent, with client_config()."""
    import boto3

    config = client_config(workers)
    session = boto3.session.Session()
    fast_timestamps(session._session)
    return session.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)


def fast_timestamps(botocore_session):
    """Leave timestamps in responses as the strings S3 sent: the sync never reads them, and
    parsing each LastModified into a datetime is most of a listing's client-side cost."""
    botocore_session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)


def next_wait(interval, rng=random):
    """Seconds until the next poll: interval less up to 20 % jitter, so hosts spread their
    listings and a change is never seen later than one interval after it was made."""
    return interval * (1.0 - 0.2 * rng.random())


def write_status(path, status):
    if path:
        _write_atomic(os.path.dirname(path) or ".", os.path.basename(path),
                      json.dumps(status, sort_keys=True).encode(), 0o644)


def _log(message):
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def run_agent(bucket, prefix, dest, endpoint_url=None, region=None, interval=5.0, workers=DEFAULT_WORKERS,
              status_file=None, once=False, client=None, sleep=time.sleep):
    """Sync every interval, forever (or once). Logs one line per change and one line when the
    listing starts failing (naming bucket and prefix) or recovers; the status file says whether
    the last sync worked (healthy), when the last good one was, and the error if not."""
    client = client or make_client(endpoint_url, region, workers)
    prefix = normalize_prefix(prefix)
    status = {"bucket": bucket, "prefix": prefix, "dest": dest, "healthy": None, "error": None,
              "last_success": None, "last_attempt": None, "files": 0}
    last_error = None
    while True:
        started = time.time()
        status["last_attempt"] = started
        try:
            result = sync(client, bucket, prefix, dest, delete=True, workers=workers)
            error = None
            if result["failed"]:
                error = "could not download %d file(s) from s3://%s/%s, will retry: %s" % (
                    len(result["failed"]), bucket, prefix,
                    "; ".join("%s: %s" % kv for kv in sorted(result["failed"].items())[:3]))
            if changed(result):
                _log("synced s3://%s/%s to %s: %d added, %d updated, %d deleted, %d bytes in %.2f s" % (
                    bucket, prefix, dest, len(result["added"]), len(result["updated"]), len(result["deleted"]),
                    result["bytes"], time.time() - started))
            status["files"] = len(read_manifest(dest))
            if error is None:
                status["last_success"] = time.time()
        except SyncError as e:
            error = str(e)
        if error != last_error:
            _log(("ERROR " + error) if error else "sync of s3://%s/%s works again" % (bucket, prefix)
                 if last_error else "syncing s3://%s/%s to %s every %.0f s" % (bucket, prefix, dest, interval))
            last_error = error
        status["healthy"] = error is None
        status["error"] = error
        write_status(status_file, status)
        if once:
            return 0 if error is None else 1
        sleep(next_wait(interval))


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Keep a folder in sync with an S3 prefix.")
    parser.add_argument("command", choices=["agent", "once"])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--dest", required=True)
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3") or None)
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or None)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--status-file", default=None)
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    return run_agent(args.bucket, args.prefix, args.dest, args.endpoint_url, args.region, args.interval,
                     args.workers, args.status_file, once=args.command == "once")


if __name__ == "__main__":
    raise SystemExit(main())
