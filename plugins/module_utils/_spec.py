# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment spec: validation and normalisation, with MWAA's meaning.

Accepts Airstrip's snake_case YAML, and, unchanged, MWAA's CamelCase shapes: a
CreateEnvironment / UpdateEnvironment request body, or the output of
`aws mwaa get-environment` (with or without its "Environment" wrapper). Returns the
normalised environment, or every problem found, one message each, naming the field by its
path in the document. Pure: no Ansible imports, so plain pytest reaches it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import ipaddress
import re

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 sanity only
    from urlparse import urlsplit

from ansible_collections.airstrip.airflow.plugins.module_utils import _model
from ansible_collections.airstrip.airflow.plugins.module_utils._config import config_option_errors

NAME = re.compile(r"^[A-Za-z][0-9A-Za-z_-]{0,79}$")
VERSION = re.compile(r"^3\.\d+\.\d+$")
WINDOW = re.compile(r"^(MON|TUE|WED|THU|FRI|SAT|SUN):([01]\d|2[0-3]):(00|30)$")
BUCKET_ARN = re.compile(r"^arn:aws[a-z-]*:s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
REGION_HINT = "must be an AWS region such as eu-west-1"
QUEUE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
# Airflow's [operators] default_queue: where a task that names no queue goes.
DEFAULT_QUEUE = "default"
ACCESS_MODES = ("PUBLIC_ONLY", "PRIVATE_ONLY")
ENDPOINT_MANAGEMENT = ("CUSTOMER", "SERVICE")
TARGETS = ("aws", "onprem")
SECRETS_BACKENDS = ("none", "aws_secrets_manager")
MAX_TAGS = 50

CLASSES = _model.CLASSES
LEVELS = _model.LOG_LEVELS
# snake_case log type: MWAA key
LOG_COMPONENTS = dict((t, c["mwaa"]) for t, c in _model.LOG_TYPES.items())

# MWAA CamelCase -> our snake_case, for the top level.
MWAA_FIELDS = {
    "Name": "name",
    "AirflowVersion": "airflow_version",
    "EnvironmentClass": "environment_class",
    "MinWorkers": "min_workers",
    "MaxWorkers": "max_workers",
    "Schedulers": "schedulers",
    "MinWebservers": "min_webservers",
    "MaxWebservers": "max_webservers",
    "AirflowConfigurationOptions": "airflow_configuration_options",
    "WebserverAccessMode": "webserver_access_mode",
    "KmsKey": "kms_key",
    "WeeklyMaintenanceWindowStart": "weekly_maintenance_window_start",
    "EndpointManagement": "endpoint_management",
    "Tags": "tags",
    "ExecutionRoleArn": "execution_role_arn",
}
MWAA_SOURCE = {
    "SourceBucketArn": "bucket_arn",
    "DagS3Path": "dag_s3_path",
    "PluginsS3Path": "plugins_s3_path",
    "PluginsS3ObjectVersion": "plugins_s3_object_version",
    "RequirementsS3Path": "requirements_s3_path",
    "RequirementsS3ObjectVersion": "requirements_s3_object_version",
    "StartupScriptS3Path": "startup_script_s3_path",
    "StartupScriptS3ObjectVersion": "startup_script_s3_object_version",
}
# Fields of get-environment's output that describe MWAA's state, not the environment.
MWAA_IGNORED = frozenset([
    "Arn", "Status", "CreatedAt", "ServiceRoleArn", "LastUpdate", "WebserverUrl", "WebserverVpcEndpointService",
    "DatabaseVpcEndpointService", "CeleryExecutorQueue", "AirflowVersionHistory", "ClientToken",
    "MaxWebserversDetail", "EnvironmentStatus",
])

TOP_FIELDS = frozenset(["name", "airflow_version", "environment_class", "min_workers", "max_workers", "schedulers",
                        "min_webservers", "max_webservers", "airflow_configuration_options", "source", "logging",
                        "webserver_access_mode", "kms_key", "network", "weekly_maintenance_window_start",
                        "endpoint_management", "tags", "execution_role_arn", "airstrip",
                        "worker_concurrency", "parsing_processes"])
# Options the class sets by default; an explicit option (or field) wins, and moves into its field.
CLASS_OPTIONS = {"celery.worker_concurrency": "worker_concurrency",
                 "dag_processor.parsing_processes": "parsing_processes"}
SOURCE_FIELDS = frozenset(["bucket", "bucket_arn", "dag_s3_path", "plugins_s3_path", "plugins_s3_object_version",
                           "requirements_s3_path", "requirements_s3_object_version", "startup_script_s3_path",
                           "startup_script_s3_object_version", "endpoint_url", "region"])
NETWORK_FIELDS = frozenset(["subnet_ids", "security_group_ids", "vpc_id", "vpc_cidr", "subnet_cidrs",
                            "availability_zones", "ui_allowed_cidrs"])
AIRSTRIP_FIELDS = frozenset(["target", "hosts", "broker", "database", "secrets_backend", "worker_queues", "region",
                             "endpoint_url", "ec2", "cloudwatch", "prometheus", "scaling"])
SCALING_FIELDS = frozenset(["enabled", "target_utilization"])
CLOUDWATCH_FIELDS = frozenset(["enabled", "agent", "log_retention_days", "metrics_namespace", "alarms"])
# CloudWatch Logs' allowed retention periods (days).
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                  3288, 3653)
NAMESPACE = re.compile(r"^[A-Za-z0-9./#:_-]{1,255}$")
EC2_FIELDS = frozenset(["ami_id", "instance_types", "key_name"])
EC2_HOST_ROLES = ("control", "scheduler", "webserver", "worker")
DEFAULT_VERSION = "3.3.2"
SPEC_OWNED_OPTIONS = _model.SPEC_OWNED_OPTIONS
# MWAA turns Secrets Manager on with this option; here it means airstrip.secrets_backend: aws_secrets_manager.
SM_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"


class SpecError(Exception):
    """Raised with every problem of a spec at once."""

    def __init__(self, errors):
        super(SpecError, self).__init__("; ".join(errors))
        self.errors = errors


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def from_mwaa(doc):
    """Turn an MWAA CamelCase document into snake_case; unknown CamelCase keys are kept as is
    so that they are reported. Returns (snake_doc, paths) where paths maps our field names to
    the name the user wrote, for messages."""
    if "Environment" in doc and isinstance(doc["Environment"], dict) and len(doc) == 1:
        doc = doc["Environment"]
        prefix = "Environment."
    else:
        prefix = ""
    out, paths = {}, {}
    source = {}
    for key, value in doc.items():
        if key in MWAA_IGNORED:
            continue
        if key in MWAA_FIELDS:
            out[MWAA_FIELDS[key]] = value
            paths[MWAA_FIELDS[key]] = prefix + key
        elif key in MWAA_SOURCE:
            source[MWAA_SOURCE[key]] = value
            paths["source." + MWAA_SOURCE[key]] = prefix + key
        elif key == "LoggingConfiguration":
            paths["logging"] = prefix + key
            if isinstance(value, dict):
                logging = {}
                back = dict((v, k) for k, v in LOG_COMPONENTS.items())
                for comp, conf in value.items():
                    name = back.get(comp, comp)
                    paths["logging." + name] = "%s%s.%s" % (prefix, key, comp)
                    if isinstance(conf, dict):
                        entry = {}
                        for ck, cv in conf.items():
                            if ck == "Enabled":
                                entry["enabled"] = cv
                            elif ck == "LogLevel":
                                entry["level"] = cv
                            elif ck == "CloudWatchLogGroupArn":
                                continue
                            else:
                                entry[ck] = cv
                            paths["logging.%s.%s" % (name, {"Enabled": "enabled", "LogLevel": "level"}.get(ck, ck))] = \
                                "%s%s.%s.%s" % (prefix, key, comp, ck)
                        logging[name] = entry
                    else:
                        logging[name] = conf
                out["logging"] = logging
            else:
                out["logging"] = value
        elif key == "NetworkConfiguration":
            paths["network"] = prefix + key
            if isinstance(value, dict):
                net = {}
                for nk, nv in value.items():
                    snake = {"SubnetIds": "subnet_ids", "SecurityGroupIds": "security_group_ids"}.get(nk, nk)
                    net[snake] = nv
                    paths["network." + snake] = "%s%s.%s" % (prefix, key, nk)
                out["network"] = net
            else:
                out["network"] = value
        else:
            out[key] = value
            paths[key] = prefix + key
    if source:
        out["source"] = source
    return out, paths


def looks_like_mwaa(doc):
    if "Environment" in doc and len(doc) == 1:
        return True
    return any(k in doc for k in ("Name", "AirflowVersion", "EnvironmentClass", "SourceBucketArn", "DagS3Path"))


class _Checker(object):
    def __init__(self, paths):
        self.paths = paths
        self.errors = []

    def where(self, field):
        return self.paths.get(field, field)

    def error(self, field, message):
        self.errors.append("%s: %s" % (self.where(field), message))

    def unknown(self, doc, allowed, prefix=""):
        for key in sorted(doc, key=str):
            if key not in allowed:
                self.error(prefix + str(key), "unknown field; valid fields here: %s" % ", ".join(sorted(allowed)))

    def integer(self, doc, field, low, high, default=None):
        value = doc.get(field, default)
        if value is None:
            return None
        if not _is_int(value) or not low <= value <= high:
            self.error(field, "must be a whole number from %d to %d, got %r" % (low, high, value))
            return None
        return value

    def choice(self, doc, field, choices, default=None, prefix=""):
        value = doc.get(field, default)
        if value is None:
            return None
        if value not in choices:
            self.error(prefix + field, "must be one of %s, got %r" % (", ".join(choices), value))
            return None
        return value

    def string(self, doc, field, pattern=None, hint="", default=None, prefix=""):
        value = doc.get(field, default)
        if value is None:
            return None
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            self.error(prefix + field, "%s, got %r" % (hint or "must be a string", value))
            return None
        return value

    def boolean(self, doc, field, default=None, prefix=""):
        value = doc.get(field, default)
        if not isinstance(value, bool):
            self.error(prefix + field, "must be true or false, got %r" % (value,))
            return None
        return value


def _check_logging(c, logging):
    out = {}
    if logging is None:
        logging = {}
    if not isinstance(logging, dict):
        c.error("logging", "must be a mapping of %s to {enabled, level}" % ", ".join(LOG_COMPONENTS))
        return out
    c.unknown(logging, LOG_COMPONENTS, "logging.")
    for comp in LOG_COMPONENTS:
        conf = logging.get(comp, {})
        prefix = "logging.%s." % comp
        if conf is None:
            conf = {}
        if not isinstance(conf, dict):
            c.error("logging." + comp, "must be a mapping with enabled and level")
            continue
        c.unknown(conf, ("enabled", "level"), prefix)
        enabled = c.boolean(conf, "enabled", default=True, prefix=prefix)
        level = c.choice(conf, "level", LEVELS, default="INFO", prefix=prefix)
        if comp in ("task", "worker") and enabled is False:
            c.error(prefix + "enabled", "false is not supported: the Celery worker's output holds the tasks' own "
                    "and task logs are always kept, the UI reads them (set a higher level instead, such as ERROR)")
        out[comp] = {"enabled": enabled, "level": level}
    return out


def _check_source(c, source):
    if source is None:
        return None
    if not isinstance(source, dict):
        c.error("source", "must be a mapping with bucket (or bucket_arn) and dag_s3_path")
        return None
    c.unknown(source, SOURCE_FIELDS, "source.")
    out = {}
    bucket = None
    if "bucket_arn" in source:
        arn = source["bucket_arn"]
        m = BUCKET_ARN.match(arn) if isinstance(arn, str) else None
        if not m:
            c.error("source.bucket_arn", "must be an S3 bucket ARN such as arn:aws:s3:::my-bucket, got %r" % (arn,))
        else:
            bucket = m.group(1)
    if "bucket" in source:
        b = c.string(source, "bucket", BUCKET, "must be an S3 bucket name (3-63 lower-case letters, digits, '.', '-')",
                     prefix="source.")
        if b and bucket and b != bucket:
            c.error("source.bucket", "names %r but bucket_arn names %r: give one of them" % (b, bucket))
        bucket = bucket or b
    if bucket is None and "bucket" not in source and "bucket_arn" not in source:
        c.error("source.bucket", "is required when source is given (or give bucket_arn)")
    out["bucket"] = bucket
    dag_path = source.get("dag_s3_path")
    if dag_path is None:
        c.error("source.dag_s3_path", "is required when source is given, such as 'dags'")
    elif not isinstance(dag_path, str) or not dag_path.strip("/") or dag_path.startswith("/"):
        c.error("source.dag_s3_path", "must be a relative prefix in the bucket such as 'dags', got %r" % (dag_path,))
    else:
        out["dag_s3_path"] = dag_path.strip("/")
    for kind in ("plugins", "requirements", "startup_script"):
        path_key, ver_key = "%s_s3_path" % kind, "%s_s3_object_version" % kind
        path = source.get(path_key)
        version = source.get(ver_key)
        if path is not None and (not isinstance(path, str) or not path or path.startswith("/")):
            c.error("source." + path_key, "must be an object key in the bucket such as 'plugins.zip', got %r" % (path,))
            path = None
        if version is not None:
            if not isinstance(version, str) or not version:
                c.error("source." + ver_key, "must be an S3 object version id (a string), got %r" % (version,))
                version = None
            elif path is None and path_key not in source:
                c.error("source." + ver_key, "is given without %s: give the object's key too" % path_key)
        out[path_key] = path
        out[ver_key] = version
    if out["plugins_s3_path"] and not out["plugins_s3_path"].endswith(".zip"):
        c.error("source.plugins_s3_path", "must name a .zip file, got %r" % (out["plugins_s3_path"],))
    out["endpoint_url"] = c.string(source, "endpoint_url", re.compile(r"^https?://[^\s/]+"),
                                   "must be an http(s) URL", prefix="source.")
    out["region"] = c.string(source, "region", REGION, REGION_HINT, prefix="source.")
    return out


def _check_cidrs(c, field, values, prefix="network."):
    """Parse a list of CIDRs; returns one entry per value, None where it is not a CIDR."""
    if not isinstance(values, list):
        c.error(prefix + field, "must be a list of CIDRs such as 10.0.1.0/24")
        return []
    nets = []
    for i, value in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(value, strict=True))
        except (TypeError, ValueError):
            nets.append(None)
            c.error("%s%s[%d]" % (prefix, field, i), "must be a CIDR such as 10.0.1.0/24, got %r" % (value,))
    return nets


def _check_network(c, network):
    if network is None:
        return None
    if not isinstance(network, dict):
        c.error("network", "must be a mapping (subnet_ids and security_group_ids, or vpc_cidr and subnet_cidrs)")
        return None
    c.unknown(network, NETWORK_FIELDS, "network.")
    out = {}
    for field, pattern, hint in (("subnet_ids", re.compile(r"^subnet-[0-9a-f]{8,17}$"), "subnet-0123abcd"),
                                 ("security_group_ids", re.compile(r"^sg-[0-9a-f]{8,17}$"), "sg-0123abcd")):
        values = network.get(field)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            c.error("network." + field, "must be a non-empty list of ids such as %s" % hint)
            continue
        for i, v in enumerate(values):
            if not isinstance(v, str) or not pattern.match(v):
                c.error("network.%s[%d]" % (field, i), "must be an id such as %s, got %r" % (hint, v))
        out[field] = values
    if "subnet_ids" in out and len(out["subnet_ids"]) < 2:
        c.error("network.subnet_ids", "needs two private subnets in two availability zones, as MWAA does")
    if network.get("vpc_id") is not None:
        out["vpc_id"] = c.string(network, "vpc_id", re.compile(r"^vpc-[0-9a-f]{8,17}$"),
                                 "must be a VPC id such as vpc-0123abcd", prefix="network.")
        if out["vpc_id"]:
            c.error("network.vpc_id", "is not supported yet: give the existing network's subnet_ids and "
                    "security_group_ids (as MWAA's NetworkConfiguration), or vpc_cidr for a new VPC")
    vpc = None
    if network.get("vpc_cidr") is not None:
        vpc = _check_cidrs(c, "vpc_cidr", [network["vpc_cidr"]])[0]
        out["vpc_cidr"] = network["vpc_cidr"] if vpc else None
    if network.get("subnet_cidrs") is not None:
        subnets = _check_cidrs(c, "subnet_cidrs", network["subnet_cidrs"])
        for i, a in enumerate(subnets):
            if vpc is not None and a is not None and not (a.version == vpc.version and a.subnet_of(vpc)):
                c.error("network.subnet_cidrs[%d]" % i, "%s is not inside vpc_cidr %s" % (a, vpc))
            for j in range(i + 1, len(subnets)):
                b = subnets[j]
                if a is not None and b is not None and a.version == b.version and a.overlaps(b):
                    c.error("network.subnet_cidrs[%d]" % j, "%s overlaps subnet_cidrs[%d] %s" % (b, i, a))
        out["subnet_cidrs"] = network["subnet_cidrs"]
        if len(subnets) not in (2, 4):
            c.error("network.subnet_cidrs", "needs 2 private subnets, or 2 private then 2 public ones (4), got %d"
                    % len(subnets))
    elif vpc is not None:
        # Two private subnets then two public ones, each a quarter of the VPC (MWAA's layout).
        if vpc.prefixlen > 26:
            c.error("network.vpc_cidr", "%s is too small for four subnets: give a /26 or larger" % vpc)
        else:
            out["subnet_cidrs"] = [str(n) for n in list(vpc.subnets(prefixlen_diff=2))[:4]]
    if network.get("availability_zones") is not None:
        zones = network["availability_zones"]
        if not isinstance(zones, list) or len(set(z for z in zones if isinstance(z, str))) < 2:
            c.error("network.availability_zones", "needs at least two different availability zones, got %r" % (zones,))
        out["availability_zones"] = zones
    if network.get("ui_allowed_cidrs") is not None:
        for i, net in enumerate(_check_cidrs(c, "ui_allowed_cidrs", network["ui_allowed_cidrs"])):
            if net is not None and net.version != 4:
                c.error("network.ui_allowed_cidrs[%d]" % i, "%s is IPv6: the host firewall and security group admit "
                        "IPv4 addresses and CIDRs only" % net)
        out["ui_allowed_cidrs"] = network["ui_allowed_cidrs"]
    return out


def _check_airstrip(c, section, implied_backend=None):
    if section is None:
        section = {}
    if not isinstance(section, dict):
        c.error("airstrip", "must be a mapping (target, hosts, broker, database, secrets_backend, worker_queues)")
        return {"target": "onprem"}
    c.unknown(section, AIRSTRIP_FIELDS, "airstrip.")
    target = c.choice(section, "target", TARGETS, default="onprem", prefix="airstrip.")
    # Where Airstrip keeps the secrets it generates and where Airflow looks up connections and
    # variables: Secrets Manager on AWS, else the controller's vault file and the metadata database.
    out = {
        "target": target,
        "secrets_backend": c.choice(section, "secrets_backend", SECRETS_BACKENDS,
                                    default=implied_backend or ("aws_secrets_manager" if target == "aws" else "none"),
                                    prefix="airstrip."),
    }
    if implied_backend and out["secrets_backend"] != implied_backend:
        c.error("airstrip.secrets_backend", "is %s, but airflow_configuration_options['secrets.backend'] names Secrets "
                "Manager: keep one of the two" % out["secrets_backend"])
    if "hosts" in section:
        c.error("airstrip.hosts", "is not supported: place hosts with the inventory groups (airflow_scheduler, "
                "airflow_worker, ...; see the README), then remove this field")
    broker = section.get("broker", {"type": "redis"})
    if not isinstance(broker, dict) or broker.get("type", "redis") not in ("redis", "sqs"):
        c.error("airstrip.broker", "must be {type: redis}, got %r" % (broker,))
    else:
        c.unknown(broker, ("type",), "airstrip.broker.")
        if broker.get("type") == "sqs":
            c.error("airstrip.broker.type", "sqs is not supported yet: use redis (Redis on the airflow_broker host)")
    out["broker"] = {"type": "redis"}
    out["database"] = _check_database(c, section.get("database"))
    if "worker_queues" in section:
        queues = section["worker_queues"]
        if not isinstance(queues, list) or not queues or not all(isinstance(q, str) and QUEUE.match(q) for q in queues):
            c.error("airstrip.worker_queues", "must be a non-empty list of queue names (letters, digits, '_', '.', "
                    "'-'), got %r" % (queues,))
        elif len(set(queues)) != len(queues):
            c.error("airstrip.worker_queues", "names a queue twice: %r" % (queues,))
        else:
            out["worker_queues"] = list(queues)
    out.setdefault("worker_queues", [DEFAULT_QUEUE])
    if section.get("region") is not None:
        out["region"] = c.string(section, "region", REGION, REGION_HINT, prefix="airstrip.")
    if section.get("endpoint_url") is not None:
        # One endpoint for every AWS API: an emulator, or a private gateway to AWS.
        out["endpoint_url"] = c.string(section, "endpoint_url", re.compile(r"^https?://[^\s/]+"),
                                       "must be an http(s) URL", prefix="airstrip.")
    out["ec2"] = _check_ec2(c, section.get("ec2"), out["target"] == "aws")
    out["cloudwatch"] = _check_cloudwatch(c, section.get("cloudwatch"), out["target"] == "aws")
    out["prometheus"] = c.boolean(section, "prometheus", default=False, prefix="airstrip.")
    out["scaling"] = _check_scaling(c, section.get("scaling"))
    return out


def _check_scaling(c, section):
    """Worker scaling between min_workers and max_workers from the tasks queued and running."""
    if section is None:
        section = {}
    if isinstance(section, bool):
        section = {"enabled": section}
    if not isinstance(section, dict):
        c.error("airstrip.scaling", "must be true, false or a mapping (enabled, target_utilization)")
        return {"enabled": False}
    c.unknown(section, SCALING_FIELDS, "airstrip.scaling.")
    enabled = c.boolean(section, "enabled", default=False, prefix="airstrip.scaling.")
    if not enabled:
        if "target_utilization" in section:
            c.error("airstrip.scaling.target_utilization", "has no effect while scaling is off: set "
                    "airstrip.scaling.enabled: true, or remove it")
        return {"enabled": False}
    target = section.get("target_utilization", 1.0)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.1 <= target <= 1.0:
        c.error("airstrip.scaling.target_utilization", "must be a number from 0.1 to 1.0 (the share of the workers' "
                "slots that demand may fill), got %r" % (target,))
        target = 1.0
    return {"enabled": True, "target_utilization": float(target)}


def _check_workers(c, env, where):
    """min_workers 0 needs the scaler (nothing else would start a worker); the queue a task
    without queue= goes to must be one the workers serve."""
    if env["min_workers"] == 0 and not (env["airstrip"].get("scaling") or {}).get("enabled"):
        c.error("min_workers", "is 0, but no worker would ever start without the scaler: set airstrip.scaling: true "
                "(the first task then starts a worker), or min_workers: 1 or more")
    default_queue = env["airflow_configuration_options"].get("operators.default_queue", DEFAULT_QUEUE)
    queues = env["airstrip"].get("worker_queues") or [DEFAULT_QUEUE]
    if default_queue not in queues:
        c.error("airstrip.worker_queues", "%r has no %r: tasks that name no queue go there and no worker would take "
                "them; add it to the list (or set airflow_configuration_options['operators.default_queue'] to one of "
                "the list)" % (queues, default_queue))


def _check_metrics(c, env, where):
    """With the metrics bridge (CloudWatch or Prometheus on), Airflow's StatsD goes to it, and the
    bridge applies the user's statsd_on and allow/block lists (the model's observability()).
    Without it, Airflow's [metrics] options are the user's (their own StatsD server)."""
    airstrip = env["airstrip"]
    options = env["airflow_configuration_options"]
    if (airstrip.get("cloudwatch") or {}).get("enabled"):
        for key in sorted(options):
            if key in ("logging.remote_logging", "logging.remote_base_log_folder", "logging.remote_log_conn_id"):
                c.errors.append("%s[%r]: Airstrip streams the task logs to CloudWatch (airflow-<env>-Task) while "
                                "airstrip.cloudwatch is on; remove the option, or turn airstrip.cloudwatch off to "
                                "set remote logging yourself" % (where, key))
    if not ((airstrip.get("cloudwatch") or {}).get("enabled") or airstrip.get("prometheus")):
        return
    for key in sorted(options):
        if key.startswith("metrics.") and key not in _model.BRIDGE_OPTIONS:
            c.errors.append("%s[%r]: Airstrip points Airflow's StatsD at its metrics bridge while airstrip.cloudwatch "
                            "or airstrip.prometheus is on; remove the option (only %s are read, by the bridge)"
                            % (where, key, ", ".join(_model.BRIDGE_OPTIONS)))
    statsd_on = options.get("metrics.statsd_on", "True")
    if str(statsd_on).lower() not in ("true", "false"):
        c.errors.append("%s['metrics.statsd_on']: must be 'True' or 'False', got %r" % (where, statsd_on))
    for key in ("metrics.metrics_allow_list", "metrics.metrics_block_list"):
        for pattern in (options.get(key) or "").split(","):
            try:
                re.compile(pattern.strip())
            except re.error as e:
                c.errors.append("%s[%r]: %r is not a regular expression (%s)" % (where, key, pattern, e))


def _check_cloudwatch(c, section, on_aws):
    """Logs and metrics in CloudWatch, as MWAA's: on by default on AWS, off elsewhere."""
    if section is None:
        section = {}
    if isinstance(section, bool):
        section = {"enabled": section}
    if not isinstance(section, dict):
        c.error("airstrip.cloudwatch", "must be true, false or a mapping (%s)" % ", ".join(sorted(CLOUDWATCH_FIELDS)))
        return {"enabled": False}
    c.unknown(section, CLOUDWATCH_FIELDS, "airstrip.cloudwatch.")
    prefix = "airstrip.cloudwatch."
    enabled = c.boolean(section, "enabled", default=on_aws, prefix=prefix)
    if not enabled:
        extra = sorted(k for k in section if k != "enabled")
        if extra:
            c.error(prefix + extra[0], "has no effect while CloudWatch is off: set airstrip.cloudwatch.enabled: true, "
                    "or remove %s" % ", ".join(extra))
        return {"enabled": False}
    days = section.get("log_retention_days", 30)
    if days not in RETENTION_DAYS or isinstance(days, bool):
        c.error(prefix + "log_retention_days", "must be one of CloudWatch Logs' periods %s, got %r"
                % (", ".join(str(d) for d in RETENTION_DAYS), days))
    return {
        "enabled": True,
        # The CloudWatch agent ships the components' journals and the hosts' metrics.
        "agent": c.boolean(section, "agent", default=True, prefix=prefix),
        "log_retention_days": days,
        # None: Airstrip/<environment name> (settings() fills it in).
        "metrics_namespace": c.string(section, "metrics_namespace", NAMESPACE,
                                      "must be a CloudWatch namespace (1-255 of letters, digits and ./#:_-) not "
                                      "starting with AWS/", prefix=prefix),
        "alarms": c.boolean(section, "alarms", default=True, prefix=prefix),
    }


def _check_database(c, database):
    """The metadata database: PostgreSQL on the airflow_metadata_db host, or an external one
    (RDS, a managed or shared PostgreSQL) named by its URL, whose password is kept out of the
    spec (the inventory's airstrip_database_password, vault-encrypted)."""
    if database is None:
        database = {"type": "postgresql"}
    if not isinstance(database, dict) or database.get("type", "postgresql") not in ("postgresql", "external"):
        c.error("airstrip.database", "must be {type: postgresql} or {type: external, url: ...}, got %r" % (database,))
        return {"type": "postgresql"}
    kind = database.get("type", "postgresql")
    c.unknown(database, ("type", "url") if kind == "external" else ("type",), "airstrip.database.")
    if kind == "postgresql":
        return {"type": kind}
    url = database.get("url")
    if not isinstance(url, str):
        c.error("airstrip.database.url", "is required for an external database: a PostgreSQL URL such as "
                "postgresql://airflow@db.example.internal:5432/airflow")
        return {"type": kind, "url": None}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("postgresql", "postgresql+psycopg2") or not parts.hostname \
            or not parts.username or not parts.path.strip("/"):
        c.error("airstrip.database.url", "must be a PostgreSQL URL with user, host and database, such as "
                "postgresql://airflow@db.example.internal:5432/airflow, got %r" % (url.split("@")[-1],))
        return {"type": kind, "url": None}
    if parts.password is not None:
        c.error("airstrip.database.url", "holds a password: keep it out of the spec, remove it from the URL and "
                "set airstrip_database_password in the inventory (encrypted with ansible-vault)")
        return {"type": kind, "url": None}
    # The URL as given (query such as ?sslmode=require, IPv6 brackets), with the driver and port said.
    netloc = parts.netloc if port else "%s:%d" % (parts.netloc, _model.PORTS["metadata_db"])
    url = "postgresql+psycopg2://%s%s" % (netloc, parts.path)
    return {"type": kind, "url": url + ("?" + parts.query if parts.query else "")}


def _check_ec2(c, ec2, required):
    """The EC2 instances of an environment on AWS: the AMI, and an instance type per host role."""
    if ec2 is None:
        if required:
            c.error("airstrip.ec2.ami_id", "is required when airstrip.target is aws: the AMI of the hosts (Debian 12)")
        return None
    if not isinstance(ec2, dict):
        c.error("airstrip.ec2", "must be a mapping with ami_id, and optionally instance_types and key_name")
        return None
    c.unknown(ec2, EC2_FIELDS, "airstrip.ec2.")
    out = {"ami_id": c.string(ec2, "ami_id", re.compile(r"^ami-[0-9a-f]{8,17}$"), "must be an AMI id such as ami-0123abcd",
                              prefix="airstrip.ec2.")}
    if ec2.get("ami_id") is None:
        c.error("airstrip.ec2.ami_id", "is required: the AMI of the hosts (Debian 12)")
    types = ec2.get("instance_types") or {}
    if not isinstance(types, dict):
        c.error("airstrip.ec2.instance_types", "must map host roles (%s) to instance types" % ", ".join(EC2_HOST_ROLES))
        types = {}
    for role, value in types.items():
        if role not in EC2_HOST_ROLES:
            c.error("airstrip.ec2.instance_types.%s" % role, "is not a host role: use %s" % ", ".join(EC2_HOST_ROLES))
        elif not isinstance(value, str) or not re.match(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", value):
            c.error("airstrip.ec2.instance_types.%s" % role, "must be an instance type such as t3.medium, got %r" % (value,))
    out["instance_types"] = types
    out["key_name"] = c.string(ec2, "key_name", prefix="airstrip.ec2.")
    return out


def _check_onprem(c, env):
    """Fields that describe AWS resources, refused where the environment makes none."""
    airstrip = env["airstrip"]
    if airstrip.get("target") == "aws":
        return
    fix = "remove it, or set airstrip.target: aws"
    if env.get("execution_role_arn"):
        c.error("execution_role_arn", "is used only when airstrip.target is aws (the EC2 hosts' role): " + fix)
    if airstrip.get("ec2") is not None:
        c.error("airstrip.ec2", "describes the EC2 instances Airstrip makes, used only when airstrip.target is aws: " + fix)
    if airstrip.get("secrets_backend") != "aws_secrets_manager":
        if env.get("kms_key"):
            c.error("kms_key", "encrypts AWS resources, and this environment makes none (airstrip.target onprem, "
                    "secrets_backend none): %s, or airstrip.secrets_backend: aws_secrets_manager" % fix)
        if env.get("tags"):
            c.error("tags", "are put on AWS resources, and this environment makes none (airstrip.target onprem, "
                    "secrets_backend none): %s, or airstrip.secrets_backend: aws_secrets_manager" % fix)
    network = env.get("network") or {}
    for field in sorted(network):
        if field != "ui_allowed_cidrs" and network[field] is not None:
            c.error("network." + field, "describes an AWS VPC, used only when airstrip.target is aws: " + fix
                    + " (on your own hosts only network.ui_allowed_cidrs applies, to the host firewall)")


def normalize(doc):
    """Validate and normalise a spec. Returns the environment dict, or raises SpecError."""
    if not isinstance(doc, dict):
        raise SpecError(["spec: must be a mapping (the environment's fields), got %s" % type(doc).__name__])
    if looks_like_mwaa(doc):
        doc, paths = from_mwaa(doc)
    else:
        doc, paths = copy.deepcopy(doc), {}
    c = _Checker(paths)
    c.unknown(doc, TOP_FIELDS)
    env = {}
    env["name"] = c.string(doc, "name", NAME,
                           "must be 1-80 characters, start with a letter, and hold only letters, digits, '-' and '_'")
    if doc.get("name") is None:
        c.error("name", "is required: 1-80 characters, starting with a letter")
    version = doc.get("airflow_version")
    if isinstance(version, str) and re.match(r"^2\.\d+(\.\d+)?$", version):
        # An Airflow 2 environment (MWAA's get-environment of one): say the way on, not only no.
        c.error("airflow_version", "%r is an Airflow 2 release, and Airstrip runs Airflow 3 only: upgrade the DAGs to Airflow 3 "
                "(see docs/mwaa.md, 'From an Airflow 2 environment'), then set it to an Airflow 3 release such as '%s'"
                % (version, DEFAULT_VERSION))
        env["airflow_version"] = None
    else:
        env["airflow_version"] = c.string(doc, "airflow_version", VERSION, "must be an Airflow 3 release such as '3.3.2'",
                                          default=DEFAULT_VERSION)
    env["environment_class"] = c.choice(doc, "environment_class", sorted(CLASSES, key=list(CLASSES).index),
                                        default="mw1.small")
    cls = CLASSES.get(env["environment_class"] or "mw1.small")
    # 0 with airstrip.scaling only (_check_workers): the first task starts a worker.
    env["min_workers"] = c.integer(doc, "min_workers", 0, 1000, default=1)
    env["max_workers"] = c.integer(doc, "max_workers", 1, 1000, default=max(env["min_workers"] or 1, 10))
    if env["min_workers"] and env["max_workers"] and env["min_workers"] > env["max_workers"]:
        c.error("min_workers", "(%d) must not exceed max_workers (%d)" % (env["min_workers"], env["max_workers"]))
    micro = env["environment_class"] == "mw1.micro"
    env["schedulers"] = c.integer(doc, "schedulers", 1, 1 if micro else 5, default=cls["schedulers"])
    env["min_webservers"] = c.integer(doc, "min_webservers", 1, 1 if micro else 5, default=cls["webservers"])
    env["max_webservers"] = c.integer(doc, "max_webservers", 1, 1 if micro else 5,
                                      default=max(env["min_webservers"] or 1, cls["webservers"]))
    if env["min_webservers"] and env["max_webservers"] and env["min_webservers"] > env["max_webservers"]:
        c.error("min_webservers", "(%d) must not exceed max_webservers (%d)"
                % (env["min_webservers"], env["max_webservers"]))

    options = doc.get("airflow_configuration_options")
    options = {} if options is None else options
    implied_backend = None
    where = c.where("airflow_configuration_options")
    if isinstance(options, dict):
        options = dict(options)
        for option, field in CLASS_OPTIONS.items():
            if option in options:
                value = options.pop(option)
                if not isinstance(value, str) or not value.isdigit() or not 1 <= int(value) <= 1000:
                    c.errors.append("%s[%r]: must be a whole number from 1 to 1000 as a string, got %r"
                                    % (where, option, value))
                elif field not in doc:
                    doc[field] = int(value)
        if "secrets.backend" in options:
            value = options.pop("secrets.backend")
            if value == SM_BACKEND:
                implied_backend = "aws_secrets_manager"
            else:
                c.errors.append("%s['secrets.backend']: Airstrip runs only %s (as airstrip.secrets_backend: "
                                "aws_secrets_manager), got %r" % (where, SM_BACKEND, value))
    option_errors = config_option_errors(options, where, SPEC_OWNED_OPTIONS)
    c.errors.extend(option_errors)
    if isinstance(options, dict) and not option_errors:
        for key in sorted(options):
            if not isinstance(options[key], str):
                c.errors.append("%s[%r]: value must be a string, as MWAA requires, got %r" % (where, key, options[key]))
    env["airflow_configuration_options"] = dict(sorted(options.items())) if isinstance(options, dict) else {}
    env["worker_concurrency"] = c.integer(doc, "worker_concurrency", 1, 1000, default=cls["worker_concurrency"])
    env["parsing_processes"] = c.integer(doc, "parsing_processes", 1, 1000, default=cls["parsing_processes"])

    env["source"] = _check_source(c, doc.get("source"))
    env["logging"] = _check_logging(c, doc.get("logging"))
    env["webserver_access_mode"] = c.choice(doc, "webserver_access_mode", ACCESS_MODES, default="PRIVATE_ONLY")
    env["endpoint_management"] = c.choice(doc, "endpoint_management", ENDPOINT_MANAGEMENT, default="SERVICE")
    if env["endpoint_management"] == "CUSTOMER":
        c.error("endpoint_management", "CUSTOMER is not supported yet: Airstrip makes the environment's endpoints "
                "itself (SERVICE); remove the field or set SERVICE")
    kms = doc.get("kms_key")
    if kms is not None and (not isinstance(kms, str) or not re.match(
            r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/.+|alias/[A-Za-z0-9/_-]+|[0-9a-f-]{36})$", kms)):
        c.error("kms_key", "must be a KMS key id, key ARN, alias ARN or alias/name, got %r" % (kms,))
        kms = None
    env["kms_key"] = kms
    env["network"] = _check_network(c, doc.get("network"))
    window = doc.get("weekly_maintenance_window_start")
    if window is not None and (not isinstance(window, str) or not WINDOW.match(window)):
        c.error("weekly_maintenance_window_start",
                "must be DAY:HH:MM in UTC with DAY one of MON..SUN and MM 00 or 30, such as TUE:03:30, got %r" % (window,))
        window = None
    env["weekly_maintenance_window_start"] = window
    tags = doc.get("tags")
    tags = {} if tags is None else tags
    if not isinstance(tags, dict):
        c.error("tags", "must be a mapping of key to value")
        tags = {}
    elif len(tags) > MAX_TAGS:
        c.error("tags", "holds %d tags; at most %d are allowed" % (len(tags), MAX_TAGS))
    else:
        for k, v in tags.items():
            if not isinstance(k, str) or not 1 <= len(k) <= 128 or k.startswith("aws:"):
                c.error("tags", "key %r must be 1-128 characters and not start with 'aws:'" % (k,))
            elif not isinstance(v, str) or len(v) > 256:
                c.error("tags.%s" % k, "value must be a string of at most 256 characters, got %r" % (v,))
    env["tags"] = dict(sorted(tags.items()))
    if doc.get("execution_role_arn") is not None:
        env["execution_role_arn"] = c.string(doc, "execution_role_arn", re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"),
                                             "must be an IAM role ARN")
    env["airstrip"] = _check_airstrip(c, doc.get("airstrip"), implied_backend)
    _check_metrics(c, env, where)
    _check_workers(c, env, where)
    # Everything of one environment lives in one region: a key ARN must name it.
    region = env["airstrip"].get("region") or (env["source"] or {}).get("region")
    kms_region = kms.split(":")[3] if kms and kms.startswith("arn:") else None
    if region and kms_region and kms_region != region:
        c.error("kms_key",
                "names a key in region %s, but the environment is in %s: use a key of %s" % (kms_region, region, region))
    cloudwatch = env["airstrip"].get("cloudwatch") or {}
    if (cloudwatch.get("metrics_namespace") or "").startswith("AWS/"):
        c.error("airstrip.cloudwatch.metrics_namespace", "must not start with AWS/ (kept for AWS's own metrics)")
    if env["airstrip"].get("target") == "aws" and env["source"] is None:
        c.error("source", "is required when airstrip.target is aws (the DAG bucket)")
    _check_onprem(c, env)
    if env["airstrip"].get("target") == "aws" and env["airstrip"]["database"]["type"] == "external":
        c.error("airstrip.database", "external is not supported yet with airstrip.target aws (the EC2 control host "
                "runs PostgreSQL): use {type: postgresql}, or own hosts (target onprem) for an external database")
    if c.errors:
        raise SpecError(c.errors)
    return env
