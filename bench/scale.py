"""Benchmark: worker scale-out and scale-in under a burst of tasks (goal: p95 <= 30 s).

Brings up its own hosts (environment bench-scale: control, worker1, worker2; mw1.micro, 3 slots
a worker, 1 to 2 workers, scaled with short windows), places the DAG `burst` (6 mapped tasks
of BENCH_TASK_SECONDS, default 30) and runs it BENCH_CYCLES times (default 5), each from one
running worker. Per cycle and as p50/p95 it prints
  (a) trigger -> second worker's unit active (systemd's 'Started' in its journal);
  (b) trigger -> a task running on the worker that was stopped at the trigger (its start_date):
      backlog -> a new worker running its first task;
  scale-in: the run's last task done -> the extra worker's unit stopped;
and the tasks killed (WorkerLostError/SIGKILL lines in the workers' journals since the cycle
began), retried (try_number > 1 or up_for_retry) and failed (goal 0). Not a test: it prints
figures. The hosts are removed at the end unless BENCH_KEEP=1.

    .venv/bin/python bench/scale.py        (or: make bench-scale)
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions" / "molecule" / "shared" / "tests"))
from airflow_api import Api, wait_for  # noqa: E402

HARNESS = [sys.executable, str(ROOT / "tests" / "harness" / "testhosts.py")]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
ENV = "bench-scale"
WORKERS = ["worker1", "worker2"]
LAYOUT = ["control:airflow_metadata_db,airflow_broker,airflow_scheduler,airflow_dag_processor,"
          "airflow_triggerer,airflow_webserver", *(f"{w}:airflow_worker" for w in WORKERS)]
SPEC = {"name": ENV, "airflow_version": "3.3.2", "environment_class": "mw1.micro",
        "min_workers": 1, "max_workers": 2, "schedulers": 1, "min_webservers": 1, "max_webservers": 1,
        "airflow_configuration_options": {"dag_processor.refresh_interval": "5",
                                          "dag_processor.min_file_process_interval": "5"},
        "airstrip": {"scaling": True}}
# Seconds (the role's defaults: 15, 180, 300, 20).
WINDOWS = {"scaling_interval": 5, "scaling_warmup": 10, "scaling_stabilization": 30, "scaling_idle_gap": 3}
BURST = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="burst", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, max_active_tasks=16)
def burst():
    @task
    def work(i):
        import socket
        import time

        time.sleep(%d)
        return socket.gethostname()

    work.expand(i=list(range(6)))


burst()
'''
DONE = ("success", "failed", "upstream_failed", "skipped", "removed")


def sh(host: str, command: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["docker", "exec", "-i", f"airstrip-{ENV}-{host}", "sh", "-c", command],
                          input=stdin, capture_output=True, text=True, check=False, timeout=60)
    return proc.stdout.strip()


def state(host: str) -> str:
    """The worker unit's: active, inactive, activating, deactivating (draining), failed."""
    return sh(host, "systemctl is-active airflow-celery-worker")


def unit_event(host: str, since: int, event: str) -> float | None:
    """When systemd last logged the worker unit Started or Stopped since then, epoch seconds (its
    ActiveEnter/InactiveEnterTimestamp are lost: the unit, not enabled, is unloaded once stopped)."""
    out = sh(host, f"journalctl -u airflow-celery-worker --since @{since} -o short-unix --no-pager")
    times = [float(line.split()[0]) for line in out.splitlines() if f" systemd[1]: {event} " in line]
    return times[-1] if times else None


def epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def scaler_status() -> dict:
    return json.loads(sh("control", "cat /run/airstrip-scaler/status.json") or "{}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(name: str, values: list, goal: str = "") -> str:
    got = [v for v in values if v is not None]
    if not got:
        return f"{name}: not measured"
    return (f"{name}: p50 {statistics.median(got):.1f} s, p95 {percentile(got, 0.95):.1f} s, "
            f"max {max(got):.1f} s over {len(got)}{goal}")


def fmt(value: float | None) -> str:
    return f"{value:6.1f} s" if value is not None else "     - "


def deploy(inventory: Path, spec_file: Path, env: dict) -> float:
    log = inventory.parent / "deploy.log"
    extra = [arg for k, v in WINDOWS.items() for arg in ("-e", f"{k}={v}")]
    started = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.call([PLAYBOOK, "-i", str(inventory), str(ROOT / "playbooks" / "create.yml"),
                              "-e", f"airstrip_spec_file={spec_file}", *extra],
                             cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if rc:
        sys.exit(f"deploy failed (exit {rc}); the end of {log}:\n{log.read_text()[-4000:]}")
    return time.monotonic() - started


def login(inventory: Path, password_file: Path) -> Api:
    inv = json.loads(inventory.read_text())["all"]
    vault = VaultLib([("default", VaultSecret(password_file.read_bytes().strip()))])
    secrets = yaml.safe_load(vault.decrypt((Path.home() / ".airstrip" / ENV / "secrets.yml").read_bytes()))
    return Api(f"http://{inv['hosts']['control']['ansible_host']}:8080", "admin", secrets["admin_password"])


def steady() -> list[str] | None:
    """The one running worker, when exactly one runs and the scaler counts and wants one."""
    states = {w: state(w) for w in WORKERS}
    up = [w for w in WORKERS if states[w] == "active"]
    # The other one fully stopped, not still stopping (deactivating).
    settled = sorted(states.values()) in (["active", "inactive"], ["active", "failed"])
    status = scaler_status()
    return up if settled and (status.get("num_workers"), status.get("desired_workers")) == (1, 1) else None


def cycle(api: Api) -> dict:
    [busy] = wait_for("one worker running, as the scaler counts", steady, timeout=600, every=2)
    stopped = next(w for w in WORKERS if w != busy)
    since = int(time.time()) - 1
    trigger = time.time()
    run_id = api.call("POST", "/dags/burst/dagRuns", {"logical_date": None})["dag_run_id"]
    tis_path = f"/dags/burst/dagRuns/{run_id}/taskInstances"
    out = {"a": None, "b": None, "scale_in": None}
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if out["a"] is None and state(stopped) == "active":
            out["a"] = (unit_event(stopped, since, "Started") or time.time()) - trigger
        try:
            tis = api.call("GET", tis_path)["task_instances"]
        except OSError as exc:  # a slow API server under the burst: look again
            print(f"  (REST API: {exc}; retrying)", flush=True)
            continue
        starts = [epoch(t["start_date"]) for t in tis if (t.get("hostname") or "").startswith(stopped)
                  and t.get("start_date") and t["state"] not in ("queued", "scheduled", None)]
        if out["b"] is None and starts:
            out["b"] = min(starts) - trigger
        if tis and all(t["state"] in DONE for t in tis):
            break
        time.sleep(1)
    else:
        sys.exit(f"the run {run_id} did not end within 900 s")
    last_end = max(epoch(t["end_date"]) for t in tis if t.get("end_date"))
    if out["a"] is not None:
        [left] = wait_for("the scale-in to one worker", steady, timeout=600, every=2)
        gone = next(w for w in WORKERS if w != left)
        stop = wait_for("the journal's Stopped", lambda: unit_event(gone, int(trigger), "Stopped"), timeout=30, every=1)
        out["scale_in"] = stop - last_end
    out["retried"] = sum(1 for t in tis if t["try_number"] > 1 or t["state"] == "up_for_retry")
    out["failed"] = sum(1 for t in tis if t["state"] != "success")
    out["killed"] = sum(1 for w in WORKERS for line in sh(
        w, f"journalctl -u airflow-celery-worker --since @{since} --no-pager -o cat").splitlines()
        if "WorkerLostError" in line or "SIGKILL" in line)
    out["hosts"] = sorted({t.get("hostname") or "?" for t in tis})
    out["stopped"] = stopped
    return out


def main() -> None:
    cycles = int(os.environ.get("BENCH_CYCLES", "5"))
    seconds = int(os.environ.get("BENCH_TASK_SECONDS", "30"))
    password_file = Path(os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE", Path.home() / ".airstrip" / "vault-password"))
    if not password_file.exists():
        # As the Makefile's: one made once for this machine.
        import secrets
        password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        password_file.write_text(secrets.token_urlsafe(32) + "\n")
        password_file.chmod(0o600)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_VAULT_PASSWORD_FILE=str(password_file))
    inventory = ROOT / "local" / ENV / "inventory.json"
    spec_file = inventory.parent / "environment.yml"
    results = []
    try:
        subprocess.run([*HARNESS, "down", ENV], check=True)
        subprocess.run([*HARNESS, "up", ENV, *LAYOUT, "--inventory", str(inventory)],
                       check=True, stdout=subprocess.DEVNULL)
        spec_file.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        print(f"deploying {ENV} (spec {spec_file}), scaler windows: "
              + ", ".join(f"{k}={v}" for k, v in WINDOWS.items()), flush=True)
        print(f"deploy: {deploy(inventory, spec_file, env):.0f} s", flush=True)
        api = login(inventory, password_file)
        for host in ["control", *WORKERS]:
            dest = "/var/lib/airflow/dags/burst.py"
            sh(host, f"cat > {dest}.tmp && chown airflow:airflow {dest}.tmp && mv {dest}.tmp {dest}", BURST % seconds)
        wait_for("burst to be parsed", lambda: api.call("GET", "/dags/burst"), timeout=300)
        api.call("PATCH", "/dags/burst", {"is_paused": False})
        print(f"burst: 6 tasks of {seconds} s, 3 slots a worker; {cycles} cycles", flush=True)
        for i in range(cycles):
            api = login(inventory, password_file)
            r = cycle(api)
            results.append(r)
            print(f"cycle {i + 1}: (a) second worker active {fmt(r['a'])}  (b) first task on it {fmt(r['b'])}  "
                  f"scale-in {fmt(r['scale_in'])}  killed {r['killed']} retried {r['retried']} failed {r['failed']}  "
                  f"(started {r['stopped']}; tasks ran on {', '.join(r['hosts'])})", flush=True)
    except OSError as exc:
        sys.exit(f"the REST API failed: {exc}")
    except AssertionError as exc:
        sys.exit(str(exc))
    except subprocess.CalledProcessError as exc:
        sys.exit(f"the test hosts did not come up: {' '.join(exc.cmd[1:4])} ... exited {exc.returncode}")
    finally:
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"kept: {inventory} (remove with: {HARNESS[1]} down {ENV})")
        else:
            subprocess.run([*HARNESS, "down", ENV], check=False)
    if not results:
        return
    print(figures("(a) trigger -> second worker's unit active", [r["a"] for r in results], " (goal p95 <= 30 s)"))
    print(figures("(b) trigger -> first task running on the new worker", [r["b"] for r in results],
                  " (goal p95 <= 30 s)"))
    print(figures("scale-in: last task done -> extra worker stopped", [r["scale_in"] for r in results],
                  f" (stabilization {WINDOWS['scaling_stabilization']} s)"))
    print(f"over {len(results)} cycles: killed {sum(r['killed'] for r in results)}, "
          f"retried {sum(r['retried'] for r in results)}, failed {sum(r['failed'] for r in results)} (goal 0)")


if __name__ == "__main__":
    main()
