"""ansible-core 2.17, the oldest release meta/runtime.yml's requires_ansible admits.

A second virtualenv, .venv/core-2.17 (made once, then reused), holds ansible-core 2.17 only; the
collections come from the checkout (.collections) and from the main virtualenv's ansible package,
as an AWX execution environment or a shell user's ANSIBLE_COLLECTIONS_PATH would give them. With
its ansible-playbook: every playbook passes --syntax-check, so does an AWX project's wrapper that
imports a playbook by its FQCN (docs/awx/project/), and read_spec.yml reads the documented spec
(as a file, inline, relative to the project) and checks it (the environment_spec module running
under 2.17), and stops a bad one with its message.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CORE = "2.17.14"
VENV = ROOT / ".venv" / "core-2.17"
READY = VENV / ".airstrip-ready"
PYTHON = VENV / "bin" / "python"
PLAYBOOK = VENV / "bin" / "ansible-playbook"
# The ansible package's collections (amazon.aws ...) in the main virtualenv.
BUNDLED = next(Path(p).parent for p in __import__("ansible_collections").__path__ if (Path(p) / "amazon" / "aws").is_dir())
EXAMPLE = ROOT / "docs" / "environment.example.yml"


def _index_reachable():
    """(reachable, why): asks the configured package index (pip's configuration) for ansible-core's releases."""
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "ansible-core", "--retries", "1", "--timeout", "20"],
                           capture_output=True, text=True, check=False)
    return probe.returncode == 0, " ".join((probe.stderr or probe.stdout).strip().splitlines()[-1:])


def _make_venv():
    with open(ROOT / ".venv" / ".core-2.17.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if READY.is_file() and READY.read_text().strip() == CORE and PLAYBOOK.exists():
            return
        reachable, why = _index_reachable()
        if not reachable:
            pytest.skip(f"the package index is unreachable, so ansible-core {CORE} cannot be installed: {why}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True)
        install = subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", f"ansible-core=={CORE}"],
                                 capture_output=True, text=True, check=False)
        assert install.returncode == 0, f"pip install ansible-core=={CORE} failed:\n{install.stdout}\n{install.stderr}"
        READY.write_text(CORE + "\n")


@pytest.fixture(scope="module")
def core217():
    _make_venv()
    version = subprocess.run([str(PYTHON), "-c", "import ansible.release as r; print(r.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == CORE
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=f"{ROOT / '.collections'}:{BUNDLED}",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PATH=f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}")
    return env


def playbook(env, *args, **kwargs):
    return subprocess.run([str(PLAYBOOK), *map(str, args)], capture_output=True, text=True, check=False, env=env,
                          cwd=kwargs.pop("cwd", ROOT), **kwargs)


PLAYBOOKS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_every_playbook_passes_syntax_check(core217, name):
    proc = playbook(core217, "--syntax-check", "-i", "localhost,", ROOT / "playbooks" / name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"playbook: {ROOT / 'playbooks' / name}" in proc.stdout


def test_an_awx_projects_wrappers_import_the_playbooks_by_fqcn(core217):
    wrappers = sorted((ROOT / "docs" / "awx" / "project").glob("*.yml"))
    assert [w.stem for w in wrappers] == ["create", "delete", "info", "update"]
    for wrapper in wrappers:
        proc = playbook(core217, "--syntax-check", "-i", "localhost,", wrapper.name, cwd=wrapper.parent)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def inventory(path):
    """Hosts for the example spec's counts (never contacted: read_spec runs on the controller only)."""
    def hosts(*names):
        return {"hosts": {n: {} for n in names}}
    doc = {"all": {"vars": {"ansible_connection": "local"}, "children": {
        "airflow_metadata_db": hosts("db1"), "airflow_broker": hosts("db1"),
        "airflow_scheduler": hosts("sched1", "sched2"), "airflow_dag_processor": hosts("sched1"),
        "airflow_triggerer": hosts("sched1"), "airflow_webserver": hosts("web1"),
        "airflow_worker": hosts("w1", "w2", "w3", "w4")}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def read_spec(env, tmp_path, spec_file=None, spec=None):
    """read_spec.yml as a job runs it: from the project's folder (tmp_path), the spec as a file or inline."""
    given = {"airstrip_spec_file": str(spec_file)} if spec_file is not None else {"airstrip_spec": spec}
    return playbook(dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"), "-i", inventory(tmp_path / "inventory.yml"),
                    "-i", "localhost,", "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={PYTHON}",
                    "-e", json.dumps(given), ROOT / "playbooks" / "read_spec.yml", cwd=tmp_path)


def task_results(proc, name_part):
    out = json.loads(proc.stdout)
    return [(host, res) for play in out["plays"] for task in play["tasks"] if name_part in task["task"]["name"]
            for host, res in task["hosts"].items()]


def test_read_spec_checks_the_example_spec(core217, tmp_path):
    proc = read_spec(core217, tmp_path, spec_file=EXAMPLE)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    ((host, res),) = task_results(proc, "Validate and normalise the spec")
    assert host == "localhost" and not res.get("failed")
    # The environment_spec module ran under 2.17: the spec's settings, from the model.
    assert res["settings"]["airstrip_env_name"] == "analytics"
    assert res["settings"]["airflow_version"] == "3.3.2"
    stats = json.loads(proc.stdout)["stats"]
    assert stats["localhost"]["failures"] == 0 and stats["localhost"]["unreachable"] == 0


def test_read_spec_takes_the_spec_inline_or_relative_to_the_project(core217, tmp_path):
    """As an AWX survey gives it (the YAML text of a textarea), and as a project's relative path."""
    inline = read_spec(core217, tmp_path, spec=EXAMPLE.read_text())
    assert inline.returncode == 0, inline.stdout[-4000:] + inline.stderr
    assert task_results(inline, "Validate and normalise the spec")[0][1]["settings"]["airstrip_env_name"] == "analytics"
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "analytics.yml").write_text(EXAMPLE.read_text())
    relative = read_spec(core217, tmp_path, spec_file="environments/analytics.yml")
    assert relative.returncode == 0, relative.stdout[-4000:] + relative.stderr


def test_read_spec_stops_a_bad_spec_with_its_message(core217, tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["airflow_version"] = "2.10.5"
    bad = tmp_path / "environment.yml"
    bad.write_text(yaml.safe_dump(spec))
    proc = read_spec(core217, tmp_path, spec_file=bad)
    assert proc.returncode != 0
    ((host, res),) = task_results(proc, "Validate and normalise the spec")
    assert host == "localhost" and res.get("failed") and "airflow_version" in res["msg"] and "Airflow 3" in res["msg"], res
