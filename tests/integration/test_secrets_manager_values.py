"""airstrip.airflow.secrets_manager_values, run by ansible against the emulated Secrets Manager."""

import os

import adhoc
import boto3


def run(args, check=False):
    return adhoc.run_module("airstrip.airflow.secrets_manager_values", args, check)[0]


def test_reads_each_secret_and_reports_what_is_missing(moto_url):
    sm = boto3.client("secretsmanager", endpoint_url=moto_url, region_name="us-east-1")
    sm.create_secret(Name="airstrip/itest-read/db_password", SecretString="s3cr3t-db")
    sm.create_secret(Name="airstrip/itest-read/broker_password", SecretString="s3cr3t-broker")
    args = {"prefix": "airstrip/itest-read/", "names": ["db_password", "broker_password"],
            "endpoint_url": moto_url, "region": "us-east-1"}

    r = run(args)
    assert r["changed"] is False and r["secrets"] == {"db_password": "s3cr3t-db", "broker_password": "s3cr3t-broker"}
    assert r["missing"] == []

    r = run(dict(args, names=["db_password", "admin_password"]))
    assert r.get("failed") is True
    assert r["msg"].startswith("Cannot read secret airstrip/itest-read/admin_password from Secrets Manager on this "
                               "host: An error occurred (ResourceNotFoundException)"), r["msg"]
    assert "It does not exist yet: the create and update playbooks make it" in r["msg"]

    # Check mode of a first run goes on, with a placeholder and a warning.
    r = run(dict(args, names=["db_password", "admin_password"]), check=True)
    assert not r.get("failed") and r["missing"] == ["admin_password"]
    assert r["secrets"]["db_password"] == "s3cr3t-db" and r["secrets"]["admin_password"].startswith("(check mode")
    assert any("admin_password do not exist yet" in w for w in r["warnings"])


def test_an_unreachable_endpoint_fails_naming_the_secret():
    r = run({"prefix": "airstrip/x/", "names": ["db_password"], "endpoint_url": "http://127.0.0.1:9",
             "region": "us-east-1"})
    assert r.get("failed") is True and "Cannot read secret airstrip/x/db_password" in r["msg"]
    assert "cannot reach the Secrets Manager endpoint" in r["msg"], r["msg"]


def test_no_region_is_named(moto_url):
    env_region = os.environ.pop("AWS_DEFAULT_REGION", None)
    try:
        r = run({"prefix": "airstrip/x/", "names": ["db_password"], "endpoint_url": moto_url})
    finally:
        if env_region:
            os.environ["AWS_DEFAULT_REGION"] = env_region
    assert r.get("failed") is True and "No region is set: set airstrip.region" in r["msg"], r["msg"]
