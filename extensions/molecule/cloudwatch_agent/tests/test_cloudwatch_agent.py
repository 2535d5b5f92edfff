"""The CloudWatch agent role on its host: what converge installed and configured, runs
of the role against bad packages that must fail, naming the problem, and change nothing, and
last its delete entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
WORK = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "cwagent"
BUILD = json.loads((WORK / "build.json").read_text())
PUBLISHED = yaml.safe_load((WORK / "published.yml").read_text())
ENV_NAME = "mol-" + os.environ["MOLECULE_SCENARIO_NAME"]
HOME = "/opt/aws/amazon-cloudwatch-agent"
CONFIG = "/etc/airstrip/cloudwatch-agent.json"
CREDENTIALS = "/etc/airstrip/cloudwatch-agent.credentials"
# The vendored schema, as the stand-in package carries it.
SCHEMA = f"{HOME}/doc/amazon-cloudwatch-agent-schema.json"


@pytest.fixture(scope="module")
def host():
    return testinfra.get_host(f"ansible://agent?ansible_inventory={INVENTORY}")


def config(host) -> dict:
    return json.loads(host.file(CONFIG).content_string)


def test_the_verified_package_is_installed(host):
    pkg = host.package("amazon-cloudwatch-agent")
    assert pkg.is_installed and pkg.version == BUILD["version"]
    # apt resolved the package's Depends.
    assert host.package("python3-jsonschema").is_installed
    # The download is kept root-only, outside /tmp.
    cache = host.file("/var/cache/airstrip/cloudwatch-agent")
    assert cache.mode == 0o700 and cache.user == "root"
    assert host.file("/var/lib/airstrip/cloudwatch-agent-gpg").mode == 0o700
    keys = host.check_output("gpg --batch --no-autostart --homedir /var/lib/airstrip/cloudwatch-agent-gpg "
                             "--with-colons --list-keys")
    assert f"fpr:::::::::{BUILD['fingerprint']}:" in keys


def test_the_configuration_is_valid_and_ours(host):
    cfg = config(host)
    schema_errors = host.run(
        "python3 -c 'import json, sys, jsonschema; "
        "v = jsonschema.Draft4Validator(json.load(open(sys.argv[1]))); "
        "[print(e.message) for e in v.iter_errors(json.load(open(sys.argv[2])))]' "
        f"{SCHEMA} {CONFIG}")
    assert schema_errors.rc == 0 and schema_errors.stdout == "", schema_errors.stdout + schema_errors.stderr
    f = host.file(CONFIG)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert cfg["agent"]["region"] == "us-east-1"
    # The api-server's log type (webserver) is off: three journals, the triggerer with the scheduler.
    entries = cfg["logs"]["logs_collected"]["journald"]["collect_list"]
    assert [(e["units"], e["log_group_name"], e["log_stream_name"]) for e in entries] == [
        (["airflow-scheduler.service"], f"airflow-{ENV_NAME}-Scheduler", "scheduler_{hostname}"),
        (["airflow-dag-processor.service"], f"airflow-{ENV_NAME}-DAGProcessing", "dag-processor_{hostname}"),
        (["airflow-triggerer.service"], f"airflow-{ENV_NAME}-Scheduler", "triggerer_{hostname}"),
    ]
    assert "retention_in_days" not in f.content_string and "statsd" not in f.content_string
    assert cfg["logs"]["endpoint_override"] == cfg["metrics"]["endpoint_override"] == PUBLISHED["endpoint"]
    assert cfg["metrics"]["namespace"] == f"Airstrip/{ENV_NAME}"
    assert cfg["metrics"]["append_dimensions"] == {"Environment": ENV_NAME, "Host": "agent"}
    assert [p["pattern"] for p in cfg["metrics"]["metrics_collected"]["procstat"]] == [
        "airflow scheduler", "airflow dag-processor", "airflow triggerer", "airflow api-server"]


def test_credentials_are_private_and_named_in_common_config(host):
    creds = host.file(CREDENTIALS)
    assert (creds.user, creds.group, creds.mode) == ("root", "root", 0o600)
    assert creds.content_string.splitlines() == [
        "[AmazonCloudWatchAgent]", "aws_access_key_id = testing", "aws_secret_access_key = testing-secret"]
    common = host.file(f"{HOME}/etc/common-config.toml").content_string
    assert 'shared_credential_profile = "AmazonCloudWatchAgent"' in common
    assert f'shared_credential_file = "{CREDENTIALS}"' in common


def test_the_agent_runs_our_configuration(host):
    calls = host.file(f"{HOME}/logs/ctl-calls.log").content_string.splitlines()
    fetches = [c for c in calls if " -a fetch-config " in c]
    # Once: the converge's; the idempotence run applied nothing.
    assert len(fetches) == 1, calls
    assert fetches[0].endswith(f"-a fetch-config -m onPremise -c file:{CONFIG} -s"), fetches
    applied = host.file(f"{HOME}/etc/amazon-cloudwatch-agent.d/file_cloudwatch-agent.json").content_string
    assert json.loads(applied) == config(host)
    # Our file stays where fetch-config cannot delete it.
    assert host.file(CONFIG).exists
    service = host.service("amazon-cloudwatch-agent")
    assert service.is_running and service.is_enabled
    status = json.loads(host.check_output(f"{HOME}/bin/amazon-cloudwatch-agent-ctl -a status"))
    assert status["status"] == "running" and status["version"] == BUILD["version"]


def snapshot(host) -> dict:
    """What a failed run must leave as it was."""
    return {
        "package": host.package("amazon-cloudwatch-agent").version,
        "files": host.check_output(f"sha256sum {CONFIG} {CREDENTIALS} {HOME}/etc/common-config.toml "
                                   f"{HOME}/bin/amazon-cloudwatch-agent-ctl"),
        "fetches": host.check_output(f"grep -c -- '-a fetch-config' {HOME}/logs/ctl-calls.log"),
        "pid": host.check_output("systemctl show -p MainPID --value amazon-cloudwatch-agent"),
    }


def apply(**extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", INVENTORY,
                           str(SCENARIO / "apply.yml"), "-e", json.dumps(extra)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


BASE = PUBLISHED["base_url"]
BAD = {
    # Another version of the package under the real package's signature: a swapped download.
    "tampered package": (
        {"cloudwatch_agent_package_url": f"{BASE}/tampered/amazon-cloudwatch-agent.deb"},
        [f"The signature {BASE}/tampered/amazon-cloudwatch-agent.deb.sig of "
         f"{BASE}/tampered/amazon-cloudwatch-agent.deb is not a valid signature by the pinned key "
         f"{BUILD['fingerprint']}", "BADSIG"]),
    # The real package, signed by a key that is not the pinned one.
    "another key's signature": (
        {"cloudwatch_agent_signature_url": f"{BASE}/other-key/amazon-cloudwatch-agent.deb.sig"},
        [f"is not a valid signature by the pinned key {BUILD['fingerprint']}", "ERRSIG"]),
    # A key file that is not the pinned key, even if the signature is its own.
    "another key": (
        {"cloudwatch_agent_signature_url": f"{BASE}/other-key/amazon-cloudwatch-agent.deb.sig",
         "cloudwatch_agent_gpg_key_url": f"{BASE}/other-key/amazon-cloudwatch-agent.gpg"},
        [f"holds {BUILD['other_fingerprint']}, expected {BUILD['fingerprint']}"]),
    # Signed correctly, but older than the agent's journald support.
    "too old an agent": (
        {"cloudwatch_agent_package_url": f"{BASE}/old/amazon-cloudwatch-agent.deb"},
        [f"is amazon-cloudwatch-agent {BUILD['old']['version']}: Airstrip needs amazon-cloudwatch-agent 1.300070.0"]),
    # A pinned sha256 that the download does not have.
    "wrong sha256": (
        {"cloudwatch_agent_package_sha256": "0" * 64},
        ["did not match"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_package_fails_and_changes_nothing(host, case):
    extra, messages = BAD[case]
    before = snapshot(host)
    result = apply(**extra)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for message in messages:
        assert message in " ".join(output.split()), output[-3000:]
    assert "Traceback" not in output
    assert snapshot(host) == before
    # A package that failed its check is not kept.
    if case in ("tampered package", "another key's signature"):
        assert not host.file("/var/cache/airstrip/cloudwatch-agent/amazon-cloudwatch-agent.deb").exists


def test_a_good_run_after_them_changes_nothing_but_the_cache(host):
    before = snapshot(host)
    result = apply()
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert snapshot(host) == before


def run(playbook: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", INVENTORY,
                           str(SCENARIO / playbook)], capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


def test_delete_removes_the_agent_and_airstrips_files(host):
    """Last: the delete entry point, twice (the second finds nothing to remove)."""
    for attempt in (1, 2):
        result = run("delete.yml")
        assert result.returncode == 0, (attempt, (result.stdout + result.stderr)[-3000:])
    assert not host.package("amazon-cloudwatch-agent").is_installed
    assert "amazon-cloudwatch-agent.service" not in host.check_output("systemctl list-units --all --no-legend")
    for path in (HOME, CONFIG, CREDENTIALS, "/var/cache/airstrip/cloudwatch-agent",
                 "/var/lib/airstrip/cloudwatch-agent-gpg", "/var/lib/airstrip/cloudwatch-agent-check",
                 "/etc/systemd/system/amazon-cloudwatch-agent.service"):
        assert not host.file(path).exists, path
    assert not host.process.filter(comm="sleep", args="sleep infinity")
