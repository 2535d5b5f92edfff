"""What a deployed Airstrip environment must be, checked on the real hosts.

Shared by every cluster scenario: what each host should run comes from its inventory
groups, so the same checks hold for three hosts and for all-in-one.
"""

from __future__ import annotations

import shlex
import socket
import stat
import urllib.request

import pytest
import scenario
from airflow_api import Api, place_dag, wait_for
from scenario import RUNNER, SECRETS

testinfra_hosts = RUNNER.get_hosts("all")

COMPONENTS = {
    "scheduler": "airflow_scheduler",
    "dag-processor": "airflow_dag_processor",
    "triggerer": "airflow_triggerer",
    "api-server": "airflow_webserver",
    "celery-worker": "airflow_worker",
}
DAG_ID = "airstrip_e2e"
DAG = f'''
from datetime import datetime
from socket import gethostname

from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def airstrip_e2e():
    @task
    def where():
        return gethostname()

    @task
    def check(host):
        assert host, "no hostname"
        return host

    check(where())


airstrip_e2e()
'''


def groups_of(name: str) -> list[str]:
    return RUNNER.get_variables(name).get("group_names", [])


def hosts_in(group: str) -> list[str]:
    return RUNNER.get_hosts(group)


def address(name: str) -> str:
    return RUNNER.get_variables(name)["ansible_host"]


def control_plane(name: str) -> bool:
    """Whether a host runs a control-plane component (every one but the Celery worker)."""
    return bool(set(groups_of(name)) & set(scenario._model.lookup("control_plane_groups")))


def test_components_run_exactly_where_their_group_says(host):
    name = host.backend.get_hostname()
    for component, group in COMPONENTS.items():
        service = host.service(f"airflow-{component}")
        if group in groups_of(name):
            assert service.is_running, f"airflow-{component} not running on {name}"
            assert service.is_enabled, f"airflow-{component} not enabled on {name}"
            pid = host.check_output(f"systemctl show -p MainPID --value airflow-{component}")
            user = host.check_output(f"ps -o user= -p {pid}")
            assert user == "airflow", f"airflow-{component} runs as {user}"
        else:
            assert not host.file(f"/etc/systemd/system/airflow-{component}.service").exists
    # A worker host's task logs: served by a unit of their own, as a user that task code is not.
    log_server = host.service("airflow-log-server")
    if "airflow_worker" in groups_of(name):
        assert log_server.is_running
        pid = host.check_output("systemctl show -p MainPID --value airflow-log-server")
        assert host.check_output(f"ps -o user= -p {pid}") == "airflow-logs"
        assert host.file("/etc/airflow/log-server.cfg").user == "airflow-logs"
        assert host.file("/etc/airflow/log-server.cfg").mode == 0o600
    else:
        assert not host.file("/etc/systemd/system/airflow-log-server.service").exists


def test_database_and_broker_services(host):
    name = host.backend.get_hostname()
    groups = groups_of(name)
    if "airflow_metadata_db" in groups:
        assert host.service("postgresql").is_running
        assert host.socket(f"tcp://{address(name)}:5432").is_listening
        assert not host.socket("tcp://0.0.0.0:5432").is_listening
    if "airflow_broker" in groups:
        assert host.service("redis-server").is_running
        assert host.socket(f"tcp://{address(name)}:6379").is_listening
        assert not host.socket("tcp://0.0.0.0:6379").is_listening


def test_secret_files_are_private(host):
    name = host.backend.get_hostname()
    if not set(groups_of(name)) & set(COMPONENTS.values()):
        pytest.skip("no Airflow component on this host")
    on_web = "airflow_webserver" in groups_of(name)
    for path in ("/etc/airflow/airflow.cfg", "/var/lib/airflow/passwords.json"):
        f = host.file(path)
        if path.endswith("passwords.json") and not on_web:
            # Only the api-server checks logins.
            assert not f.exists, f"{path} on {name}, which has no api-server"
            continue
        assert f.mode == 0o600, f"{path} is {oct(f.mode)}"
        assert f.user == "airflow"
    if "airflow_broker" in groups_of(name):
        assert host.file("/etc/redis/airstrip.conf").mode == 0o600


def test_controller_keeps_secrets_encrypted():
    """One ansible-vault file, 0600 in a 0700 folder, that holds every secret and shows none."""
    assert stat.S_IMODE(SECRETS.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(SECRETS.stat().st_mode) == 0o600
    data = SECRETS.read_bytes()
    assert data.startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    values = scenario.secrets()
    assert sorted(values) == scenario.SECRET_NAMES
    for name, value in values.items():
        assert len(value) >= 20 and value.encode() not in data, name


# ---------------------------------------------------------------- reachability
PG_PROBE = r"""
import socket, struct, sys
s = socket.create_connection((sys.argv[1], 5432), timeout=5)
body = struct.pack("!i", 196608) + b"user\0airflow\0database\0airflow\0\0"
s.sendall(struct.pack("!i", len(body) + 4) + body)
data = s.recv(4096)
print(data[:1].decode() + ":" + data[5:].decode("latin1").replace("\0", " "))
"""
REDIS_PROBE = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 6379), timeout=5)
s.sendall(b"PING\r\n")
print(s.recv(200).decode().strip())
"""


def probe(host, script: str, target: str) -> str:
    return host.check_output(f"python3 -c {shlex.quote(script)} {target}")


PORT_PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("unreachable: %s" % exc)
"""


def port(host, target: str, number: int) -> str:
    return host.check_output(f"python3 -c {shlex.quote(PORT_PROBE)} {target} {number}")


@pytest.mark.parametrize("outsider", RUNNER.get_hosts("outsiders") or ["none"])
def test_private_ports_are_closed_to_hosts_outside_the_environment(outsider):
    if outsider == "none":
        pytest.skip("scenario has no host outside the environment")
    out = scenario.host(outsider)
    db = address(hosts_in("airflow_metadata_db")[0])
    broker = address(hosts_in("airflow_broker")[0])
    web = address(hosts_in("airflow_webserver")[0])
    worker = address(hosts_in("airflow_worker")[0])
    triggerer = address(hosts_in("airflow_triggerer")[0])
    ports = scenario._model.PORTS
    # The host firewall (table inet airstrip) closes every port of the model at the TCP level...
    listening = ((db, ports["metadata_db"]), (broker, ports["broker"]), (worker, ports["worker_logs"]),
                 (triggerer, ports["triggerer_logs"]), (web, ports["api"]))
    for target, number in listening:
        assert port(out, target, number) == "refused", (target, number)
    # ...to outsiders only: a member reaches them (so something listens there), and is admitted
    # to authenticate; PostgreSQL admits the control plane's hosts only.
    member = scenario.host(hosts_in('airflow_worker')[0])
    assert port(member, broker, 6379) == "open"
    assert port(member, web, 8080) == "open" and port(member, triggerer, ports["triggerer_logs"]) == "open"
    assert "NOAUTH" in probe(member, REDIS_PROBE, broker)
    control = scenario.host(hosts_in('airflow_scheduler')[0])
    assert port(control, db, 5432) == "open"
    assert probe(control, PG_PROBE, db).startswith("R:")
    worker_only = [h for h in hosts_in("airflow_worker") if not control_plane(h)]
    for name in worker_only:
        assert port(scenario.host(name), db, 5432) == "refused", f"{name}, a worker-only host, reaches PostgreSQL"


def test_the_ui_answers_the_controller():
    web = address(hosts_in("airflow_webserver")[0])
    with socket.create_connection((web, 8080), timeout=5):
        pass


@pytest.mark.parametrize("viewer", RUNNER.get_hosts("ui_viewers") or ["none"])
def test_the_ui_answers_an_allowed_cidr_and_nothing_else_does(viewer):
    if viewer == "none":
        pytest.skip("scenario has no host in ui_allowed_cidrs")
    h = scenario.host(viewer)
    assert port(h, address(hosts_in("airflow_webserver")[0]), 8080) == "open"
    assert port(h, address(hosts_in("airflow_metadata_db")[0]), 5432) == "refused"
    assert port(h, address(hosts_in("airflow_broker")[0]), 6379) == "refused"


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def api():
    for name in set(hosts_in("airflow_dag_processor") + hosts_in("airflow_worker")):
        h = scenario.host(name)
        place_dag(h, DAG_ID, DAG)
    web = address(hosts_in("airflow_webserver")[0])
    return Api(f"http://{web}:8080", "admin", scenario.secrets()["admin_password"])


def test_a_dag_runs_to_success_on_the_worker(api):
    wait_for("the DAG to be parsed", lambda: api.call("GET", f"/dags/{DAG_ID}"))
    api.call("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run = api.call("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})
    run_id = run["dag_run_id"]

    def finished():
        state = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    state = wait_for("the DAG run to finish", finished)
    tis = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    if state != "success":
        logs = {ti["task_id"]: api.text(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
                                        f"{max(ti['try_number'], 1)}") for ti in tis}
        pytest.fail(f"DAG run {run_id} ended {state}; task instances: {tis}; logs: {logs}")
    assert {ti["task_id"] for ti in tis} == {"where", "check"}
    workers = set(hosts_in("airflow_worker"))
    for ti in tis:
        assert ti["state"] == "success"
        assert ti["hostname"].split(".")[0] in workers, f"{ti['task_id']} ran on {ti['hostname']}"


def test_emulated_aws_answers_the_controller_and_every_host(host):
    gateway = address(host.backend.get_hostname()).rsplit(".", 1)[0] + ".1"
    endpoint = f"http://{gateway}:5000"
    with urllib.request.urlopen(endpoint, timeout=10) as resp:
        assert resp.status == 200
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {endpoint}/") == "200"


# ---------------------------------------------------------------- least privilege
HUNT_ID = "airstrip_secret_hunt"
# A task that looks for the environment's secrets as an attacker with one DAG would: every
# readable file of the usual places, every process's environment and command line, and the
# metadata database's port. It is given only the secrets' sha256 digests.
HUNT = f'''
import hashlib, os, re, socket
from datetime import datetime

from airflow.sdk import dag, get_current_context, task

ROOTS = ("/etc", "/var/lib", "/run", "/opt/airflow", "/home", "/root", "/tmp", "/var/tmp")
SKIP = ("/opt/airflow/venvs", "/opt/airflow/wheelhouse", "/var/lib/dpkg", "/var/lib/apt", "/etc/ssl")


@dag(dag_id="{HUNT_ID}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def airstrip_secret_hunt():
    @task
    def hunt():
        conf = get_current_context()["dag_run"].conf
        wanted, found, scanned = conf["digests"], set(), 0

        def scan(text, where):
            for tok in re.findall(r"[A-Za-z0-9_-]+=*", text):
                for t in (tok, tok.rstrip("=")):
                    name = wanted.get(hashlib.sha256(t.encode()).hexdigest())
                    if name:
                        found.add(name + " in " + where)

        for root in ROOTS:
            for folder, dirs, files in os.walk(root):
                if folder.startswith(SKIP):
                    dirs[:] = []
                    continue
                for f in files:
                    path = os.path.join(folder, f)
                    try:
                        if os.path.islink(path) or os.path.getsize(path) > 2000000:
                            continue
                        with open(path, "rb") as fh:
                            scan(fh.read().decode("latin1"), path)
                        scanned += 1
                    except OSError:
                        pass
        for pid in os.listdir("/proc"):
            for part in ("environ", "cmdline"):
                try:
                    with open("/proc/%s/%s" % (pid, part), "rb") as fh:
                        scan(fh.read().decode("latin1").replace("\\0", " "), "/proc/%s/%s" % (pid, part))
                except OSError:
                    pass
        scan(" ".join("%s=%s" % kv for kv in os.environ.items()), "the task's environment")
        try:
            socket.create_connection((conf["db"], 5432), timeout=5).close()
            db = "open"
        except OSError as exc:
            db = type(exc).__name__
        return {{"found": sorted(found), "scanned": scanned, "db": db}}

    hunt()


airstrip_secret_hunt()
'''
# What a worker-only host holds, which its task code may read: Celery's broker and result
# backend (the broker password). Everything else is the control plane's.
WORKER_SECRETS = {"broker_password"}


def run_to_end(api, dag_id: str, conf: dict) -> tuple[str, str]:
    wait_for(f"DAG {dag_id} to be parsed", lambda: api.call("GET", f"/dags/{dag_id}"))
    api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    run_id = api.call("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def finished():
        state = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    return run_id, wait_for(f"DAG {dag_id} to finish", finished)


def test_task_code_on_a_worker_host_finds_no_control_plane_secret_and_no_database(api):
    worker_only = [h for h in hosts_in("airflow_worker") if not control_plane(h)]
    if not worker_only:
        pytest.skip("every worker host also runs the control plane (all-in-one)")
    for name in set(hosts_in("airflow_dag_processor") + worker_only):
        place_dag(scenario.host(name), HUNT_ID, HUNT)
    import hashlib
    secrets = scenario.secrets()
    digests = {hashlib.sha256(v.encode()).hexdigest(): k for k, v in secrets.items()}
    from ansible_collections.airstrip.airflow.plugins.module_utils import _config
    digests[hashlib.sha256(_config.fernet_key(secrets["fernet_seed"]).encode()).hexdigest()] = "fernet_key"
    db = address(hosts_in("airflow_metadata_db")[0])
    run_id, state = run_to_end(api, HUNT_ID, {"digests": digests, "db": db})
    assert state == "success", api.text(f"/dags/{HUNT_ID}/dagRuns/{run_id}/taskInstances/hunt/logs/1")
    ti = api.call("GET", f"/dags/{HUNT_ID}/dagRuns/{run_id}/taskInstances/hunt")
    assert ti["hostname"].split(".")[0] in worker_only
    result = api.call("GET", f"/dags/{HUNT_ID}/dagRuns/{run_id}/taskInstances/hunt/xcomEntries/return_value"
                      "?stringify=false")["value"]
    if isinstance(result, str):
        import ast
        result = ast.literal_eval(result)
    assert result["scanned"] > 100, result
    # The hunt sees what task code can read: the broker's password (tasks still run as the
    # worker's user), which proves it is not blind.
    assert any(f.startswith("broker_password in /etc/airflow/") for f in result["found"]), result
    leaked = [f for f in result["found"] if f.split(" in ")[0] not in WORKER_SECRETS]
    assert not leaked, f"task code on {ti['hostname']} found: {leaked}"
    assert result["db"] == "ConnectionRefusedError", f"the task reached PostgreSQL's port: {result['db']}"


def test_a_token_signed_with_a_guessed_key_is_refused():
    import base64
    import hashlib
    import hmac
    import json
    import secrets as pysecrets
    import time
    import urllib.error

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": "admin", "role": "ADMIN", "iat": now, "nbf": now, "exp": now + 600,
                             "aud": "apache-airflow", "iss": []}).encode())
    signature = b64(hmac.new(pysecrets.token_bytes(48), f"{header}.{claims}".encode(), hashlib.sha512).digest())
    web = address(hosts_in("airflow_webserver")[0])
    req = urllib.request.Request(f"http://{web}:8080/api/v2/variables",
                                 headers={"Authorization": f"Bearer {header}.{claims}.{signature}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=30)
    assert caught.value.code in (401, 403)
