#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: s3_sync
short_description: Bring a local folder up to date with an S3 prefix, downloading only what changed
version_added: 0.1.0
description:
  - Lists O(prefix) of O(bucket) with ListObjectsV2 (every page), compares each object's ETag and size
    with a manifest of the previous sync kept in O(dest), and downloads only new and changed objects,
    several at a time, each to a temporary name that is then renamed, so a reader never sees half a file.
  - With O(delete), files this module synced earlier whose objects are gone from S3 are deleted; files
    it did not put there are left alone.
  - A listing that fails (AccessDenied, NoSuchBucket, no network) fails the task and changes nothing.
  - Works with SSE-KMS encrypted objects and with any S3-compatible endpoint (O(endpoint_url)).
    Throttling and network errors are retried with backoff.
  - The DAG sync agent that the C(airstrip.airflow.dag_sync) role runs on every DAG host uses the
    same engine, every few seconds.
author:
  - Airstrip developers (@airstrip)
options:
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  prefix:
    description: Key prefix (folder) to sync, such as C(dags); empty for the whole bucket.
    type: str
    default: ""
  dest:
    description: Local folder to bring up to date; created when missing.
    type: path
    required: true
  delete:
    description: Delete local files synced earlier whose objects were deleted from S3.
    type: bool
    default: true
  workers:
    description: Downloads at a time.
    type: int
    default: 16
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - airstrip.airflow.attributes
  - airstrip.airflow.attributes.all
attributes:
  check_mode:
    details: Lists the prefix and reports what would change, downloading and deleting nothing.
  diff_mode:
    details:
      - The paths added, updated and deleted, one per line marked C(+), C(~) and C(-) (the files' contents
        are not compared line by line).
"""

EXAMPLES = r"""
- name: Bring the DAG folder up to date with the environment's bucket
  airstrip.airflow.s3_sync:
    bucket: my-airflow-bucket
    prefix: dags
    dest: /var/lib/airflow/dags
    region: eu-west-1

- name: From an S3-compatible store on premises
  airstrip.airflow.s3_sync:
    bucket: airflow
    prefix: dags
    dest: /srv/dags
    endpoint_url: https://s3.storage.example.internal
    access_key: "{{ vault_s3_access_key }}"
    secret_key: "{{ vault_s3_secret_key }}"
"""

RETURN = r"""
added:
  description: Paths (relative to O(dest)) downloaded for the first time.
  returned: always
  type: list
  elements: str
  sample: [etl/daily.py]
updated:
  description: Paths downloaded again because their object changed.
  returned: always
  type: list
  elements: str
deleted:
  description: Paths deleted because their object is gone.
  returned: always
  type: list
  elements: str
counts:
  description: How many files were added, updated, deleted and left unchanged.
  returned: always
  type: dict
  sample: {added: 1, updated: 0, deleted: 0, unchanged: 41}
bytes:
  description: Bytes downloaded (in check mode, that would be).
  returned: always
  type: int
skipped:
  description: Keys under the prefix that are not synced because their path would leave O(dest) or is reserved.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.airstrip.airflow.plugins.module_utils import _s3sync


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            dest=dict(type="path", required=True),
            delete=dict(type="bool", default=True),
            workers=dict(type="int", default=16),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["workers"] < 1:
        module.fail_json(msg="workers must be 1 or more, got %d" % p["workers"])
    client = module.client("s3", config=_s3sync.client_config(p["workers"]))
    try:
        result = _s3sync.sync(client, p["bucket"], p["prefix"], p["dest"], delete=p["delete"],
                              workers=p["workers"], check_mode=module.check_mode)
    except _s3sync.SyncError as e:
        module.fail_json(msg=str(e))
    counts = dict(added=len(result["added"]), updated=len(result["updated"]), deleted=len(result["deleted"]),
                  unchanged=result["unchanged"])
    out = dict(changed=_s3sync.changed(result), added=result["added"], updated=result["updated"],
               deleted=result["deleted"], counts=counts, bytes=result["bytes"], skipped=result["skipped"])
    if module._diff:
        out["diff"] = dict(before_header=p["dest"], after_header="s3://%s/%s" % (p["bucket"], _s3sync.normalize_prefix(p["prefix"])),
                           prepared="".join("%s %s\n" % (mark, path) for mark, key in (("+", "added"), ("~", "updated"), ("-", "deleted"))
                                            for path in sorted(result[key])))
    if result["failed"]:
        module.fail_json(msg="could not download %d file(s) from s3://%s/%s: %s" % (
            len(result["failed"]), p["bucket"], _s3sync.normalize_prefix(p["prefix"]),
            "; ".join("%s: %s" % kv for kv in sorted(result["failed"].items())[:5])), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
