"""One module of the collection run by `ansible localhost -m ...` from this checkout, with the
JSON callback: what the integration tests of single modules share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = str(Path(sys.executable).parent / "ansible")


def run_module(module: str, args: dict, check: bool = False, extra: tuple = (), env: dict | None = None
               ) -> tuple[dict, str]:
    """The module's result on localhost, and everything ansible printed."""
    cmd = [ANSIBLE, "localhost", "-c", "local", "-m", module, "-a", json.dumps(args),
           "-e", "ansible_python_interpreter=" + sys.executable, *extra]
    if check:
        cmd.append("--check")
    full_env = dict(os.environ if env is None else env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                    ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                    ANSIBLE_STDOUT_CALLBACK="json")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120, check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, proc.stdout + proc.stderr
