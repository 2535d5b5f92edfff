"""The README's main job: a complete local Airflow environment on three local test hosts.

  local_env.py up [ENV]    hosts + emulated AWS + the create playbook with local/ENV/environment.yml,
                           then where the UI, the logs and the metrics are
  local_env.py down [ENV]  remove the hosts, their network and the emulated AWS
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "harness" / "testhosts.py"
LAYOUT = [
    "control:airflow_metadata_db,airflow_broker,airflow_scheduler,airflow_dag_processor,airflow_triggerer",
    "web:airflow_webserver",
    "worker:airflow_worker",
    "worker2:airflow_worker",
]


def seed_bucket(endpoint: str, bucket: str) -> None:
    """The environment's DAG bucket in the emulated S3, versioned, with a first DAG (kept if there)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for dag in sorted((ROOT / "tests" / "harness" / "local_dags").glob("*.py")):
        key = f"dags/{dag.name}"
        if s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0:
            s3.put_object(Bucket=bucket, Key=key, Body=dag.read_bytes())


def spec(env: str, bucket: str, endpoint: str) -> dict:
    """The local environment's spec: one host of each kind and two workers, scaled between 1 and
    2, DAGs from the emulated S3, logs and metrics in the emulated CloudWatch (the agent off:
    its package is not to be had here)."""
    return {
        "name": env,
        "min_workers": 1, "max_workers": 2, "schedulers": 1, "min_webservers": 1, "max_webservers": 1,
        "source": {"bucket": bucket, "dag_s3_path": "dags", "endpoint_url": endpoint, "region": "us-east-1"},
        "airstrip": {"endpoint_url": endpoint, "region": "us-east-1",
                     "cloudwatch": {"enabled": True, "agent": False}, "prometheus": True, "scaling": True},
    }


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "up"
    env = argv[1] if len(argv) > 1 else "local"
    if action == "down":
        return subprocess.call([sys.executable, str(HARNESS), "down", env])
    if action != "up":
        print(__doc__, file=sys.stderr)
        return 2
    inventory = ROOT / "local" / env / "inventory.json"
    rc = subprocess.call([sys.executable, str(HARNESS), "up", env, *LAYOUT, "--moto",
                          "--inventory", str(inventory)], stdout=subprocess.DEVNULL)
    if rc:
        return rc
    inv = json.loads(inventory.read_text())["all"]
    endpoint = inv["vars"]["airstrip_test_aws_endpoint"]
    bucket = "airstrip-" + env.lower().replace("_", "-")
    seed_bucket(endpoint, bucket)
    spec_file = inventory.parent / "environment.yml"
    spec_file.write_text(json.dumps(spec(env, bucket, endpoint), indent=2) + "\n")
    # The emulated AWS takes any key.
    keys = {"airstrip_s3_access_key": "testing", "airstrip_s3_secret_key": "testing",
            "airstrip_aws_access_key": "testing", "airstrip_aws_secret_key": "testing"}
    playbook = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                str(ROOT / "playbooks" / "create.yml"), "-e", f"airstrip_spec_file={spec_file}", "-e", json.dumps(keys)]
    rc = subprocess.call(playbook, cwd=ROOT, env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    if rc:
        print(f"\nThe deploy failed (exit {rc}); the messages above name the problem. "
              f"Run 'make up' again once it is fixed: it resumes where it stopped.", file=sys.stderr)
        return rc
    web = inv["hosts"]["web"]["ansible_host"]
    control = inv["hosts"]["control"]["ansible_host"]
    secrets = Path.home() / ".airstrip" / env / "secrets.yml"
    vault_view = f"{Path(sys.executable).parent / 'ansible-vault'} view {secrets}"
    print(f"""
Airflow is up ({env}): control, web, worker and worker2 hosts on docker network airstrip-{env}.
  UI and REST API: http://{web}:8080/
  user:            admin
  password:        admin_password in the vault file {secrets}; show it with
                   ANSIBLE_VAULT_PASSWORD_FILE={os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE", "~/.airstrip/vault-password")} {vault_view}
  emulated AWS:    {endpoint}  (any access key)
  DAGs:            upload to s3://{bucket}/dags/ there; every DAG host has them within seconds, e.g.
                   AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url {endpoint} \\
                     s3 cp my_dag.py s3://{bucket}/dags/
  task logs:       in the emulated CloudWatch, group airflow-{env}-Task (the UI reads them from there):
                   ... aws --endpoint-url {endpoint} --region us-east-1 logs describe-log-streams \\
                     --log-group-name airflow-{env}-Task
  metrics:         MWAA's names in namespace Airstrip/{env} (published every minute):
                   ... aws --endpoint-url {endpoint} --region us-east-1 cloudwatch list-metrics \\
                     --namespace Airstrip/{env}
                   and as Prometheus text from the environment's hosts: curl http://{control}:9102/metrics
  scaling:         one worker runs, the second starts when more tasks wait than 5 slots hold and
                   drains 5 minutes after; the scaler's decisions: journalctl -u airstrip-scaler on
                   control, its view (and the environment's status) from: make info
  component logs:  journalctl -u 'airflow-*' on each host (the CloudWatch agent, which ships them to
                   airflow-{env}-Scheduler etc., needs its package: see the README, "Logs and metrics")
  spec:            {spec_file}
  inventory:       {inventory}
  SSH to a host:   ssh -i {inv['vars']['ansible_ssh_private_key_file']} root@{web}
Tear it down with: make down""")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
