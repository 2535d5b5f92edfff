# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Documentation for each filter is in its own <name>.yml beside this file.
from ansible.errors import AnsibleFilterError

from ansible_collections.airstrip.airflow.plugins.module_utils import _cwagent


def cloudwatch_agent_config(env_name, components, log_types_enabled, region, endpoint_url="", mode="ec2",
                            force_flush_interval=5, metrics_interval=60, namespace="", host=""):
    """The amazon-cloudwatch-agent's JSON configuration of one host (_cwagent.agent_config)."""
    try:
        return _cwagent.agent_config(env_name, components, log_types_enabled, region, endpoint_url=endpoint_url,
                                     mode=mode, force_flush_interval=force_flush_interval,
                                     metrics_interval=metrics_interval, namespace=namespace, host=host)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("cloudwatch_agent_config: %s" % (exc.args[0] if exc.args else exc))


def cloudwatch_agent_common_config(credentials_file="", profile=_cwagent.DEFAULT_PROFILE):
    """The agent's common-config.toml (_cwagent.common_config)."""
    return _cwagent.common_config(credentials_file or "", profile or "")


class FilterModule(object):
    def filters(self):
        return {
            "cloudwatch_agent_config": cloudwatch_agent_config,
            "cloudwatch_agent_common_config": cloudwatch_agent_common_config,
        }
