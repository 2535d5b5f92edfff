"""`ansible-galaxy collection build` ships collection content only."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = ("tests/", "extensions/", "bench/", ".venv/", ".collections/", "local/", ".ci/", "Makefile")


def test_build_holds_no_tests_venvs_or_caches(tmp_path):
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    subprocess.run([str(galaxy), "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (tarball,) = tmp_path.glob("airstrip-airflow-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/airflow_health.py" in names
    assert "roles/airflow/tasks/main.yml" in names
    for name in names:
        assert not name.startswith(NOT_SHIPPED), name
        assert "__pycache__" not in name and not name.endswith((".pyc", ".tar", ".whl")), name
