"""Driving a scenario's environment from its tests: its hosts, the lifecycle playbooks, the
status they report, a login to the REST API and the PIDs of the Airflow units.

Shared by the scenarios' tests (each adds this folder to its import path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import testinfra
import testinfra.utils.ansible_runner
import yaml
from airflow_api import Api
from ansible.parsing.vault import VaultLib, VaultSecret

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
PLAYBOOKS = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks"
ENV_NAME = "mol-" + os.environ["MOLECULE_SCENARIO_NAME"]
# The controller's ansible-vault file of the environment's secrets, and the password the
# Makefile gives every run.
SECRETS = Path.home() / ".airstrip" / ENV_NAME / "secrets.yml"
VAULT_PASSWORD_FILE = Path(os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE", Path.home() / ".airstrip" / "vault-password"))
# The collection's environment model, read by the tests as by the roles.
sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".collections"))
from ansible_collections.airstrip.airflow.plugins.module_utils import _model  # noqa: E402

SECRET_NAMES = sorted(_model.SECRETS)
UNITS = list(_model.COMPONENT_NAMES)


def host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def run_playbook(name: str, spec_file: Path | None, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook of one of the collection's playbooks, with the JSON callback."""
    args = ["-e", f"airstrip_spec_file={spec_file}"] if spec_file else []
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", INVENTORY,
                           str(PLAYBOOKS / f"{name}.yml"), *args, *extra],
                          capture_output=True, text=True, env=env, timeout=1200, check=False)


def playbook(name: str, spec_file: Path | None, *extra: str) -> dict:
    """As run_playbook, for a run that must succeed: its JSON result."""
    proc = run_playbook(name, spec_file, *extra)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout)


def info(spec_file: Path) -> dict:
    out = playbook("info", spec_file)
    for play in out["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == "Derive the status from the records and a health check":
                return task["hosts"]["localhost"]["environment"]
    raise AssertionError("info.yml did not report")


def awx_job(name: str, extravars: dict, project_files: dict | None = None) -> dict:
    """One of the collection's playbooks run as an AWX job runs it: ansible-runner with a private
    data directory (inventory, env/ with the extra vars and the vault password, project/ with a
    wrapper playbook and project_files), from an empty home. Returns rc, the stats' artifact data
    (what set_stats published for a workflow's next node), stdout and the job's home."""
    # A short path, as AWX's /runner: ssh's control sockets live under the job's home.
    pdd = Path(tempfile.mkdtemp(prefix=f"awx-{name}-"))
    for folder in ("env", "project", "home"):
        (pdd / folder).mkdir(parents=True)
    # AWX's inventory holds the hosts, their connection and group variables, not the
    # scenario's spec file.
    shutil.copytree(Path(INVENTORY).parent, pdd / "inventory")

    def strip(node):
        if isinstance(node, dict):
            node.pop("airstrip_spec_file", None)
            for value in node.values():
                strip(value)
    for path in (p for p in (pdd / "inventory").rglob("*") if p.is_file()):
        doc = yaml.safe_load(path.read_text())
        strip(doc)
        path.write_text(yaml.safe_dump(doc))
    (pdd / "project" / f"{name}.yml").write_text(
        f"---\n- name: {name}\n  ansible.builtin.import_playbook: airstrip.airflow.{name}\n")
    for rel, text in (project_files or {}).items():
        (pdd / "project" / rel).parent.mkdir(parents=True, exist_ok=True)
        (pdd / "project" / rel).write_text(text)
    password = pdd / "env" / "vault-password"
    password.write_bytes(VAULT_PASSWORD_FILE.read_bytes())
    password.chmod(0o600)
    (pdd / "env" / "extravars").write_text(json.dumps(extravars))
    (pdd / "env" / "envvars").write_text(json.dumps({
        "HOME": str(pdd / "home"), "ANSIBLE_VAULT_PASSWORD_FILE": str(password)}))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-runner"), "run", str(pdd), "-p", f"{name}.yml",
                           "--ident", "job"], capture_output=True, text=True, timeout=1500, check=False)
    artifacts = pdd / "artifacts" / "job"
    stats = {}
    for event in sorted((artifacts / "job_events").glob("*.json")):
        data = json.loads(event.read_text())
        if data.get("event") == "playbook_on_stats":
            stats = data["event_data"].get("artifact_data") or {}
    stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else proc.stdout + proc.stderr
    return {"rc": int((artifacts / "rc").read_text()) if (artifacts / "rc").exists() else proc.returncode,
            "stats": stats, "stdout": stdout, "home": pdd / "home"}


def changed_tasks(result: dict) -> list[tuple[str, str]]:
    """(host, task name) of every task that reported a change in a JSON playbook result."""
    return [(h, task["task"]["name"]) for play in result["plays"] for task in play["tasks"]
            for h, r in task["hosts"].items() if r.get("changed")]


def pids() -> dict:
    """MainPID of every Airflow unit on every host (0 when not running)."""
    out = {}
    for name in RUNNER.get_hosts("all"):
        for unit in UNITS:
            pid = host(name).run(f"systemctl show -p MainPID --value airflow-{unit}").stdout.strip()
            out[(name, unit)] = pid or "0"
    return out


def secrets() -> dict:
    """The environment's secrets: from Secrets Manager when its spec keeps them there, else
    decrypted from the controller's vault file."""
    spec_file = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "environment.yml"
    airstrip = (yaml.safe_load(spec_file.read_text()).get("airstrip") or {}) if spec_file.exists() else {}
    if airstrip.get("secrets_backend") == "aws_secrets_manager":
        import boto3

        client = boto3.client("secretsmanager", endpoint_url=airstrip["endpoint_url"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        return {name: client.get_secret_value(SecretId=f"airstrip/{ENV_NAME}/{name}")["SecretString"]
                for name in SECRET_NAMES}
    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD_FILE.read_bytes().strip()))])
    return yaml.safe_load(vault.decrypt(SECRETS.read_bytes()))


def login() -> Api:
    web = RUNNER.get_variables(RUNNER.get_hosts("airflow_webserver")[0])["ansible_host"]
    return Api(f"http://{web}:8080", "admin", secrets()["admin_password"])
