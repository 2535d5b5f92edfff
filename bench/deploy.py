"""Benchmark: cold deploy of the three-host environment from bare test hosts, and a no-op re-run.

Prints the median of several runs (BENCH_RUNS, default 3) and each run's figures; the
no-op re-run also reports how many tasks changed (the target is 0). Not a test: it passes
or fails nothing, it prints figures.

    .venv/bin/python bench/deploy.py        (or: make bench-deploy)
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, str(ROOT / "tests" / "harness" / "testhosts.py")]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
ENV = "bench"
LAYOUT = [
    "control:airflow_metadata_db,airflow_broker,airflow_scheduler,airflow_dag_processor,airflow_triggerer",
    "web:airflow_webserver",
    "worker:airflow_worker",
]


def deploy(inventory: Path) -> tuple[float, int]:
    started = time.monotonic()
    proc = subprocess.run([PLAYBOOK, "-i", str(inventory), str(ROOT / "playbooks" / "site.yml"),
                           "-e", f"airstrip_env_name={ENV}"],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    elapsed = time.monotonic() - started
    if proc.returncode:
        sys.exit(f"deploy failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    changed = sum(int(n) for n in re.findall(r"changed=(\d+)", proc.stdout.split("PLAY RECAP")[-1]))
    return elapsed, changed


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    inventory = ROOT / "local" / ENV / "inventory.json"
    cold, noop, noop_changed = [], [], []
    try:
        for i in range(runs):
            subprocess.run([*HARNESS, "down", ENV], check=True)
            subprocess.run([*HARNESS, "up", ENV, *LAYOUT, "--inventory", str(inventory)],
                           check=True, stdout=subprocess.DEVNULL)
            t_cold, _changed = deploy(inventory)
            t_noop, changed = deploy(inventory)
            cold.append(t_cold)
            noop.append(t_noop)
            noop_changed.append(changed)
            print(f"run {i + 1}: cold deploy {t_cold:6.1f} s   no-op re-run {t_noop:5.1f} s (changed={changed})",
                  flush=True)
    finally:
        subprocess.run([*HARNESS, "down", ENV], check=False)
    print(f"median of {runs}: cold deploy {statistics.median(cold):.1f} s (target <= 300 s), "
          f"no-op re-run {statistics.median(noop):.1f} s (target <= 60 s), "
          f"changed on re-run: {max(noop_changed)} (target 0)")


if __name__ == "__main__":
    main()
