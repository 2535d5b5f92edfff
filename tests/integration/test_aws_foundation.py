"""The AWS side of an environment (playbooks/aws.yml's roles) against the emulated AWS,
each step four times as amazon.aws tests its modules: check mode (reports a change, creates
nothing), for real, check mode again and for real again (no change); then the delete leaves
nothing tagged with the environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

ROOT = Path(__file__).resolve().parents[2]
ENV = "itest-aws"
TAG = {"Key": "airstrip:environment", "Values": [ENV]}
SPEC = {
    "name": ENV,
    "source": {"bucket": "itest-aws-airflow", "dag_s3_path": "dags", "requirements_s3_path": "requirements.txt"},
    "network": {"vpc_cidr": "10.40.0.0/16", "ui_allowed_cidrs": ["192.0.2.0/24"]},
    "webserver_access_mode": "PUBLIC_ONLY",
    "tags": {"team": "platform"},
    "schedulers": 2,
    "min_workers": 1,
    "max_workers": 2,
    "min_webservers": 1,
    "airstrip": {"target": "aws", "region": "us-east-1", "ec2": {"ami_id": "ami-00000000"}},
}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, moto_url):
    path = tmp_path_factory.mktemp("aws") / "environment.yml"
    # An AMI the emulated EC2 knows (it ships a list of public ones).
    images = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing").describe_images(Owners=["amazon"])["Images"]
    SPEC["airstrip"]["ec2"]["ami_id"] = sorted(i["ImageId"] for i in images if i.get("RootDeviceName"))[0]
    path.write_text(yaml.safe_dump(SPEC))
    return path


def playbook(path, moto_url, spec_file, *extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(path),
                           "-e", f"airstrip_spec_file={spec_file}", "-e", f"airstrip_aws_endpoint_url={moto_url}",
                           "-e", f"ansible_python_interpreter={sys.executable}", *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def changed_in_step(result):
    """Names of the changed tasks of the step under test (after the include 'The step under test')."""
    tasks = result["plays"][0]["tasks"]
    start = next(i for i, t in enumerate(tasks) if t["task"]["name"] == "The step under test")
    return [t["task"]["name"] for t in tasks[start + 1:] if any(h.get("changed") for h in t["hosts"].values())]


def changed_tasks(result):
    """Names of every changed task of a playbook's JSON result."""
    return [t["task"]["name"] for play in result["plays"] for t in play["tasks"]
            if any(h.get("changed") for h in t["hosts"].values())]


def aws(moto_url, service):
    return boto3.client(service, endpoint_url=moto_url, region_name="us-east-1")


def exists(moto_url, step):
    if step == 0:
        return any(r["RoleName"] == f"airstrip-{ENV}-execution" for r in aws(moto_url, "iam").list_roles()["Roles"])
    if step == 1:
        return any(a["AliasName"] == f"alias/airstrip-{ENV}" for a in aws(moto_url, "kms").list_aliases()["Aliases"])
    if step == 2:
        return any(b["Name"] == SPEC["source"]["bucket"] for b in aws(moto_url, "s3").list_buckets()["Buckets"])
    if step == 3:
        return bool(aws(moto_url, "iam").list_role_policies(RoleName=f"airstrip-{ENV}-execution")["PolicyNames"])
    if step == 4:
        return bool(aws(moto_url, "secretsmanager").list_secrets(
            Filters=[{"Key": "name", "Values": [f"airstrip/{ENV}/"]}])["SecretList"])
    if step == 5:
        return bool(aws(moto_url, "ec2").describe_vpcs(Filters=[{"Name": "tag:airstrip:environment", "Values": [ENV]}])["Vpcs"])
    return bool(instances(moto_url))


def instances(moto_url):
    reservations = aws(moto_url, "ec2").describe_instances(Filters=[
        {"Name": "tag:airstrip:environment", "Values": [ENV]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    return sorted({t["Key"]: t["Value"] for t in i["Tags"]}["airstrip:host"] for r in reservations for i in r["Instances"])


STEPS = ["iam role and instance profile", "kms key", "s3 bucket", "iam policy", "secrets", "network", "ec2 hosts"]


@pytest.mark.parametrize("step", range(len(STEPS)), ids=STEPS)
def test_each_step_four_times(moto_url, spec_file, step):
    run = [ROOT / "tests" / "integration" / "aws" / "step.yml", moto_url, spec_file, "-e", f"aws_step={step}"]
    assert changed_in_step(playbook(*run, "--check")), "check mode reported no change"
    assert not exists(moto_url, step), "check mode created something"
    assert changed_in_step(playbook(*run)), "the real run reported no change"
    assert exists(moto_url, step)
    first = secret_values(moto_url) if STEPS[step] == "secrets" else None
    assert changed_in_step(playbook(*run, "--check")) == []
    assert changed_in_step(playbook(*run)) == []
    if STEPS[step] == "secrets":
        sm = aws(moto_url, "secretsmanager")
        key = aws(moto_url, "kms").describe_key(KeyId=f"alias/airstrip-{ENV}")["KeyMetadata"]["Arn"]
        secrets = sm.list_secrets(Filters=[{"Key": "name", "Values": [f"airstrip/{ENV}/"]}])["SecretList"]
        assert sorted(s["Name"].rsplit("/", 1)[1] for s in secrets) == [
            "admin_password", "api_secret_key", "broker_password", "db_password", "fernet_seed", "jwt_secret"]
        assert {s["KmsKeyId"] for s in secrets} == {key}
        # Generated once: the runs after the first kept the values.
        assert secret_values(moto_url) == first
        assert len(first["admin_password"]) == 20 and first["admin_password"].isalnum()
    if STEPS[step] == "ec2 hosts":
        # One instance per host the spec asks for, found again (not doubled) by the later runs,
        # and in the inventory groups of their role for the deploy that follows.
        assert instances(moto_url) == ["control-0", "scheduler-0", "scheduler-1", "webserver-0", "worker-0", "worker-1"]
        groups = groups_after(playbook(*run, "--check"))
        assert groups["airflow_scheduler"] == [f"airstrip-{ENV}-scheduler-0", f"airstrip-{ENV}-scheduler-1"]
        assert groups["airflow_worker"] == [f"airstrip-{ENV}-worker-0", f"airstrip-{ENV}-worker-1"]
        assert groups["airflow_metadata_db"] == groups["airflow_broker"] == [f"airstrip-{ENV}-control-0"]
        # Every root volume is encrypted with the environment's key.
        ec2 = aws(moto_url, "ec2")
        key = aws(moto_url, "kms").describe_key(KeyId=f"alias/airstrip-{ENV}")["KeyMetadata"]["Arn"]
        ids = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
            {"Name": "tag:airstrip:environment", "Values": [ENV]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"] for i in r["Instances"]]
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
        assert len(volumes) == len(ids) == 6
        assert {(v["Encrypted"], v.get("KmsKeyId"), v["Size"], v["VolumeType"]) for v in volumes} == {(True, key, 30, "gp3")}


def test_read_spec_and_aws_side_twice_give_the_ec2_hosts_the_spec(moto_url, spec_file):
    """After every step above: the whole AWS side as create runs it changes nothing more, and each
    EC2 host it adds to the inventory has the spec's settings for the deploy that follows."""
    run = [ROOT / "tests" / "integration" / "aws" / "read_spec_and_aws.yml", moto_url, spec_file]
    for attempt in range(2):
        result = playbook(*run)
        changed = [name for name in changed_tasks(result) if name != "Build the AWS side of the environment"]
        assert changed == [], (attempt, changed)
    settings = next(t for play in result["plays"] for t in play["tasks"] if t["task"]["name"] == "Their settings")
    hosts = settings["hosts"]
    names = ("control-0", "scheduler-0", "scheduler-1", "worker-0", "worker-1")
    assert sorted(hosts) == [f"airstrip-{ENV}-{h}" for h in names]
    for name, r in hosts.items():
        assert r["msg"] == {"env_name": ENV, "secrets_backend": "aws_secrets_manager", "airflow_version": "3.3.2",
                            "dag_sync_bucket": SPEC["source"]["bucket"], "region": "us-east-1"}, (name, r)


def groups_after(result):
    tasks = result["plays"][0]["tasks"]
    return next(t for t in tasks if t["task"]["name"] == "The inventory groups after the step")["hosts"]["localhost"]["msg"]


def secret_values(moto_url):
    sm = aws(moto_url, "secretsmanager")
    return {s["Name"].rsplit("/", 1)[1]: sm.get_secret_value(SecretId=s["Name"])["SecretString"]
            for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [f"airstrip/{ENV}/"]}])["SecretList"]}


def tagged(moto_url):
    """Every resource still tagged airstrip:environment=ENV (a key pending deletion is gone)."""
    pages = aws(moto_url, "resourcegroupstaggingapi").get_paginator("get_resources").paginate(TagFilters=[TAG])
    out = [r["ResourceARN"] for page in pages for r in page["ResourceTagMappingList"]]
    kms = aws(moto_url, "kms")
    out = [a for a in out if not (":kms:" in a and kms.describe_key(KeyId=a)["KeyMetadata"]["KeyState"] == "PendingDeletion")]
    # A terminated instance lingers (as on AWS) with its tags: it is gone.
    ec2 = aws(moto_url, "ec2")
    out = [a for a in out if not (":instance/" in a and ec2.describe_instances(InstanceIds=[a.rsplit("/", 1)[1]])
                                  ["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated")]
    iam = aws(moto_url, "iam")
    out += [r["Arn"] for r in iam.list_roles()["Roles"]
            if {"Key": "airstrip:environment", "Value": ENV} in iam.list_role_tags(RoleName=r["RoleName"])["Tags"]]
    out += [p["Arn"] for p in iam.list_instance_profiles()["InstanceProfiles"] if p["InstanceProfileName"].startswith(f"airstrip-{ENV}")]
    out += ["bucket " + b["Name"] for b in aws(moto_url, "s3").list_buckets()["Buckets"] if b["Name"] == SPEC["source"]["bucket"]]
    # The alias stays with a key pending deletion (so a create within the window gets it back).
    out += [a["AliasName"] for a in kms.list_aliases()["Aliases"] if a["AliasName"] == f"alias/airstrip-{ENV}"
            and kms.describe_key(KeyId=a["TargetKeyId"])["KeyMetadata"]["KeyState"] != "PendingDeletion"]
    return sorted(out)


def test_delete_keeps_the_bucket_and_key_unless_told_and_leaves_nothing_tagged(moto_url, spec_file):
    delete = [ROOT / "playbooks" / "delete.yml", moto_url, spec_file]
    before = tagged(moto_url)
    assert any(":vpc/" in a for a in before) and any(":role/" in a for a in before), "\n".join(before)

    playbook(*delete)
    left = tagged(moto_url)
    assert "bucket " + SPEC["source"]["bucket"] in left and f"alias/airstrip-{ENV}" in left, left
    assert not [a for a in left if ":ec2:" in a or ":iam:" in a], left

    assert len(secret_values(moto_url)) == 6  # kept with the data

    playbook(*delete, "-e", "airstrip_delete_data=true")
    assert tagged(moto_url) == []
    assert secret_values(moto_url) == {}
    assert not aws(moto_url, "ec2").describe_vpcs(Filters=[{"Name": "tag:airstrip:environment", "Values": [ENV]}])["Vpcs"]


def test_bucket_of_another_region_is_refused_before_anything_is_made(moto_url, tmp_path):
    aws(moto_url, "s3").create_bucket(Bucket="itest-eu-bucket",
                                      CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    spec = dict(SPEC, name="itest-region", source={"bucket": "itest-eu-bucket", "dag_s3_path": "dags"})
    spec_file = tmp_path / "environment.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           str(ROOT / "playbooks" / "create.yml"), "-e", f"airstrip_spec_file={spec_file}",
                           "-e", f"airstrip_aws_endpoint_url={moto_url}", "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode != 0
    assert ("source.bucket: itest-eu-bucket is in region eu-west-1, but the environment is in us-east-1"
            in proc.stdout), proc.stdout[-3000:]
    assert not [r for r in aws(moto_url, "iam").list_roles()["Roles"] if "itest-region" in r["RoleName"]]
    assert not aws(moto_url, "ec2").describe_vpcs(
        Filters=[{"Name": "tag:airstrip:environment", "Values": ["itest-region"]}])["Vpcs"]


def test_secrets_of_an_environment_off_aws_in_secrets_manager(moto_url, tmp_path, monkeypatch):
    """airstrip.secrets_backend aws_secrets_manager on an on-prem environment: only the secrets are
    made (nothing else of the AWS side), once, and removed only with the data. Those the
    environment kept in the controller's vault file before are taken over, not made anew."""
    env_name = "itest-hybrid"
    spec_file = tmp_path / "environment.yml"
    spec_file.write_text(yaml.safe_dump({"name": env_name, "airstrip": {"secrets_backend": "aws_secrets_manager"}}))
    password = tmp_path / "vault-password"
    password.write_text("hybrid vault\n")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    vault_file = tmp_path / "secrets.yml"
    vault_file.write_bytes(VaultLib([("default", VaultSecret(b"hybrid vault"))]).encrypt(
        yaml.safe_dump({"db_password": "KeptDbPassword0123456789", "fernet_seed": "KeptFernetSeed" * 3})))
    run = [ROOT / "tests" / "integration" / "aws" / "hybrid.yml", moto_url, spec_file,
           "-e", f"airstrip_secrets_file={vault_file}"]
    sm = aws(moto_url, "secretsmanager")

    def values():
        return {s["Name"].rsplit("/", 1)[1]: sm.get_secret_value(SecretId=s["Name"])["SecretString"]
                for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [f"airstrip/{env_name}/"]}])["SecretList"]}

    assert changed_tasks(playbook(*run))
    first = values()
    assert sorted(first) == ["admin_password", "api_secret_key", "broker_password", "db_password", "fernet_seed",
                             "jwt_secret"]
    assert first["db_password"] == "KeptDbPassword0123456789" and first["fernet_seed"] == "KeptFernetSeed" * 3
    assert len(first["jwt_secret"]) == 48
    assert changed_tasks(playbook(*run)) == [] and values() == first
    assert not [r for r in aws(moto_url, "iam").list_roles()["Roles"] if env_name in r["RoleName"]]
    assert not aws(moto_url, "ec2").describe_vpcs(
        Filters=[{"Name": "tag:airstrip:environment", "Values": [env_name]}])["Vpcs"]

    playbook(*run, "-e", "airstrip_aws_state=absent")
    assert values() == first
    playbook(*run, "-e", "airstrip_aws_state=absent", "-e", "airstrip_delete_data=true")
    assert values() == {}
