"""Bad input stops the deploy on the controller, naming the problem, before any host is touched.

Runs playbooks/site.yml against the scenario's own, already deployed, hosts with one
mistake at a time, and checks that nothing on the hosts changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import scenario
import yaml
from scenario import RUNNER

INVENTORY = Path(scenario.INVENTORY)
SITE = scenario.PLAYBOOKS / "site.yml"


def fingerprint() -> dict[str, str]:
    """What the deploy would change on each host, read without changing anything."""
    out = {}
    for name in RUNNER.get_hosts("all"):
        out[name] = scenario.host(name).check_output(
            "sha256sum /etc/airflow/airflow.cfg /etc/systemd/system/airflow-*.service 2>/dev/null; "
            "stat -c %Y /etc/airflow/airflow.cfg 2>/dev/null || true")
    return out


def deploy(tmp_path: Path, extra: dict, drop_group: str | None = None, vault: str | None = "ours"
           ) -> subprocess.CompletedProcess:
    inv_dir = tmp_path / "inventory"
    shutil.copytree(INVENTORY.parent, inv_dir)
    inv_file = inv_dir / INVENTORY.name
    if drop_group:
        data = yaml.safe_load(inv_file.read_text())
        data.pop(drop_group, None)
        inv_file.write_text(yaml.safe_dump(data))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv_dir), str(SITE),
           "-e", json.dumps(extra)]
    # The default callback's PLAY RECAP, without colours, is what ran_on_hosts() reads.
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    if vault is None:
        env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    elif vault != "ours":
        (tmp_path / "vault-password").write_text(vault)
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(tmp_path / "vault-password")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)


RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP: {host: {ok: n, changed: n, unreachable: n, failed: n, skipped: n, ...}}."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    if "PLAY RECAP" not in text:
        return {}
    text = text[text.rindex("PLAY RECAP"):]
    return {m[1]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])} for m in RECAP_LINE.finditer(text)}


def ran_on_hosts(output: str) -> dict[str, dict[str, int]]:
    """The hosts of the inventory that a task ran on (or was tried on, or skipped for), from
    the recap. site.yml checks its input in a first play on localhost; a failure there ends
    the run before the play on the environment's hosts, which then have no line at all."""
    ran = recap(output)
    assert "localhost" in ran, "no PLAY RECAP with localhost's line: " + output[-3000:]
    return {h: counts for h, counts in ran.items() if h != "localhost" and any(counts.values())}


CASES = {
    "no scheduler host": ({}, "airflow_scheduler", "No host in inventory group(s) airflow_scheduler"),
    "no vault password": ({}, None, "no vault password was given to this run to decrypt it"),
    "another vault password": ({}, None, "none of the vault passwords given to this run decrypts it"),
    "unknown Airflow version": ({"airflow_version": "3.9.9"}, None,
                                "airflow_version 3.9.9 does not exist on the package index"),
    "not an Airflow 3 version": ({"airflow_version": "latest"}, None,
                                 "airflow_version 'latest' is not an Airflow 3 release number"),
    "malformed configuration option": ({"airflow_config_options": {"Core Parallelism": "3"}}, None,
                                       "airflow_config_options['Core Parallelism']: key must be 'section.option'"),
    "option Airstrip owns": ({"airflow_config_options": {"core.executor": "LocalExecutor"}}, None,
                             "airflow_config_options['core.executor']: Airstrip sets this option itself"),
}


@pytest.fixture(scope="module")
def before():
    return fingerprint()


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_stops_before_any_host(case, tmp_path, before):
    extra, drop, message = CASES[case]
    vault = {"no vault password": None, "another vault password": "not the one\n"}.get(case, "ours")
    result = deploy(tmp_path, extra, drop, vault)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert message in output, output[-3000:]
    assert ran_on_hosts(output) == {}, output[-3000:]
    assert "Traceback" not in output
    assert fingerprint() == before, "a host was changed"
