"""meta/runtime.yml's action group `airflow` lists exactly the modules in plugins/modules/.

Otherwise `module_defaults: {group/airstrip.airflow.airflow: ...}` silently skips a module.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_action_group_airflow_lists_every_module():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    group = runtime["action_groups"]["airflow"]
    modules = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert modules, "no modules found"
    assert len(group) == len(set(group)), f"listed twice: {sorted({m for m in group if group.count(m) > 1})}"
    assert sorted(group) == modules
