# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment model: every fact about an Airstrip environment, written once.

Components (inventory group, systemd unit, what they read, health key, log type), the
services beside them, ports, secrets, environment classes, the options Airstrip owns, and
`settings()`: a normalised spec plus the inventory's groups -> the variables each role
receives. Everything else (the spec checker, the config filters, the health and status
readers, the roles through the `airstrip.airflow.model` filter) reads these tables.

Pure: no Ansible imports, so plain pytest reaches it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:  # Python 3
    from urllib.parse import quote, unquote, urlsplit, urlunsplit
except ImportError:  # pragma: no cover - Python 2 sanity only
    from urllib import quote, unquote  # noqa: F401
    from urlparse import urlsplit, urlunsplit  # noqa: F401

# Ports, fixed because every host builds its URLs from them.
PORTS = {
    "metadata_db": 5432,
    "broker": 6379,
    # The log servers of the Celery workers and of the triggerer, which the api-servers read.
    "worker_logs": 8793,
    "triggerer_logs": 8794,
    "api": 8080,
    # Airflow's StatsD, to the metrics bridge on the same host (loopback only).
    "statsd": 8125,
    # The metrics bridge's Prometheus text (/metrics), for the environment's members.
    "metrics": 9102,
}

# Airflow's components, in start order. group: the inventory group that places it; command:
# what its unit runs; stop_timeout: how long systemd waits for it to stop (a Celery worker's
# warm shutdown finishes its running tasks first); sections: the configuration sections only
# it (and the others listing them) reads, so that an option restarts only its readers;
# health: its key in /api/v2/monitor/health; dags: it reads the DAG files (runs the sync agent).
# A Celery worker's stop waits up to 12 hours for its running tasks (MWAA's graceful limit);
# the broker redelivers a task only after a day (BROKER_VISIBILITY_TIMEOUT), so a task is
# never run twice while its worker drains.
COMPONENTS = {
    "scheduler": {"group": "airflow_scheduler", "command": "scheduler", "stop_timeout": 60,
                  "sections": ["scheduler", "celery", "celery_broker_transport_options"],
                  "health": "scheduler", "dags": True},
    "dag-processor": {"group": "airflow_dag_processor", "command": "dag-processor", "stop_timeout": 60,
                      "sections": ["dag_processor"], "health": "dag_processor", "dags": True},
    "triggerer": {"group": "airflow_triggerer", "command": "triggerer", "stop_timeout": 60,
                  "sections": ["triggerer", "sensors"], "health": "triggerer", "dags": True},
    # The metadatabase has no unit of its own: the api-server is what fails to reach it.
    "api-server": {"group": "airflow_webserver", "command": "api-server", "stop_timeout": 60,
                   "sections": ["api", "webserver", "fab"], "health": "metadatabase", "dags": False},
    "celery-worker": {"group": "airflow_worker", "command": "celery worker", "stop_timeout": 43200,
                      "sections": ["celery", "celery_broker_transport_options", "operators", "sensors"],
                      "health": None, "dags": True},
}
COMPONENT_NAMES = tuple(COMPONENTS)
BROKER_VISIBILITY_TIMEOUT = 86400
for _name, _c in COMPONENTS.items():
    _c["unit"] = "airflow-" + _name
    # Whether it is trusted with the metadata database and the control plane's keys: every
    # component but the Celery worker, which runs task code (Airflow 3's tasks reach the
    # database only through the execution API, and the worker neither signs nor checks tokens).
    _c["control_plane"] = _name != "celery-worker"
# What only the control plane holds: its options ("section." for a whole section), kept out of
# the files of a host that runs no control-plane component. The log server's key goes to the
# worker host's log server only (its own user and file, see LOG_SERVER_OPTIONS).
CONTROL_PLANE_OPTIONS = ("database.", "core.fernet_key", "api.secret_key", "api_auth.jwt_secret",
                         "core.simple_auth_manager_passwords_file")
# The options a worker host's task log server reads (python -m airflow.utils.serve_logs.core):
# it checks the api-server's log tokens with [api] secret_key, so it runs as a user of its own.
LOG_SERVER = "log-server"
LOG_SERVER_OPTIONS = ("api.secret_key", "logging.base_log_folder", "logging.worker_log_server_port")
# Sections every component reads although it is not listed above (api_auth: the JWT secret).
SHARED_SECTIONS = ("api_auth",)
# Single options read by fewer components than their section.
OPTION_READERS = {
    "celery.worker_concurrency": ("celery-worker",),
    "dag_processor.parsing_processes": ("dag-processor",),
}

# The services beside Airflow, each on exactly one host of its group (or none: external).
SERVICES = {
    # Airflow's database and role in it.
    "metadata_db": {"group": "airflow_metadata_db", "port": PORTS["metadata_db"], "database": "airflow",
                    "user": "airflow"},
    "broker": {"group": "airflow_broker", "port": PORTS["broker"]},
}
GROUPS = tuple(s["group"] for s in SERVICES.values()) + tuple(c["group"] for c in COMPONENTS.values())

# Secrets generated once per environment: name -> length.
SECRETS = {
    "db_password": 32,
    "broker_password": 32,
    "admin_password": 20,
    "jwt_secret": 48,
    "api_secret_key": 48,
    "fernet_seed": 48,
}

# Where each generated secret is on the hosts, to take it back when the controller's file is
# lost: (file, section, option) in a host's airflow.cfg, or the admin's entry in passwords.json.
# The Fernet key is a one-way digest of fernet_seed: what is taken back is the key itself,
# kept as fernet_key, which the roles use in place of the seed's digest.
SECRET_SOURCES = {
    "fernet_seed": ("airflow.cfg", "core", "fernet_key"),
    "api_secret_key": ("airflow.cfg", "api", "secret_key"),
    "jwt_secret": ("airflow.cfg", "api_auth", "jwt_secret"),
    "db_password": ("airflow.cfg", "database", "sql_alchemy_conn"),
    "broker_password": ("airflow.cfg", "celery", "broker_url"),
    "admin_password": ("passwords.json", None, None),
}
SECRET_REPLACED_BY = {"fernet_seed": "fernet_key"}

# Environment classes, as MWAA documents them: Celery worker concurrency, default scheduler
# and webserver count, DAG-processor parsing processes, vCPU / memory (GiB) per component,
# and the EC2 instance type of each host role on AWS.
CLASSES = {
    "mw1.micro": {"worker_concurrency": 3, "schedulers": 1, "webservers": 1, "parsing_processes": 1,
                  "vcpu": 1, "memory_gib": 3,
                  "instance_types": {"control": "t3.small", "scheduler": "t3.small", "webserver": "t3.small",
                                     "worker": "t3.small"}},
    "mw1.small": {"worker_concurrency": 5, "schedulers": 2, "webservers": 2, "parsing_processes": 1,
                  "vcpu": 1, "memory_gib": 2,
                  "instance_types": {"control": "t3.medium", "scheduler": "t3.medium", "webserver": "t3.medium",
                                     "worker": "t3.medium"}},
    "mw1.medium": {"worker_concurrency": 10, "schedulers": 2, "webservers": 2, "parsing_processes": 3,
                   "vcpu": 2, "memory_gib": 4,
                   "instance_types": {"control": "t3.large", "scheduler": "t3.large", "webserver": "t3.medium",
                                      "worker": "t3.large"}},
    "mw1.large": {"worker_concurrency": 20, "schedulers": 2, "webservers": 2, "parsing_processes": 7,
                  "vcpu": 4, "memory_gib": 8,
                  "instance_types": {"control": "t3.xlarge", "scheduler": "t3.xlarge", "webserver": "t3.large",
                                     "worker": "t3.xlarge"}},
    "mw1.xlarge": {"worker_concurrency": 40, "schedulers": 2, "webservers": 2, "parsing_processes": 15,
                   "vcpu": 8, "memory_gib": 24,
                   "instance_types": {"control": "m5.2xlarge", "scheduler": "m5.2xlarge", "webserver": "t3.large",
                                      "worker": "m5.2xlarge"}},
    "mw1.2xlarge": {"worker_concurrency": 80, "schedulers": 2, "webservers": 2, "parsing_processes": 31,
                    "vcpu": 16, "memory_gib": 48,
                    "instance_types": {"control": "m5.4xlarge", "scheduler": "m5.4xlarge", "webserver": "t3.xlarge",
                                       "worker": "m5.4xlarge"}},
}
DEFAULT_CLASS = "mw1.small"
# EC2 host roles of an environment on AWS and the groups each one's hosts join.
HOST_ROLES = {
    "control": ["airflow_metadata_db", "airflow_broker", "airflow_dag_processor", "airflow_triggerer"],
    "scheduler": ["airflow_scheduler"],
    "webserver": ["airflow_webserver"],
    "worker": ["airflow_worker"],
}

# MWAA's log types: the spec's key, MWAA's key, and the (component, option) its level sets.
# MWAA puts the triggerer's logs with the scheduler's.
# group: the suffix of its CloudWatch log group (airflow-<env>-<group>); units: the components
# whose journal the CloudWatch agent ships there (task logs go through Airflow's remote logging).
LOG_TYPES = {
    "dag_processing": {"mwaa": "DagProcessingLogs", "group": "DAGProcessing", "units": ["dag-processor"],
                       "options": [("dag-processor", "logging.logging_level")]},
    "scheduler": {"mwaa": "SchedulerLogs", "group": "Scheduler", "units": ["scheduler", "triggerer"],
                  "options": [("scheduler", "logging.logging_level"), ("triggerer", "logging.logging_level")]},
    "task": {"mwaa": "TaskLogs", "group": "Task", "units": [],
             "options": [("celery-worker", "logging.logging_level")]},
    "webserver": {"mwaa": "WebserverLogs", "group": "WebServer", "units": ["api-server"],
                  "options": [("api-server", "logging.logging_level")]},
    "worker": {"mwaa": "WorkerLogs", "group": "Worker", "units": ["celery-worker"],
               "options": [("celery-worker", "logging.celery_logging_level")]},
}
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

# Options Airstrip sets itself, and the role or inventory variable that sets each instead.
OWNED_OPTIONS = {
    "core.executor": "the collection (CeleryExecutor, always)",
    "core.fernet_key": "the generated secrets (airstrip.secrets_backend)",
    "core.dags_folder": "airflow_dags_folder",
    "core.execution_api_server_url": "the airflow_webserver inventory group",
    "database.sql_alchemy_conn": "airstrip_database_url or the airflow_metadata_db group",
    "celery.broker_url": "the airflow_broker inventory group",
    "celery.result_backend": "the airflow_broker inventory group (Redis database 1: the workers hold no database URL)",
    "celery.worker_concurrency": "airflow_worker_concurrency",
    "logging.logging_level": "airflow_log_levels",
    "logging.celery_logging_level": "airflow_log_levels (worker)",
    "logging.worker_log_server_port": "the collection's port table (the host firewall opens it to the environment only)",
    "logging.trigger_log_server_port": "the collection's port table (the host firewall opens it to the environment only)",
    "api.port": "airflow_api_port",
    "api.secret_key": "the generated secrets (airstrip.secrets_backend)",
    "api_auth.jwt_secret": "the generated secrets (airstrip.secrets_backend)",
}
# The same options in a spec, and the spec field that sets each one instead.
SPEC_OWNED_OPTIONS = {
    "core.executor": "nothing: Airstrip always runs the CeleryExecutor",
    "core.fernet_key": "nothing: Airstrip generates it (airstrip.secrets_backend says where it is kept)",
    "core.dags_folder": "source.dag_s3_path",
    "core.execution_api_server_url": "nothing: Airstrip points it at the environment's api-server",
    "database.sql_alchemy_conn": "airstrip.database",
    "celery.broker_url": "airstrip.broker",
    "celery.result_backend": "nothing: Airstrip keeps Celery's results in the broker's Redis, away from the metadata database",
    "logging.logging_level": "logging.<log type>.level",
    "logging.celery_logging_level": "logging.worker.level",
    "logging.worker_log_server_port": "nothing: Airstrip fixes the log servers' ports, which its host firewall closes to outsiders",
    "logging.trigger_log_server_port": "nothing: Airstrip fixes the log servers' ports, which its host firewall closes to outsiders",
    "api.port": "nothing: Airstrip serves the UI and API on its own port",
    "api.secret_key": "nothing: Airstrip generates it",
    "api_auth.jwt_secret": "nothing: Airstrip generates it",
}


def components_reading(option_key):
    """The components that read a 'section.option' key."""
    if option_key in OPTION_READERS:
        return OPTION_READERS[option_key]
    section = option_key.split(".", 1)[0]
    if section in SHARED_SECTIONS:
        return COMPONENT_NAMES
    readers = tuple(name for name, c in COMPONENTS.items() if section in c["sections"])
    return readers or COMPONENT_NAMES


def log_level_options(levels, component):
    """The logging options of one component from {log type: level} (MWAA's LoggingConfiguration)."""
    out = {}
    for log_type, level in sorted((levels or {}).items()):
        if log_type not in LOG_TYPES:
            raise ValueError("unknown log type %r: use one of %s" % (log_type, ", ".join(LOG_TYPES)))
        if level not in LOG_LEVELS:
            raise ValueError("log level of %s must be one of %s, got %r" % (log_type, ", ".join(LOG_LEVELS), level))
        for comp, option in LOG_TYPES[log_type]["options"]:
            if comp == component:
                out[option] = level
    return out


def component_options(options, component, worker_concurrency=None, log_levels=None):
    """The {"section.option": value} one component's configuration file holds: the options it
    reads, and the ones Airstrip sets for it alone (worker concurrency, its log levels).
    component None: every option, for the airflow CLI's airflow.cfg."""
    owned = {}
    if worker_concurrency not in (None, ""):
        owned["celery.worker_concurrency"] = str(worker_concurrency)
    merged = dict(options or {}, **owned)
    if component is None:
        return merged
    if component not in COMPONENTS:
        raise ValueError("unknown component %r: use one of %s" % (component, ", ".join(COMPONENT_NAMES)))
    out = dict((k, v) for k, v in merged.items() if component in components_reading(k))
    out.update(log_level_options(log_levels, component))
    return out


def is_control_plane_option(option_key):
    """Whether a 'section.option' key is one only the control plane holds."""
    return any(option_key.startswith(o) if o.endswith(".") else option_key == o for o in CONTROL_PLANE_OPTIONS)


def host_config(sections, components):
    """A configuration ({section: {option: value}}) as a host running these components may
    hold it: without the control plane's options unless one of them is a control-plane
    component (a worker host gets no database URL, Fernet key, JWT or API secret)."""
    if list(components) == [LOG_SERVER]:
        out = {}
        for key in LOG_SERVER_OPTIONS:
            section, option = key.split(".", 1)
            if option in (sections or {}).get(section, {}):
                out.setdefault(section, {})[option] = sections[section][option]
        return out
    for name in components:
        if name not in COMPONENTS:
            raise ValueError("unknown component %r: use one of %s" % (name, ", ".join(COMPONENT_NAMES + (LOG_SERVER,))))
    if any(COMPONENTS[name]["control_plane"] for name in components):
        return sections
    out = {}
    for section, options in (sections or {}).items():
        kept = dict((k, v) for k, v in options.items() if not is_control_plane_option(section + "." + k))
        if kept:
            out[section] = kept
    return out


def database_url(url, password=None):
    """A SQLAlchemy URL of an external database with the password put in (quoted)."""
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return url
    user, host = parts.netloc.rsplit("@", 1) if "@" in parts.netloc else ("", parts.netloc)
    netloc = "%s:%s@%s" % (user, quote(password, safe=""), host)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def recovered_secrets(airflow_cfg, passwords_json, admin_username, external_database=False):
    """The generated secrets an environment's host holds, read from its airflow.cfg and
    passwords.json (their texts; empty when absent).

    Returns {"secrets": {name: value}, "missing": [names not found]}: the Fernet key as
    fernet_key (see SECRET_REPLACED_BY); db_password is not looked for with an external
    database (the user's password is there, not ours). Nothing found: both empty, a host
    that holds no environment yet."""
    import configparser
    import json

    found, missing = {}, []
    if not (airflow_cfg or "").strip() and not (passwords_json or "").strip():
        return {"secrets": found, "missing": missing}
    cfg = configparser.ConfigParser(strict=False)
    try:
        cfg.read_string(airflow_cfg or "")
    except configparser.Error:
        cfg = configparser.ConfigParser()
    try:
        passwords = json.loads(passwords_json) if (passwords_json or "").strip() else {}
    except ValueError:
        passwords = {}
    for name, (source, section, option) in sorted(SECRET_SOURCES.items()):
        if name == "db_password" and external_database:
            continue
        value = None
        if source == "passwords.json":
            value = passwords.get(admin_username) if isinstance(passwords, dict) else None
        else:
            try:
                value = cfg.get(section, option)
            except (configparser.Error, ValueError):
                value = None
            if value and option in ("sql_alchemy_conn", "broker_url"):
                password = urlsplit(value).password
                value = unquote(password) if password else None
        if value:
            found[SECRET_REPLACED_BY.get(name, name)] = value
        else:
            missing.append(name)
    return {"secrets": found, "missing": missing}


def host_errors(groups, external_database=False, env=None, host_queues=None):
    """Problems of the inventory's placement, one message each with the fix.

    groups: {group: [hosts]}; env: the normalised spec, to check the host counts it asks for;
    host_queues: {worker host: its airflow_worker_queues} for the hosts that set it."""
    groups = groups or {}
    errors = worker_queue_errors(groups, env, host_queues or {}) if env is not None else []

    def count(group):
        return len(groups.get(group) or [])

    missing = [c["group"] for c in COMPONENTS.values() if not count(c["group"])]
    if missing:
        errors.append("No host in inventory group(s) %s: every Airflow component needs at least one host. "
                      "Add a host to each (one host may be in every group)." % ", ".join(missing))
    db = SERVICES["metadata_db"]["group"]
    if external_database and count(db):
        errors.append("inventory group %s holds %d host(s), but the metadata database is external "
                      "(airstrip.database / airstrip_database_url): leave the group empty, nothing is installed for it"
                      % (db, count(db)))
    elif not external_database and count(db) != 1:
        errors.append("Inventory group %s must hold exactly one host (found %d) unless an external database is "
                      "given (airstrip.database {type: external, url} or airstrip_database_url)" % (db, count(db)))
    broker = SERVICES["broker"]["group"]
    if count(broker) != 1:
        errors.append("Inventory group %s must hold exactly one host (found %d)" % (broker, count(broker)))
    if env is not None:
        workers = count(COMPONENTS["celery-worker"]["group"])
        if env["max_workers"] > workers:
            errors.append("max_workers: %d needs as many hosts in inventory group airflow_worker, found %d: "
                          "add worker hosts or lower max_workers" % (env["max_workers"], workers))
        schedulers = count(COMPONENTS["scheduler"]["group"])
        if env["schedulers"] != schedulers:
            errors.append("schedulers: %d but inventory group airflow_scheduler holds %d host(s): make them match"
                          % (env["schedulers"], schedulers))
        web = count(COMPONENTS["api-server"]["group"])
        if not env["min_webservers"] <= web <= env["max_webservers"]:
            errors.append("min_webservers/max_webservers: %d-%d but inventory group airflow_webserver holds %d host(s)"
                          % (env["min_webservers"], env["max_webservers"], web))
    return errors


def worker_queue_errors(groups, env, host_queues):
    """A worker host serves the queues its airflow_worker_queues names (all of the spec's
    airstrip.worker_queues without it): only queues the spec lists, and every one by some host."""
    listed = env["airstrip"].get("worker_queues") or ["default"]
    workers = groups.get(COMPONENTS["celery-worker"]["group"]) or []
    errors, served = [], set()
    for host in workers:
        queues = host_queues.get(host, listed)
        if not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues):
            errors.append("host %s: airflow_worker_queues must be a non-empty list of queue names, got %r"
                          % (host, queues))
            continue
        unknown = [q for q in queues if q not in listed]
        if unknown:
            errors.append("host %s: airflow_worker_queues names %s, which airstrip.worker_queues (%s) does not list: "
                          "add %s to the spec or remove %s from the host"
                          % (host, ", ".join(unknown), ", ".join(listed), "them" if len(unknown) > 1 else "it",
                             "them" if len(unknown) > 1 else "it"))
        served.update(queues)
    for host in sorted(set(host_queues) - set(workers)):
        errors.append("host %s: airflow_worker_queues is set, but the host is not in inventory group %s: remove it"
                      % (host, COMPONENTS["celery-worker"]["group"]))
    unserved = [q for q in listed if q not in served]
    if workers and unserved:
        errors.append("airstrip.worker_queues: no worker host serves %s: name %s in some airflow_worker host's "
                      "airflow_worker_queues (or leave that variable out: a host then serves every queue)"
                      % (", ".join(unserved), "them" if len(unserved) > 1 else "it"))
    return errors


def settings(env, variables=None):
    """The role variables a normalised spec decides: {variable: value}.

    variables: the controller's values of the variables an inventory may set instead of the
    spec (airstrip_aws_region, airstrip_aws_endpoint_url); they win."""
    variables = dict((k, v) for k, v in (variables or {}).items() if k in INVENTORY_WINS)
    source = env.get("source") or {}
    airstrip = env["airstrip"]
    database = airstrip["database"]
    out = {
        "airstrip_environment": env,
        "airstrip_env_name": env["name"],
        "airstrip_aws_region": variables.get("airstrip_aws_region") or airstrip.get("region")
        or source.get("region") or "us-east-1",
        "airstrip_aws_endpoint_url": variables.get("airstrip_aws_endpoint_url") or airstrip.get("endpoint_url") or "",
        "airstrip_secrets_backend": airstrip["secrets_backend"],
        "airstrip_database_url": database["url"] if database["type"] == "external" else "",
        "airflow_version": env["airflow_version"],
        "airflow_config_options": dict(env["airflow_configuration_options"],
                                       **{"dag_processor.parsing_processes": str(env["parsing_processes"])}),
        "airflow_worker_concurrency": env["worker_concurrency"],
        "airflow_workers_active": env["min_workers"],
        # The queues the environment's workers serve; a worker host serves all of them unless
        # the inventory gives it airflow_worker_queues (a part of them).
        "airstrip_worker_queues": env["airstrip"]["worker_queues"],
        "airflow_log_levels": dict((t, c["level"]) for t, c in sorted(env["logging"].items())),
        "airflow_log_enabled": dict((t, c["enabled"]) for t, c in sorted(env["logging"].items())),
        "airflow_s3_source": source,
        "dag_sync_bucket": source.get("bucket") or "",
        "dag_sync_prefix": source.get("dag_s3_path") or "dags",
        "dag_sync_endpoint_url": source.get("endpoint_url") or "",
        "dag_sync_region": source.get("region") or "",
        # Who may reach the UI besides the environment's hosts and the controller: the
        # spec's CIDRs, or anyone for PUBLIC_ONLY without them.
        "firewall_ui_allowed_cidrs": list((env.get("network") or {}).get("ui_allowed_cidrs") or
                                          (["0.0.0.0/0"] if env["webserver_access_mode"] == "PUBLIC_ONLY" else [])),
    }
    out.update(observability(env))
    scaling = env["airstrip"].get("scaling") or {"enabled": False}
    out.update({
        # The scaler starts and stops the workers between min_workers and max_workers; the
        # playbooks then set only the first deploy's state (min_workers running).
        "airflow_worker_scaling": scaling["enabled"],
        "scaling_target_utilization": scaling.get("target_utilization", 1.0),
    })
    if out["metrics_enabled"]:
        # The bridge reads these; Airflow always emits everything to it, as MWAA's does.
        out["airflow_config_options"] = dict((k, v) for k, v in out["airflow_config_options"].items()
                                             if k not in BRIDGE_OPTIONS)
    return out


def observability(env):
    """Where the environment's logs and metrics go (airstrip.cloudwatch, airstrip.prometheus):
    the log groups to make, whether the CloudWatch agent runs, the metrics bridge's settings."""
    airstrip = env["airstrip"]
    cloudwatch = dict(airstrip.get("cloudwatch") or {"enabled": False})
    if cloudwatch["enabled"] and not cloudwatch.get("metrics_namespace"):
        cloudwatch["metrics_namespace"] = "Airstrip/" + env["name"]
    enabled = cloudwatch["enabled"]
    bridge = bool(enabled or airstrip.get("prometheus"))
    options = env["airflow_configuration_options"]
    groups = dict((t, log_group_name(env["name"], t)) for t, c in sorted(env["logging"].items())
                  if enabled and c["enabled"])
    publish = enabled and str(options.get("metrics.statsd_on", "True")).lower() == "true"
    out = {
        "airstrip_cloudwatch": cloudwatch,
        "airstrip_log_groups": groups,
        "airflow_remote_task_logs": "task" in groups,
        "cloudwatch_agent_enabled": bool(enabled and cloudwatch.get("agent")),
        "metrics_enabled": bridge,
        "metrics_namespace": cloudwatch["metrics_namespace"] if publish else "",
        "metrics_prometheus": bool(airstrip.get("prometheus")),
        "metrics_allow_list": options.get("metrics.metrics_allow_list", "") if bridge else "",
        "metrics_block_list": options.get("metrics.metrics_block_list", "") if bridge else "",
    }
    return out


# Airflow's [metrics] options the metrics bridge applies, not Airflow (MWAA's sidecar does the
# same): Airflow always emits everything, the bridge filters what it publishes.
BRIDGE_OPTIONS = ("metrics.statsd_on", "metrics.metrics_allow_list", "metrics.metrics_block_list")


# Settings an inventory may set instead of the spec (they win, see settings()).
INVENTORY_WINS = ("airstrip_aws_region", "airstrip_aws_endpoint_url")


def setting_clashes(values, hostvars):
    """The settings a host's inventory variables also set, to another value."""
    out = []
    for key in sorted(values):
        if key in INVENTORY_WINS or key == "airstrip_environment" or key not in hostvars:
            continue
        theirs = hostvars[key]
        if theirs != values[key] and str(theirs) != str(values[key]):
            out.append(key)
    return out


# The spec's weekly_maintenance_window_start opens a window of this many minutes (UTC) in
# which update may restart components; outside it update refuses unless told to go on.
MAINTENANCE_WINDOW_MINUTES = 120
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def maintenance_window(start, now):
    """(open, description) of the window starting at 'DAY:HH:MM' (UTC) for a datetime now (UTC)."""
    day, hour, minute = start.split(":")
    begin = DAYS.index(day) * 1440 + int(hour) * 60 + int(minute)
    current = now.weekday() * 1440 + now.hour * 60 + now.minute
    end = begin + MAINTENANCE_WINDOW_MINUTES
    week = 7 * 1440
    is_open = begin <= current < end or begin <= current + week < end
    end_day, end_min = divmod(end % week, 1440)
    text = "%s %s:%s-%s %02d:%02d UTC" % (day, hour, minute, DAYS[end_day], end_min // 60, end_min % 60)
    return is_open, text


def window_errors(env, operation, now, ignore=False):
    """An update outside the spec's maintenance window is refused, with the way on."""
    start = env.get("weekly_maintenance_window_start")
    if not start or ignore or (operation or "").upper() != "UPDATE":
        return []
    is_open, text = maintenance_window(start, now)
    if is_open:
        return []
    return ["weekly_maintenance_window_start: it is %s %s UTC, outside the maintenance window %s in which update may "
            "restart the environment's components: run the update in the window, or go on now with "
            "-e airstrip_ignore_maintenance_window=true" % (DAYS[now.weekday()], now.strftime("%H:%M"), text)]


def log_group_name(env_name, log_type):
    """The CloudWatch log group of one log type, as MWAA names it: airflow-<env>-<Group>."""
    return "airflow-%s-%s" % (env_name, LOG_TYPES[log_type]["group"])


def component_log_type(component):
    """The log type whose group receives a component's journal (None: none does)."""
    for name, conf in LOG_TYPES.items():
        if component in conf["units"]:
            return name
    return None


def unit_journal(enabled, component):
    """Whether a component's unit keeps its output in the journal, from {log type: enabled}:
    a component whose every log type is disabled (MWAA's Enabled: false) keeps none."""
    types = [t for t, c in LOG_TYPES.items() if any(o[0] == component for o in c["options"])]
    if not enabled or not types:
        return True
    return any(enabled.get(t, True) for t in types)


def lookup(name):
    """A table of the model by name, for YAML (the airstrip.airflow.model filter)."""
    tables = {
        "components": COMPONENTS,
        "component_groups": dict((n, c["group"]) for n, c in COMPONENTS.items()),
        "services": SERVICES,
        "groups": list(GROUPS),
        # The groups whose hosts run a control-plane component: the metadata database's clients.
        "control_plane_groups": [c["group"] for c in COMPONENTS.values() if c["control_plane"]],
        "ports": PORTS,
        "secrets": SECRETS,
        "classes": CLASSES,
        "host_roles": HOST_ROLES,
        "log_types": LOG_TYPES,
        "owned_options": OWNED_OPTIONS,
        "broker_visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
    }
    if name not in tables:
        raise KeyError("the model has no table %r: use one of %s" % (name, ", ".join(sorted(tables))))
    return tables[name]
