"""The playbooks' plays run on the environment's hosts as the model places them: the host
patterns of the plays that touch hosts are the model's inventory groups, in its order."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_collections.airstrip.airflow.plugins.module_utils import _model

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
HOST_PLAYS = [("site.yml", "Deploy the environment"), ("delete.yml", "Remove the environment from its hosts"),
              ("info.yml", "Read the environment's records and services on its hosts")]


@pytest.mark.parametrize("playbook,play", HOST_PLAYS)
def test_host_plays_run_on_the_model_groups(playbook, play):
    plays = yaml.safe_load((PLAYBOOKS / playbook).read_text())
    (found,) = [p for p in plays if p.get("name") == play]
    assert found["hosts"].split(":") == list(_model.GROUPS)
