"""Benchmark: our S3 sync vs `aws s3 sync` (awscli), side by side against one emulated S3.

2,000 files of ~2 KB under one prefix. Prints, as medians of BENCH_RUNS (default 3) runs:
  full sync      into an empty folder, each tool started as a fresh process
  no-change sync a second run into the synced folder, fresh process again
  agent cycle    a no-change sync inside the running agent (what it does every 5 s)
and the latency from an upload to the file on disk under the running agent at its default
interval (5 s), p50 and p95 over BENCH_UPLOADS (default 20) uploads at random moments: for an
agent run here, and, when the local environment (`make up`, or BENCH_NODE_ENV) is up, on its
worker host, where the agent runs under systemd against the environment's bucket.
awscli is installed by this script into its own virtualenv under ~/.cache/airstrip.
Not a test: it prints figures.

    .venv/bin/python bench/s3_sync.py        (or: make bench-sync)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / ".collections"), str(ROOT / "tests" / "harness")]

import boto3  # noqa: E402
import loopback_moto  # noqa: E402
from ansible_collections.airstrip.airflow.plugins.module_utils import _s3sync  # noqa: E402

ENGINE = _s3sync.__file__
FILES = 2000
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
UPLOADS = int(os.environ.get("BENCH_UPLOADS", "20"))
AWSCLI = "awscli==1.46.3"
AWSCLI_VENV = Path.home() / ".cache" / "airstrip" / "bench-awscli"


def awscli() -> str:
    aws = AWSCLI_VENV / "bin" / "aws"
    stamp = AWSCLI_VENV / (".installed-" + AWSCLI)
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "uv", "venv", "--quiet", "--python", sys.executable, str(AWSCLI_VENV)],
                       check=True)
        subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python",
                        str(AWSCLI_VENV / "bin" / "python"), AWSCLI], check=True)
        stamp.touch()
    return str(aws)


def timed(cmd: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode:
        sys.exit(f"{cmd[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def upload_corpus(s3, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(7)

    def put(i: int) -> None:
        body = (f"# file {i}\n" + "x = %r\n" % rng.randbytes(900).hex()[:2000])[:2048].encode()
        s3.put_object(Bucket=bucket, Key=f"dags/d{i // 100:02d}/f{i:04d}.py", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(FILES)))


def latency(s3, bucket: str, url: str, work: Path) -> list[float]:
    dest = work / "agent"
    agent = subprocess.Popen([sys.executable, ENGINE, "agent", "--bucket", bucket, "--prefix", "dags",
                              "--dest", str(dest), "--endpoint-url", url], stdout=subprocess.DEVNULL)
    try:
        while not (dest / "d19" / "f1999.py").exists():
            time.sleep(0.05)
        rng = random.Random(11)
        out = []
        for i in range(UPLOADS):
            time.sleep(rng.uniform(0, 5))
            target = dest / f"new{i}.py"
            s3.put_object(Bucket=bucket, Key=f"dags/new{i}.py", Body=b"n = %d\n" % i)
            uploaded = time.monotonic()
            while not target.exists():
                time.sleep(0.005)
            out.append(time.monotonic() - uploaded)
        return out
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def endpoint_floor(url: str, bucket: str, keys: list[str]) -> tuple[float, float]:
    """What the endpoint itself needs, with the thinnest client (signed raw HTTP, no parsing):
    one listing of the prefix, and a GET of every object 16 at a time. No sync tool can beat it."""
    import urllib3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds = boto3.session.Session().get_credentials().get_frozen_credentials()
    pool = urllib3.PoolManager(maxsize=16)

    def get(path: str) -> bytes:
        req = AWSRequest(method="GET", url=url + path)
        S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
        return pool.request("GET", req.url, headers=dict(req.headers)).data

    started = time.monotonic()
    token = ""
    while True:
        body = get(f"/{bucket}?list-type=2&prefix=dags%2F" + (f"&continuation-token={token}" if token else ""))
        if b"<IsTruncated>true</IsTruncated>" not in body:
            break
        token = urllib.parse.quote(body.split(b"<NextContinuationToken>")[1].split(b"<")[0].decode(), safe="")
    listing = time.monotonic() - started
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool_:
        list(pool_.map(lambda k: get(f"/{bucket}/{k}"), keys))
    return listing, time.monotonic() - started


WAITER = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.005)\nprint(time.time())"


def node_latency(env: str) -> list[float] | None:
    """Upload-to-file latency on the worker host of a running local environment (`make up`), whose
    agent runs under systemd at its default interval; None when that environment is not up."""
    info = subprocess.run([sys.executable, str(ROOT / "tests" / "harness" / "testhosts.py"), "info", env],
                          capture_output=True, text=True, check=False)
    node = f"airstrip-{env}-worker"
    endpoint = json.loads(info.stdout or "{}").get("aws_endpoint") if info.returncode == 0 else None
    if not endpoint or node not in json.loads(info.stdout)["hosts"]:
        return None
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = "airstrip-" + env.lower().replace("_", "-")
    rng = random.Random(13)
    out = []
    for i in range(UPLOADS):
        key = f"dags/bench/lat{i}.txt"
        waiter = subprocess.Popen(["docker", "exec", node, "python3", "-c", WAITER, f"/var/lib/airflow/{key}"],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.5 + rng.uniform(0, 5))
        uploaded = time.time()
        s3.put_object(Bucket=bucket, Key=key, Body=b"latency probe\n")
        seen = float(waiter.communicate(timeout=60)[0])
        out.append(seen - uploaded)
    for i in range(UPLOADS):
        s3.delete_object(Bucket=bucket, Key=f"dags/bench/lat{i}.txt")
    return out


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[max(0, int(round(0.95 * len(values))) - 1)]


def main() -> None:
    aws = awscli()
    with loopback_moto.running() as url:
        env_creds = loopback_moto.CREDENTIALS
        os.environ.update(env_creds)
        s3 = boto3.client("s3", endpoint_url=url)
        bucket = "bench-sync"
        upload_corpus(s3, bucket)
        work = Path(tempfile.mkdtemp(prefix="airstrip-bench-"))
        ours_cmd = [sys.executable, ENGINE, "once", "--bucket", bucket, "--prefix", "dags", "--endpoint-url", url,
                    "--dest"]
        aws_cmd = [aws, "s3", "sync", "--quiet", "--endpoint-url", url, f"s3://{bucket}/dags"]
        figures = {k: [] for k in ("ours_full", "aws_full", "ours_nochange", "aws_nochange", "agent_cycle")}
        try:
            client = _s3sync.make_client(url)
            for run in range(RUNS):
                for name in ("ours", "aws"):
                    dest = work / f"{name}{run}"
                    cmd = ours_cmd + [str(dest)] if name == "ours" else aws_cmd + [str(dest)]
                    figures[f"{name}_full"].append(timed(cmd))
                    figures[f"{name}_nochange"].append(timed(cmd))
                got = sum(1 for _f in (work / f"ours{run}").rglob("*.py"))
                assert got == FILES, f"our sync left {got} files, want {FILES}"
                assert sum(1 for _f in (work / f"aws{run}").rglob("*.py")) == FILES
                started = time.monotonic()
                result = _s3sync.sync(client, bucket, "dags", str(work / f"ours{run}"))
                figures["agent_cycle"].append(time.monotonic() - started)
                assert not _s3sync.changed(result)
            keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dags/")
                    for o in p.get("Contents", [])]
            floors = [endpoint_floor(url, bucket, keys) for _run in range(RUNS)]
            lat = sorted(latency(s3, bucket, url, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"S3 sync, {FILES} files of ~2 KB, emulated S3 on loopback, median of {RUNS} runs ({AWSCLI})")
    print(f"{'':16}{'airstrip':>10}{'aws s3 sync':>13}{'speed-up':>10}")
    for label, key in (("full sync", "full"), ("no-change sync", "nochange")):
        print(f"{label:16}{med['ours_' + key]:>9.2f}s{med['aws_' + key]:>12.2f}s{med['aws_' + key] / med['ours_' + key]:>9.1f}x")
    print(f"{'agent cycle':16}{med['agent_cycle']:>9.3f}s{'':>13}{med['aws_nochange'] / med['agent_cycle']:>9.1f}x"
          "  (no-change sync inside the running agent)")
    list_floor = statistics.median(f[0] for f in floors)
    get_floor = statistics.median(f[1] for f in floors)
    print(f"endpoint floor  listing {list_floor:.2f}s, GET of every file {get_floor:.2f}s (signed raw HTTP, no parsing):"
          f" the best any client can reach here is {med['aws_nochange'] / list_floor:.1f}x on no-change"
          f" and {med['aws_full'] / (list_floor + get_floor):.1f}x on a full sync")
    print(f"upload to file on disk, agent at its default 5 s interval, {len(lat)} uploads: "
          f"p50 {statistics.median(lat):.2f} s, p95 {p95(lat):.2f} s, max {lat[-1]:.2f} s  (agent on this machine)")
    env = os.environ.get("BENCH_NODE_ENV", "local")
    node = node_latency(env)
    if node is None:
        print(f"upload to file on a node: skipped, no local environment '{env}' is up (make up)")
    else:
        print(f"upload to file on a node, worker host of '{env}' (agent under systemd, 5 s), {len(node)} uploads: "
              f"p50 {statistics.median(node):.2f} s, p95 {p95(node):.2f} s, max {max(node):.2f} s")
    for key, values in figures.items():
        print(f"  {key}: " + " ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
