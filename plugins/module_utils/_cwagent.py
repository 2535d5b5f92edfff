# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The amazon-cloudwatch-agent's configuration for one Airstrip host.

`agent_config()` gives the agent's JSON (as a dict) from the environment model: each Airflow
component on the host whose log type is enabled ships its journal to the log group MWAA
names (airflow-<env>-<Group>), and the host reports cpu, mem, disk and per-component
procstat metrics. `common_config()` gives the TOML of common-config.toml for hosts off AWS,
which read their keys from a shared credentials file.

Choices, each for a reason:
- No `retention_in_days`: the controller creates the log groups (retention, KMS), so the
  agent needs only CreateLogStream / PutLogEvents / DescribeLogStreams on airflow-<env>-*.
- No `statsd`: Airstrip's metrics bridge owns 127.0.0.1:8125.
- Metrics namespace `Airstrip/<env>` by default: the only one the hosts' IAM policy allows
  (cloudwatch:namespace condition); the host metrics' names (cpu_usage_idle, procstat_...)
  do not meet the bridge's MWAA names there.
- `append_dimensions` replaces the agent's own `host` dimension, so the host is given
  back: `Host` (the inventory name) off AWS, `InstanceId` on EC2.
- Units by their full name (airflow-scheduler.service), which journalctl's --unit and a
  _SYSTEMD_UNIT match both take as is.

Pure: no Ansible imports, so plain pytest reaches it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.airstrip.airflow.plugins.module_utils import _model

MODES = ("ec2", "onPremise")
DEFAULT_PROFILE = "AmazonCloudWatchAgent"
# What each metric plugin measures (names as the agent's wizard writes them).
CPU_MEASUREMENTS = ["cpu_usage_idle", "cpu_usage_iowait", "cpu_usage_user", "cpu_usage_system"]
MEM_MEASUREMENTS = ["mem_used_percent", "mem_available_percent"]
DISK_MEASUREMENTS = ["used_percent", "inodes_free"]
# Pseudo and in-memory file systems the disk plugin skips.
DISK_IGNORED_FS = ["sysfs", "devtmpfs", "tmpfs", "overlay", "squashfs", "proc"]
PROCSTAT_MEASUREMENTS = ["cpu_usage", "memory_rss", "pid_count"]


def namespace_of(env_name):
    """The default metrics namespace of an environment (what the hosts' IAM policy allows)."""
    return "Airstrip/%s" % env_name


def unit_name(component):
    """The systemd unit of a component, as journald knows it."""
    return "%s.service" % _model.COMPONENTS[component]["unit"]


def procstat_pattern(component):
    """A regex over a process's command line that matches the component's processes."""
    # The commands are words, spaces and dashes: nothing a regex treats specially.
    return "airflow %s" % _model.COMPONENTS[component]["command"]


def _check(env_name, components, mode):
    if not env_name:
        raise ValueError("env_name is empty: the environment's name makes the log group names")
    if mode not in MODES:
        raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    unknown = [c for c in components if c not in _model.COMPONENTS]
    if unknown:
        raise ValueError("unknown component(s) %s: use %s"
                         % (", ".join(map(repr, unknown)), ", ".join(_model.COMPONENT_NAMES)))


def journald_entries(env_name, components, log_types_enabled):
    """One collect_list entry per component whose log type is enabled (a type left out of
    log_types_enabled is enabled, as in the spec)."""
    enabled = log_types_enabled or {}
    out = []
    for component in _model.COMPONENT_NAMES:  # the model's order, so the file is stable
        if component not in components:
            continue
        log_type = _model.component_log_type(component)
        if log_type is None or not enabled.get(log_type, True):
            continue
        out.append({
            "units": [unit_name(component)],
            "log_group_name": _model.log_group_name(env_name, log_type),
            "log_stream_name": "%s_{hostname}" % component,
        })
    return out


def agent_config(env_name, components, log_types_enabled, region, endpoint_url="", mode="ec2",
                 force_flush_interval=5, metrics_interval=60, namespace="", host=""):
    """The agent's JSON configuration (a dict) for a host running `components`.

    log_types_enabled: {log type: enabled} (the spec's logging.<type>.enabled); endpoint_url:
    an endpoint for CloudWatch and CloudWatch Logs (emulators, VPC endpoints), empty for AWS's;
    mode: ec2 or onPremise; namespace: empty for Airstrip/<env>; host: the host's name, its
    Host dimension off AWS."""
    components = list(components or [])
    _check(env_name, components, mode)
    if not region:
        raise ValueError("region is empty: the agent needs one off EC2, and Airstrip always gives it")
    present = [c for c in _model.COMPONENT_NAMES if c in components]
    interval = int(metrics_interval)
    config = {
        # run_as_user stays unset: the agent runs as root, which reads every unit's journal.
        "agent": {"region": region, "metrics_collection_interval": interval},
    }
    entries = journald_entries(env_name, present, log_types_enabled)
    if entries:
        logs = {
            "logs_collected": {"journald": {"collect_list": entries}},
            "force_flush_interval": int(force_flush_interval),
        }
        if endpoint_url:
            logs["endpoint_override"] = endpoint_url
        config["logs"] = logs
    dimensions = {"Environment": env_name}
    if mode == "ec2":
        dimensions["InstanceId"] = "${aws:InstanceId}"
    elif host:
        dimensions["Host"] = host
    collected = {
        "cpu": {"measurement": list(CPU_MEASUREMENTS), "totalcpu": True},
        "mem": {"measurement": list(MEM_MEASUREMENTS)},
        "disk": {"measurement": list(DISK_MEASUREMENTS), "resources": ["*"],
                 "ignore_file_system_types": list(DISK_IGNORED_FS)},
    }
    if present:
        collected["procstat"] = [{"pattern": procstat_pattern(c), "measurement": list(PROCSTAT_MEASUREMENTS)}
                                 for c in present]
    metrics = {
        "namespace": namespace or namespace_of(env_name),
        "append_dimensions": dimensions,
        "metrics_collected": collected,
    }
    if endpoint_url:
        metrics["endpoint_override"] = endpoint_url
    config["metrics"] = metrics
    return config


def _toml_string(value):
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def common_config(credentials_file="", profile=DEFAULT_PROFILE):
    """The agent's common-config.toml: the profile it reads, and from which file (hosts off AWS).

    credentials_file empty: the agent's own lookup for the profile (root's ~/.aws)."""
    lines = ["# Managed by Airstrip (airstrip.airflow.cloudwatch_agent).", "[credentials]"]
    if profile:
        lines.append("   shared_credential_profile = %s" % _toml_string(profile))
    if credentials_file:
        lines.append("   shared_credential_file = %s" % _toml_string(credentials_file))
    return "\n".join(lines) + "\n"
