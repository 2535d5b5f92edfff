"""The AWS side of an environment against the emulated AWS, through playbooks/aws.yml itself
(after read_spec.yml, as create runs them: its order and wiring are the ones under test), four
times as amazon.aws tests its modules: check mode (each resource reports a change, nothing is
made), for real (each resource is made), check mode again and for real again (no change).
Then the delete leaves nothing tagged with the environment. An environment with the user's own
execution role (execution_role_arn) goes through the same four runs and the delete, and its
role is used as it is and left."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import loopback_moto
import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

ROOT = Path(__file__).resolve().parents[2]
ENV = "itest-aws"
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
def ami_id(moto_url):
    """An AMI the emulated EC2 knows (it ships a list of public ones), in SPEC."""
    images = aws(moto_url, "ec2").describe_images(Owners=["amazon"])["Images"]
    SPEC["airstrip"]["ec2"]["ami_id"] = sorted(i["ImageId"] for i in images if i.get("RootDeviceName"))[0]
    return SPEC["airstrip"]["ec2"]["ami_id"]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, ami_id):
    path = tmp_path_factory.mktemp("aws") / "environment.yml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def playbook(path, moto_url, spec_file, *extra):
    # The emulated AWS's credentials also for the module-scoped runs, set up before the
    # function-scoped aws_credentials fixture.
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", **loopback_moto.CREDENTIALS)
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(path),
                           "-e", f"airstrip_spec_file={spec_file}", "-e", f"airstrip_aws_endpoint_url={moto_url}",
                           "-e", f"ansible_python_interpreter={sys.executable}", *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def changed_tasks(result):
    """Names of every changed task of a playbook's JSON result."""
    return [t["task"]["name"] for play in result["plays"] for t in play["tasks"]
            if any(h.get("changed") for h in t["hosts"].values())]


def aws(moto_url, service):
    return boto3.client(service, endpoint_url=moto_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def instances(moto_url, env=ENV):
    reservations = aws(moto_url, "ec2").describe_instances(Filters=[
        {"Name": "tag:airstrip:environment", "Values": [env]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    return sorted({t["Key"]: t["Value"] for t in i["Tags"]}["airstrip:host"] for r in reservations for i in r["Instances"])


def role_names(moto_url):
    return [r["RoleName"] for r in aws(moto_url, "iam").list_roles()["Roles"]]


def profile_roles(moto_url, env=ENV):
    """The roles in the environment's instance profile, or None when there is no profile."""
    profiles = [p for p in aws(moto_url, "iam").list_instance_profiles()["InstanceProfiles"]
                if p["InstanceProfileName"] == f"airstrip-{env}-execution"]
    return [r["RoleName"] for r in profiles[0]["Roles"]] if profiles else None


def env_vpcs(moto_url, env=ENV):
    return aws(moto_url, "ec2").describe_vpcs(Filters=[{"Name": "tag:airstrip:environment", "Values": [env]}])["Vpcs"]


ROLE = "airstrip.airflow."
LOG_GROUP_TYPES = ("DAGProcessing", "Scheduler", "Task", "WebServer", "Worker")
# Each resource of the AWS side: the task that reports it in check mode and the one that makes
# it (the same unless its module has no check mode), and whether it is there.
RESOURCES = {
    "iam role": (ROLE + "iam : Create the execution role", None,
                 lambda url: f"airstrip-{ENV}-execution" in role_names(url)),
    "instance profile": (ROLE + "iam : Create the instance profile of the environment's EC2 hosts, holding the role", None,
                         lambda url: profile_roles(url) == [f"airstrip-{ENV}-execution"]),
    "kms key": (ROLE + "kms : Create the environment's customer managed key", None,
                lambda url: any(a["AliasName"] == f"alias/airstrip-{ENV}" for a in aws(url, "kms").list_aliases()["Aliases"])),
    "s3 bucket": (ROLE + "s3_bucket : In check mode, report what the bucket would get",
                  ROLE + "s3_bucket : Create or update the environment's bucket",
                  lambda url: any(b["Name"] == SPEC["source"]["bucket"] for b in aws(url, "s3").list_buckets()["Buckets"])),
    "iam policy": (ROLE + "iam : In check mode, report that the new role would get its policy",
                   ROLE + "iam : Give the role what the environment needs, and no more",
                   lambda url: f"airstrip-{ENV}-execution" in role_names(url) and aws(url, "iam").list_role_policies(
                       RoleName=f"airstrip-{ENV}-execution")["PolicyNames"] == [f"airstrip-{ENV}"]),
    "secrets": (ROLE + "secrets_manager : Keep each of the environment's secrets in Secrets Manager, encrypted with its key", None,
                lambda url: bool(secret_values(url))),
    "vpc": (ROLE + "vpc : Create the VPC", None, lambda url: bool(env_vpcs(url))),
    "security group": (ROLE + "vpc : Create the environment's security group", None,
                       lambda url: bool(aws(url, "ec2").describe_security_groups(Filters=[
                           {"Name": "group-name", "Values": [f"airstrip-{ENV}"]}])["SecurityGroups"])),
    "ec2 hosts": ("In check mode, report that the EC2 hosts would be run",
                  ROLE + "ec2_hosts : Run each host of the environment", lambda url: bool(instances(url))),
    # On by default on AWS (airstrip.cloudwatch): MWAA's five groups, the error-pattern metric filters, the alarms.
    "log groups": (ROLE + "cloudwatch : Make the log groups", None,
                   lambda url: sorted(log_groups(url)) == [f"airflow-{ENV}-{t}" for t in LOG_GROUP_TYPES]),
    "metric filters": (ROLE + "cloudwatch : Count MWAA's error patterns in the logs", None,
                       lambda url: len(metric_filters(url)) == 6),
    "alarms": (ROLE + "cloudwatch : Alarms on the environment's health", None, lambda url: len(alarms(url)) == 3),
}


def log_groups(moto_url, env=ENV):
    return {g["logGroupName"]: g for g in aws(moto_url, "logs").describe_log_groups(
        logGroupNamePrefix=f"airflow-{env}-")["logGroups"]}


def metric_filters(moto_url, env=ENV):
    logs = aws(moto_url, "logs")
    return [f for g in log_groups(moto_url, env) for f in logs.describe_metric_filters(logGroupName=g)["metricFilters"]]


def alarms(moto_url, env=ENV):
    return aws(moto_url, "cloudwatch").describe_alarms(AlarmNamePrefix=f"airstrip-{env}-")["MetricAlarms"]


def four_runs(moto_url, spec_file, exists):
    """read_spec.yml and aws.yml in check mode, for real, in check mode and for real again; with
    what exists (exists(): resource -> bool) after the first and the second."""
    run = [ROOT / "tests" / "integration" / "aws" / "read_spec_and_aws.yml", moto_url, spec_file]
    out = {"check": playbook(*run, "--check")}
    out["after check"] = exists()
    out["real"] = playbook(*run)
    out["after real"] = exists()
    out["check again"] = playbook(*run, "--check")
    out["real again"] = playbook(*run)
    return out


@pytest.fixture(scope="module")
def runs(moto_url, spec_file):
    return four_runs(moto_url, spec_file, lambda: dict({name: r[2](moto_url) for name, r in RESOURCES.items()},
                                                       secrets=secret_values(moto_url)))


@pytest.mark.parametrize("resource", RESOURCES)
def test_each_resource_four_times(runs, resource):
    check_task, real_task, _exists = RESOURCES[resource]
    assert check_task in changed_tasks(runs["check"]), "check mode reported no change"
    assert not runs["after check"][resource], "check mode made it"
    assert (real_task or check_task) in changed_tasks(runs["real"]), "the real run reported no change"
    assert runs["after real"][resource], "the real run did not make it"


def test_the_runs_after_the_first_change_nothing(runs):
    assert not any(runs["after check"].values()), runs["after check"]
    assert set(runs["after check"]) == set(RESOURCES) | {"secrets"}
    assert changed_tasks(runs["check again"]) == []
    assert changed_tasks(runs["real again"]) == []


def test_secrets_are_generated_once_encrypted_with_the_key(moto_url, runs):
    sm = aws(moto_url, "secretsmanager")
    key = aws(moto_url, "kms").describe_key(KeyId=f"alias/airstrip-{ENV}")["KeyMetadata"]["Arn"]
    secrets = sm.list_secrets(Filters=[{"Key": "name", "Values": [f"airstrip/{ENV}/"]}])["SecretList"]
    assert sorted(s["Name"].rsplit("/", 1)[1] for s in secrets) == [
        "admin_password", "api_secret_key", "broker_password", "db_password", "fernet_seed", "jwt_secret"]
    assert {s["KmsKeyId"] for s in secrets} == {key}
    # Generated once: the runs after the first kept the values.
    first = runs["after real"]["secrets"]
    assert secret_values(moto_url) == first
    assert len(first["admin_password"]) == 20 and first["admin_password"].isalnum()


def test_ec2_hosts_in_the_vpc_with_the_profile_and_encrypted_volumes(moto_url, runs):
    # One instance per host the spec asks for, found again (not doubled) by the later runs,
    # and in the inventory groups of their role for the deploy that follows.
    assert instances(moto_url) == ["control-0", "scheduler-0", "scheduler-1", "webserver-0", "worker-0", "worker-1"]
    groups = next(t for play in runs["check again"]["plays"] for t in play["tasks"]
                  if t["task"]["name"] == "The inventory groups")["hosts"]["localhost"]["msg"]
    assert groups["airflow_scheduler"] == [f"airstrip-{ENV}-scheduler-0", f"airstrip-{ENV}-scheduler-1"]
    assert groups["airflow_worker"] == [f"airstrip-{ENV}-worker-0", f"airstrip-{ENV}-worker-1"]
    assert groups["airflow_metadata_db"] == groups["airflow_broker"] == [f"airstrip-{ENV}-control-0"]
    ec2 = aws(moto_url, "ec2")
    vpc = env_vpcs(moto_url)[0]["VpcId"]
    private = {s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
               if {"Key": "airstrip:tier", "Value": "private"} in s.get("Tags", [])}
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"airstrip-{ENV}"]}])["SecurityGroups"][0]
    hosts = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:airstrip:environment", "Values": [ENV]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"] for i in r["Instances"]]
    # The wiring of aws.yml: the vpc role's private subnets and security group, the iam role's profile.
    assert len(private) == 2 and {i["SubnetId"] for i in hosts} == private
    assert {tuple(g["GroupId"] for g in i["SecurityGroups"]) for i in hosts} == {(group["GroupId"],)}
    assert {i["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for i in hosts} == {f"airstrip-{ENV}-execution"}
    # Every root volume is encrypted with the environment's key.
    key = aws(moto_url, "kms").describe_key(KeyId=f"alias/airstrip-{ENV}")["KeyMetadata"]["Arn"]
    ids = [i["InstanceId"] for i in hosts]
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
    assert len(volumes) == len(ids) == 6
    assert {(v["Encrypted"], v.get("KmsKeyId"), v["Size"], v["VolumeType"]) for v in volumes} == {(True, key, 30, "gp3")}


def test_log_groups_keep_30_days_encrypted_with_the_key_and_tagged(moto_url, runs):
    key = aws(moto_url, "kms").describe_key(KeyId=f"alias/airstrip-{ENV}")["KeyMetadata"]["Arn"]
    logs = aws(moto_url, "logs")
    for name, group in log_groups(moto_url).items():
        assert (group.get("retentionInDays"), group.get("kmsKeyId")) == (30, key), name
        assert logs.list_tags_log_group(logGroupName=name)["tags"] == {"airstrip:environment": ENV, "team": "platform"}


def test_metric_filters_count_mwaa_error_patterns_and_alarms_watch_the_metrics(moto_url, runs):
    filters = {f["filterName"]: f for f in metric_filters(moto_url)}
    assert filters["DagImportTimeout"]["logGroupName"] == f"airflow-{ENV}-DAGProcessing"
    assert filters["TaskTimeout"]["logGroupName"] == f"airflow-{ENV}-Task"
    assert {t["metricNamespace"] for f in filters.values() for t in f["metricTransformations"]} == {f"Airstrip/{ENV}"}
    by_name = {a["AlarmName"]: a for a in alarms(moto_url)}
    heartbeat = by_name[f"airstrip-{ENV}-scheduler-heartbeat"]
    assert (heartbeat["MetricName"], heartbeat["Statistic"], heartbeat["Period"] * heartbeat["EvaluationPeriods"]) == \
        ("SchedulerHeartbeat", "Sum", 300)
    assert {d["Name"]: d["Value"] for d in heartbeat["Dimensions"]} == {"Environment": ENV, "Function": "Scheduler"}
    # Queued above capacity: max_workers 2 x mw1.small's 5 slots.
    queued = by_name[f"airstrip-{ENV}-queued-tasks"]
    assert (queued["Threshold"], queued["Period"] * queued["EvaluationPeriods"]) == (10.0, 600)


def test_the_policy_lets_task_logs_find_their_group_and_metrics_in_the_namespace(moto_url, runs):
    iam = aws(moto_url, "iam")
    doc = iam.get_role_policy(RoleName=f"airstrip-{ENV}-execution", PolicyName=f"airstrip-{ENV}")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    sids = {s["Sid"]: s for s in doc["Statement"]}
    assert sids["FindTheEnvironmentLogGroups"]["Action"] == "logs:DescribeLogGroups"
    assert sids["WriteTheEnvironmentMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": f"Airstrip/{ENV}"}}


def test_the_policy_lets_the_scaler_start_and_stop_the_environment_workers_only(moto_url, runs):
    iam = aws(moto_url, "iam")
    doc = iam.get_role_policy(RoleName=f"airstrip-{ENV}-execution", PolicyName=f"airstrip-{ENV}")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    sids = {s["Sid"]: s for s in doc["Statement"]}
    account = aws(moto_url, "sts").get_caller_identity()["Account"]
    assert (sids["FindTheWorkerInstances"]["Action"], sids["FindTheWorkerInstances"]["Resource"]) == \
        ("ec2:DescribeInstances", "*")
    assert sids["StartAndStopTheEnvironmentWorkers"] == {
        "Sid": "StartAndStopTheEnvironmentWorkers", "Effect": "Allow", "Action": ["ec2:StartInstances", "ec2:StopInstances"],
        "Resource": f"arn:aws:ec2:us-east-1:{account}:instance/*",
        "Condition": {"StringEquals": {"aws:ResourceTag/airstrip:environment": ENV, "aws:ResourceTag/airstrip:role": "worker"}}}
    # The tag it admits is the one the worker instances carry, and the scaler gets their ids.
    workers = dict((i["tags"]["Name"], i["id"]) for i in tagged_instances(moto_url) if i["tags"].get("airstrip:role") == "worker")
    assert sorted(workers) == [f"airstrip-{ENV}-worker-0", f"airstrip-{ENV}-worker-1"]
    given = next(t for play in runs["real again"]["plays"] for t in play["tasks"]
                 if t["task"]["name"] == "The worker instances")["hosts"]["localhost"]["msg"]
    assert given == workers
    key = aws(moto_url, "kms").describe_key(KeyId=f"alias/airstrip-{ENV}")["KeyMetadata"]["Arn"]
    assert sids["LetEC2UseTheKeyForTheWorkerVolumes"]["Resource"] == key
    assert sids["LetEC2UseTheKeyForTheWorkerVolumes"]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def tagged_instances(moto_url, env=ENV):
    reservations = aws(moto_url, "ec2").describe_instances(Filters=[
        {"Name": "tag:airstrip:environment", "Values": [env]}])["Reservations"]
    return [{"id": i["InstanceId"], "tags": {t["Key"]: t["Value"] for t in i["Tags"]}}
            for r in reservations for i in r["Instances"] if i["State"]["Name"] in ("pending", "running")]


def test_the_key_policy_names_the_execution_role(moto_url, runs):
    role_arn = aws(moto_url, "iam").get_role(RoleName=f"airstrip-{ENV}-execution")["Role"]["Arn"]
    assert key_policy_roles(moto_url, ENV) == [role_arn]


def test_the_ec2_hosts_get_the_spec_for_the_deploy(runs):
    """Each EC2 host aws.yml adds to the inventory has the spec's settings for the deploy that follows."""
    settings = next(t for play in runs["real again"]["plays"] for t in play["tasks"] if t["task"]["name"] == "Their settings")
    hosts = settings["hosts"]
    names = ("control-0", "scheduler-0", "scheduler-1", "worker-0", "worker-1")
    assert sorted(hosts) == [f"airstrip-{ENV}-{h}" for h in names]
    for name, r in hosts.items():
        assert r["msg"] == {"env_name": ENV, "secrets_backend": "aws_secrets_manager", "airflow_version": "3.3.2",
                            "dag_sync_bucket": SPEC["source"]["bucket"], "region": "us-east-1"}, (name, r)


def key_policy_roles(moto_url, env):
    """The role ARNs the environment's key policy lets use the key."""
    kms = aws(moto_url, "kms")
    key = kms.describe_key(KeyId=f"alias/airstrip-{env}")["KeyMetadata"]["KeyId"]
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    principal = next(s for s in policy["Statement"] if s.get("Sid") == "EnvironmentRolesUse")["Principal"]["AWS"]
    return [principal] if isinstance(principal, str) else principal


def secret_values(moto_url, env=ENV):
    sm = aws(moto_url, "secretsmanager")
    return {s["Name"].rsplit("/", 1)[1]: sm.get_secret_value(SecretId=s["Name"])["SecretString"]
            for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [f"airstrip/{env}/"]}])["SecretList"]}


def tagged(moto_url, env=ENV, bucket=SPEC["source"]["bucket"]):
    """Every resource still tagged airstrip:environment=env (a key pending deletion is gone)."""
    tag = {"Key": "airstrip:environment", "Values": [env]}
    pages = aws(moto_url, "resourcegroupstaggingapi").get_paginator("get_resources").paginate(TagFilters=[tag])
    out = [r["ResourceARN"] for page in pages for r in page["ResourceTagMappingList"]]
    kms = aws(moto_url, "kms")
    out = [a for a in out if not (":kms:" in a and kms.describe_key(KeyId=a)["KeyMetadata"]["KeyState"] == "PendingDeletion")]
    # A terminated instance lingers (as on AWS) with its tags: it is gone.
    ec2 = aws(moto_url, "ec2")
    out = [a for a in out if not (":instance/" in a and ec2.describe_instances(InstanceIds=[a.rsplit("/", 1)[1]])
                                  ["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated")]
    iam = aws(moto_url, "iam")
    out += [r["Arn"] for r in iam.list_roles()["Roles"]
            if {"Key": "airstrip:environment", "Value": env} in iam.list_role_tags(RoleName=r["RoleName"])["Tags"]]
    out += [p["Arn"] for p in iam.list_instance_profiles()["InstanceProfiles"] if p["InstanceProfileName"].startswith(f"airstrip-{env}")]
    out += ["bucket " + b["Name"] for b in aws(moto_url, "s3").list_buckets()["Buckets"] if b["Name"] == bucket]
    # The alias stays with a key pending deletion (so a create within the window gets it back).
    out += [a["AliasName"] for a in kms.list_aliases()["Aliases"] if a["AliasName"] == f"alias/airstrip-{env}"
            and kms.describe_key(KeyId=a["TargetKeyId"])["KeyMetadata"]["KeyState"] != "PendingDeletion"]
    return sorted(out)


def test_delete_keeps_the_bucket_and_key_unless_told_and_leaves_nothing_tagged(moto_url, spec_file, runs):
    delete = [ROOT / "playbooks" / "delete.yml", moto_url, spec_file]
    before = tagged(moto_url)
    assert any(":vpc/" in a for a in before) and any(":role/" in a for a in before), "\n".join(before)

    playbook(*delete)
    assert alarms(moto_url) == []
    assert len(log_groups(moto_url)) == 5  # the logs are data
    left = tagged(moto_url)
    assert "bucket " + SPEC["source"]["bucket"] in left and f"alias/airstrip-{ENV}" in left, left
    assert not [a for a in left if ":ec2:" in a or ":iam:" in a], left

    assert len(secret_values(moto_url)) == 6  # kept with the data

    playbook(*delete, "-e", "airstrip_delete_data=true")
    assert log_groups(moto_url) == {}
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


USER_ENV = "itest-byo"
USER_ROLE = "itest-user-role"


def user_spec(moto_url, tmp_path, role_arn, ami_id):
    """An environment of the user's execution role, in a network of the user's (made here)."""
    ec2 = aws(moto_url, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.50.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for i, z in enumerate("ab")]
    group = ec2.create_security_group(GroupName=f"{USER_ENV}-user", Description="the user's", VpcId=vpc)["GroupId"]
    spec = dict(SPEC, name=USER_ENV, execution_role_arn=role_arn, max_workers=1,
                airstrip=dict(SPEC["airstrip"], ec2={"ami_id": ami_id}),
                source={"bucket": f"{USER_ENV}-airflow", "dag_s3_path": "dags"},
                network={"subnet_ids": subnets, "security_group_ids": [group]})
    path = tmp_path / "environment.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def make_user_role(moto_url, name, services):
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": services}, "Action": "sts:AssumeRole"}]}
    return aws(moto_url, "iam").create_role(RoleName=name, Path="/team/", AssumeRolePolicyDocument=json.dumps(trust),
                                            Tags=[{"Key": "owner", "Value": "the user"}])["Role"]["Arn"]


@pytest.fixture(scope="module")
def user_role(moto_url):
    # As MWAA's execution roles are, and EC2 too (the hosts assume it).
    return make_user_role(moto_url, USER_ROLE, ["airflow.amazonaws.com", "airflow-env.amazonaws.com", "ec2.amazonaws.com"])


def user_role_state(moto_url):
    """What Airstrip must never change on the user's role: its policies, trust and tags."""
    iam = aws(moto_url, "iam")
    role = iam.get_role(RoleName=USER_ROLE)["Role"]
    return {"inline": iam.list_role_policies(RoleName=USER_ROLE)["PolicyNames"],
            "attached": iam.list_attached_role_policies(RoleName=USER_ROLE)["AttachedPolicies"],
            "trust": role["AssumeRolePolicyDocument"], "tags": iam.list_role_tags(RoleName=USER_ROLE)["Tags"]}


@pytest.mark.parametrize("problem", ["no such role", "not trusted by EC2"])
def test_a_user_execution_role_that_does_not_do_fails_before_anything_is_made(moto_url, tmp_path, ami_id, problem):
    account = aws(moto_url, "sts").get_caller_identity()["Account"]
    if problem == "no such role":
        arn, message = f"arn:aws:iam::{account}:role/team/no-such-role", "no such role in the account of these credentials"
    else:
        arn = make_user_role(moto_url, "itest-mwaa-only-role", ["airflow.amazonaws.com", "airflow-env.amazonaws.com"])
        message = "its trust policy does not let ec2.amazonaws.com assume it"
    spec_file = user_spec(moto_url, tmp_path, arn, ami_id)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           str(ROOT / "tests" / "integration" / "aws" / "read_spec_and_aws.yml"),
                           "-e", f"airstrip_spec_file={spec_file}", "-e", f"airstrip_aws_endpoint_url={moto_url}",
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode != 0
    assert f"execution_role_arn {arn}: {message}" in proc.stdout, proc.stdout[-3000:]
    assert "leave execution_role_arn out" in proc.stdout
    assert tagged(moto_url, USER_ENV, f"{USER_ENV}-airflow") == []
    assert profile_roles(moto_url, USER_ENV) is None and not secret_values(moto_url, USER_ENV)


def test_a_user_execution_role_is_used_as_it_is_and_left_by_the_delete(moto_url, tmp_path, ami_id, user_role):
    """execution_role_arn: no role of Airstrip's, no policy on the user's role (MWAA adds none
    either), but the hosts' instance profile holds it and the key policy names it; four runs as
    above, then the delete removes the profile and leaves the role."""
    spec_file = user_spec(moto_url, tmp_path, user_role, ami_id)
    before = user_role_state(moto_url)
    resources = {
        "instance profile": lambda: profile_roles(moto_url, USER_ENV) == [USER_ROLE],
        "kms key": lambda: any(a["AliasName"] == f"alias/airstrip-{USER_ENV}" for a in aws(moto_url, "kms").list_aliases()["Aliases"]),
        "ec2 hosts": lambda: instances(moto_url, USER_ENV) == ["control-0", "scheduler-0", "scheduler-1", "webserver-0", "worker-0"],
    }
    result = four_runs(moto_url, spec_file, lambda: {name: made() for name, made in resources.items()})
    assert result["after check"] == dict.fromkeys(resources, False)
    assert result["after real"] == dict.fromkeys(resources, True)
    for run in ("check", "real"):
        changed = changed_tasks(result[run])
        assert RESOURCES["instance profile"][0] in changed and RESOURCES["kms key"][0] in changed, (run, changed)
        assert RESOURCES["ec2 hosts"][0 if run == "check" else 1] in changed, (run, changed)
        assert not [name for name in changed if name in (RESOURCES["iam role"][0], RESOURCES["iam policy"][1])], (run, changed)
    assert changed_tasks(result["check again"]) == [] and changed_tasks(result["real again"]) == []

    assert f"airstrip-{USER_ENV}-execution" not in role_names(moto_url)
    assert user_role_state(moto_url) == before and before["inline"] == before["attached"] == []
    assert key_policy_roles(moto_url, USER_ENV) == [user_role]
    hosts = [i for r in aws(moto_url, "ec2").describe_instances(Filters=[
        {"Name": "tag:airstrip:environment", "Values": [USER_ENV]}])["Reservations"] for i in r["Instances"]]
    assert {i["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for i in hosts} == {f"airstrip-{USER_ENV}-execution"}

    playbook(ROOT / "playbooks" / "delete.yml", moto_url, spec_file, "-e", "airstrip_delete_data=true")
    assert tagged(moto_url, USER_ENV, f"{USER_ENV}-airflow") == []
    assert profile_roles(moto_url, USER_ENV) is None
    assert user_role_state(moto_url) == before
