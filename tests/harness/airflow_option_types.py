"""Writes plugins/module_utils/_airflow_options.py, the types of Airflow's configuration options,
from Airflow's own config.yml in a wheel of apache-airflow-core (for example the one in the
controller's wheelhouse, ~/.cache/airstrip/wheelhouse/airflow-<version>-<id>.tar):

    python tests/harness/airflow_option_types.py path/to/apache_airflow_core-3.3.2-py3-none-any.whl
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "_airflow_options.py"
HEADER = '''# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The type of each of Airflow's typed configuration options (integer, float, boolean), from
apache-airflow-core {version}'s config_templates/config.yml; NEGATIVE_ALLOWED, the integer options
whose default is negative. Written by tests/harness/airflow_option_types.py: do not edit.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

'''


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith("airflow/config_templates/config.yml"))
        config = yaml.safe_load(archive.read(name))
        version = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")).split("-")[1].split(".dist")[0]
    types, negative = {}, []
    for section, body in sorted(config.items()):
        for option, spec in sorted((body.get("options") or {}).items()):
            if spec.get("type") in ("integer", "float", "boolean"):
                types["%s.%s" % (section, option)] = spec["type"]
                if str(spec.get("default") or "").startswith("-"):
                    negative.append("%s.%s" % (section, option))
    lines = [HEADER.format(version=version), "TYPES = {\n"]
    lines += ['    "%s": "%s",\n' % item for item in sorted(types.items())]
    lines += ["}\n\nNEGATIVE_ALLOWED = frozenset([%s])\n" % ", ".join('"%s"' % n for n in negative)]
    OUT.write_text("".join(lines))
    print("wrote %s: %d typed options" % (OUT, len(types)))


if __name__ == "__main__":
    main(sys.argv[1])
