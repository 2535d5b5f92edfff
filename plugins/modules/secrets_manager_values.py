#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: secrets_manager_values
short_description: Read an environment's secrets from AWS Secrets Manager on the host itself
version_added: 0.1.0
description:
  - Reads the current value of each secret O(prefix)+name of O(names) with GetSecretValue, on the
    host the task runs on and with that host's credentials (its instance profile on EC2), so that
    the secrets travel from Secrets Manager to the host and never through the controller.
  - The amazon.aws C(secretsmanager_secret) lookup does the same on the controller; no amazon.aws or
    community.aws module returns a secret's value.
  - Needs boto3 on the host (Debian's C(python3-boto3) is enough); it does not need the versions
    amazon.aws asks of the controller. The values are returned to the play, so register them with
    C(no_log).
author:
  - Airstrip developers (@airstrip)
options:
  names:
    description: Names of the secrets, without O(prefix).
    type: list
    elements: str
    required: true
  prefix:
    description: Prefix of every name, such as C(airstrip/prod/).
    type: str
    default: ""
  region:
    description: AWS region; default the host's configuration (C(AWS_DEFAULT_REGION), C(~/.aws/config)).
    type: str
  endpoint_url:
    description: Secrets Manager endpoint other than AWS's own (a VPC endpoint's name, an emulator).
    type: str
  access_key:
    description: Access key; default the host's own credentials (instance profile, environment, profile).
    type: str
  secret_key:
    description: Secret key, with O(access_key).
    type: str
  session_token:
    description: Session token of temporary credentials, with O(access_key).
    type: str
extends_documentation_fragment:
  - airstrip.airflow.attributes
  - airstrip.airflow.attributes.info
attributes:
  check_mode:
    details: Only reads; in check mode a secret not made yet gets a placeholder instead of failing.
"""

EXAMPLES = r"""
- name: Read the environment's secrets on the host
  airstrip.airflow.secrets_manager_values:
    prefix: airstrip/prod/
    names: [db_password, broker_password]
    region: eu-west-1
  register: env_secrets
  no_log: true
"""

RETURN = r"""
secrets:
  description:
    - Name (without the prefix) -> the secret's current string value.
    - In check mode, a secret that does not exist yet (or every one, when boto3 is not installed
      yet) gets a placeholder, with a warning, so that a first check-mode run can go on.
  returned: success
  type: dict
missing:
  description: Names given a placeholder in check mode.
  returned: success
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    boto3 = None
    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    BOTO3_IMPORT_ERROR = None


PLACEHOLDER = "(check mode: not made yet)"


def fail(module, secret_id, exc):
    """Fail naming the secret, what went wrong and what to do about it."""
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
    if code == "ResourceNotFoundException":
        fix = ("It does not exist yet: the create and update playbooks make it (the secrets_manager role) before "
               "they deploy; site.yml alone does not.")
    elif code in ("NoCredentialsError", "PartialCredentialsError"):
        fix = ("This host has no AWS credentials: give it an instance profile (on EC2), or set "
               "airstrip_aws_access_key and airstrip_aws_secret_key for hosts off AWS.")
    elif code == "NoRegionError":
        fix = "No region is set: set airstrip.region in the spec (or airstrip_aws_region)."
    elif code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        fix = ("This host cannot reach the Secrets Manager endpoint: allow it through the firewall or proxy, or "
               "give the VPC a secretsmanager interface endpoint.")
    else:
        fix = ("The host's credentials (its instance profile on EC2) need secretsmanager:GetSecretValue on it "
               "and kms:Decrypt on its key.")
    module.fail_json(msg="Cannot read secret %s from Secrets Manager on this host: %s. %s" % (secret_id, exc, fix))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type="list", elements="str", required=True),
            prefix=dict(type="str", default=""),
            region=dict(type="str"),
            endpoint_url=dict(type="str"),
            access_key=dict(type="str", no_log=True),
            secret_key=dict(type="str", no_log=True),
            session_token=dict(type="str", no_log=True),
        ),
        required_together=[("access_key", "secret_key")],
        supports_check_mode=True,
    )
    if boto3 is None and module.check_mode:
        # A first check-mode run, before the package that brings boto3 is installed.
        module.warn("boto3 is not installed yet: check mode goes on with placeholders for the secrets")
        module.exit_json(changed=False, secrets=dict((n, PLACEHOLDER) for n in module.params["names"]),
                         missing=module.params["names"])
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3", reason="to read secrets from Secrets Manager")
                         + " (on Debian: apt install python3-boto3)", exception=BOTO3_IMPORT_ERROR)
    p = module.params
    try:
        client = boto3.session.Session().client(
            "secretsmanager", region_name=p["region"] or None, endpoint_url=p["endpoint_url"] or None,
            aws_access_key_id=p["access_key"] or None, aws_secret_access_key=p["secret_key"] or None,
            aws_session_token=p["session_token"] or None,
            config=Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=10, read_timeout=20))
    except (BotoCoreError, ValueError) as exc:
        fail(module, p["prefix"] + (p["names"] or [""])[0], exc)
    values, missing = {}, []
    for name in p["names"]:
        secret_id = p["prefix"] + name
        try:
            answer = client.get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            if module.check_mode and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                # Check mode of a first run: the secrets_manager role has not made it yet.
                values[name] = PLACEHOLDER
                missing.append(name)
                continue
            fail(module, secret_id, exc)
        except BotoCoreError as exc:
            fail(module, secret_id, exc)
        if "SecretString" not in answer:
            module.fail_json(msg="Secret %s holds binary data; Airstrip's secrets are strings" % secret_id)
        values[name] = answer["SecretString"]
    if missing:
        module.warn("check mode: secret(s) %s do not exist yet; the real run makes them" % ", ".join(missing))
    module.exit_json(changed=False, secrets=values, missing=missing)


if __name__ == "__main__":
    main()
