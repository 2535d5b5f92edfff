"""The airstrip.airflow.operation role run by ansible on localhost, as playbooks/site.yml runs it:
the IN_PROGRESS marker, then the deploy, then SUCCESS, or FAILED from the rescue."""

import base64
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import adhoc
import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role writes the record as root")

# The block/rescue of playbooks/site.yml, with the deploy reduced to a task that fails on demand.
PLAYBOOK = """
- name: An operation, recorded as playbooks/site.yml records it
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Deploy, recording the outcome
      block:
        - name: Record the operation as under way
          ansible.builtin.include_role:
            name: airstrip.airflow.operation
          vars:
            operation_status: IN_PROGRESS
        - name: Read the record while the operation runs
          ansible.builtin.slurp:
            src: "{{ operation_record_dir }}/{{ airstrip_env_name }}/operation.json"
        - name: Stop as a crashed controller would
          ansible.builtin.meta: end_play
          when: crash | default(false)
        - name: Deploy
          ansible.builtin.fail:
            msg: "{{ deploy_error }}"
          when: deploy_error | default('') | length > 0
        - name: Record the operation as done
          ansible.builtin.include_role:
            name: airstrip.airflow.operation
          vars:
            operation_status: SUCCESS
      rescue:
        - name: Record the operation as failed
          ansible.builtin.include_role:
            name: airstrip.airflow.operation
          vars:
            operation_status: FAILED
            operation_error: "{{ ansible_failed_result.msg }}"
"""


@pytest.fixture
def operation(tmp_path):
    playbook = tmp_path / "operation.yml"
    playbook.write_text(PLAYBOOK)
    record = tmp_path / "records" / "env1" / "operation.json"

    def run(op, check=False, **extra):
        extra = dict(dict(operation_record_dir=str(tmp_path / "records"), airstrip_env_name="env1",
                          airstrip_operation=op, airflow_version="3.1.3",
                          ansible_python_interpreter=sys.executable), **extra)
        cmd = [str(Path(adhoc.ANSIBLE).with_name("ansible-playbook")), "-i", "localhost,", str(playbook), "-e", json.dumps(extra)]
        if check:
            cmd.append("--check")
        env = dict(os.environ, ANSIBLE_CONFIG=str(adhoc.ROOT / "ansible.cfg"),
                   ANSIBLE_COLLECTIONS_PATH=str(adhoc.ROOT / ".collections"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_STDOUT_CALLBACK="json")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=adhoc.ROOT, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
        tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
        # By task name, without the role's prefix.
        return {t["task"]["name"].split(" : ")[-1]: t["hosts"].get("localhost", {}) for t in tasks}

    return run, record


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def marker(results):
    return json.loads(base64.b64decode(results["Read the record while the operation runs"]["content"]))


def test_a_rerun_with_the_same_outcome_leaves_the_record_as_it_was(operation):
    run, record = operation
    t0 = now()
    first = run("CREATE")
    assert first["Record CREATE IN_PROGRESS"]["changed"] is True
    assert first["Record CREATE SUCCESS"]["changed"] is True
    assert marker(first)["status"] == "IN_PROGRESS" and "previous" in marker(first)
    created = json.loads(record.read_text())
    assert {k: created[k] for k in ("operation", "status", "error", "airflow_version", "host")} == {
        "operation": "CREATE", "status": "SUCCESS", "error": "", "airflow_version": "3.1.3", "host": "localhost"}
    assert t0 <= created["started_at"] <= created["finished_at"] and "previous" not in created
    data = record.read_bytes()

    for check in (True, False):
        again = run("CREATE", check=check)
        assert again["Record CREATE IN_PROGRESS"]["changed"] is False, check
        assert again["Record CREATE SUCCESS"]["changed"] is False, check
        assert record.read_bytes() == data, "a re-run rewrote the record"
    # While the re-run ran, the marker was on disk, keeping the record it then put back.
    assert marker(again)["status"] == "IN_PROGRESS" and marker(again)["previous"] == created
    assert marker(again)["started_at"] >= t0


def test_a_crash_leaves_the_marker_and_the_next_run_puts_the_record_back(operation):
    run, record = operation
    run("CREATE")
    data = record.read_bytes()
    run("CREATE", crash=True)
    left = json.loads(record.read_text())
    assert left["status"] == "IN_PROGRESS" and left["finished_at"] is None
    assert left["previous"] == json.loads(data)

    # The run replaces an interrupted run's marker, so it changed something.
    results = run("CREATE")
    assert results["Record CREATE IN_PROGRESS"]["changed"] is True
    assert results["Record CREATE SUCCESS"]["changed"] is False
    assert record.read_bytes() == data


def test_each_real_transition_is_written_with_fresh_times(operation):
    run, record = operation
    run("CREATE")
    created = json.loads(record.read_text())

    t0 = now()
    results = run("UPDATE", deploy_error="pip cannot install secret_token=abc123")
    assert results["Record UPDATE IN_PROGRESS"]["changed"] is False
    assert results["Record UPDATE FAILED"]["changed"] is True
    failed = json.loads(record.read_text())
    assert failed["status"] == "FAILED" and failed["operation"] == "UPDATE"
    assert failed["error"] == "pip cannot install secret=***" and "abc123" not in record.read_text()
    assert t0 <= failed["started_at"] <= failed["finished_at"] and "previous" not in failed
    assert created["started_at"] <= failed["started_at"]

    data = record.read_bytes()
    results = run("UPDATE", deploy_error="pip cannot install secret_token=abc123")
    assert results["Record UPDATE FAILED"]["changed"] is False and record.read_bytes() == data

    results = run("UPDATE", deploy_error="another error")
    assert results["Record UPDATE FAILED"]["changed"] is True
    assert json.loads(record.read_text())["error"] == "another error"

    t0 = now()
    results = run("UPDATE")
    assert results["Record UPDATE SUCCESS"]["changed"] is True
    updated = json.loads(record.read_text())
    assert (updated["status"], updated["error"]) == ("SUCCESS", "")
    assert t0 <= updated["started_at"] <= updated["finished_at"]

    results = run("UPDATE", airflow_version="3.1.4")
    assert results["Record UPDATE SUCCESS"]["changed"] is True
    assert json.loads(record.read_text())["airflow_version"] == "3.1.4"
