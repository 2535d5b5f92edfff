"""The test-host harness refuses clearly, and its pure parts do what they say."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import namedtuple
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "harness" / "testhosts.py"
spec = importlib.util.spec_from_file_location("testhosts", PATH)
testhosts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(testhosts)

ARGS = argparse.Namespace()


def test_no_engine_and_not_root_says_what_to_do(monkeypatch):
    monkeypatch.setattr(testhosts, "engine_ok", lambda: False)
    monkeypatch.setattr(testhosts.os, "geteuid", lambda: 1000)
    with pytest.raises(testhosts.HarnessError, match="not root.*start a Docker engine"):
        testhosts.cmd_engine(ARGS)


def test_no_engine_off_debian_says_what_to_do(monkeypatch):
    monkeypatch.setattr(testhosts, "engine_ok", lambda: False)
    monkeypatch.setattr(testhosts.os, "geteuid", lambda: 0)
    monkeypatch.setattr(testhosts, "is_debian", lambda: False)
    with pytest.raises(testhosts.HarnessError, match="not Debian.*install and start a Docker engine"):
        testhosts.cmd_engine(ARGS)


def test_a_running_engine_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(testhosts, "engine_ok", lambda: True)
    monkeypatch.setattr(testhosts, "apt_install", lambda *a: pytest.fail("must not install"))
    testhosts.cmd_engine(ARGS)


def test_too_little_disk_for_the_image(monkeypatch, tmp_path):
    monkeypatch.setattr(testhosts, "cmd_engine", lambda args: None)
    monkeypatch.setattr(testhosts, "docker", lambda *a, **k: "")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(testhosts.shutil, "disk_usage", lambda p: usage(10, 10, 100 * 1024 ** 2))
    monkeypatch.setenv("AIRSTRIP_BUILD_DIR", str(tmp_path))
    with pytest.raises(testhosts.HarnessError, match="100 MiB free.*needs 2048 MiB"):
        testhosts.ensure_image(ARGS)


def test_image_tag_follows_the_recipe(monkeypatch):
    tag = testhosts.image_tag()
    assert tag.startswith("airstrip/debian-systemd:")
    monkeypatch.setattr(testhosts, "PACKAGES", testhosts.PACKAGES + ["vim"])
    assert testhosts.image_tag() != tag


def test_inventory_groups_and_connection(tmp_path):
    net = {"name": "n", "subnet": "172.29.30.0/24", "gateway": "172.29.30.1"}
    instances = [{"instance": "a", "address": "172.29.30.10"}, {"instance": "b", "address": "172.29.30.11"}]
    path = tmp_path / "inv.json"
    testhosts.write_inventory(path, ["a:g1,g2", "b:g2"], instances, Path("/k"), net)
    inv = json.loads(path.read_text())["all"]
    assert inv["hosts"]["b"]["ansible_host"] == "172.29.30.11"
    assert inv["children"] == {"g1": {"hosts": {"a": {}}}, "g2": {"hosts": {"a": {}, "b": {}}}}
    assert inv["vars"]["airstrip_test_aws_endpoint"] == "http://172.29.30.1:5000"


def test_hosts_get_fixed_addresses():
    net = {"subnet": "172.29.44.0/24"}
    assert [testhosts.host_address(net, i) for i in range(3)] == ["172.29.44.10", "172.29.44.11", "172.29.44.12"]
