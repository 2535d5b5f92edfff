"""Use the shared test helpers (airflow_api) of extensions/molecule/shared/tests."""

import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "tests"
if str(SHARED) not in sys.path:
    sys.path.insert(0, str(SHARED))
