"""The changelog: fragments antsibull-changelog accepts, and a CHANGELOG.md that is what it writes from them.

Each change adds a fragment to changelogs/fragments/; `make docs` writes CHANGELOG.md from
changelogs/ (the fragments not released yet as galaxy.yml's version, marked unreleased), as
`antsibull-changelog release` will.
"""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _render():
    spec = importlib.util.spec_from_file_location("airstrip_docs_render", ROOT / "docs" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _render()


def test_fragments_pass_antsibull_changelog_lint():
    rc, output = render.changelog("lint")
    assert rc == 0 and not output, "changelog fragments refused by antsibull-changelog lint:\n%s" % output


def test_changelog_yaml_passes_its_lint():
    rc, output = render.changelog("lint-changelog-yaml", "changelogs/changelog.yaml")
    assert rc == 0 and not output, output


def test_lint_refuses_a_bad_fragment(tmp_path):
    """The lint above can fail: a fragment of an unknown section, or not YAML, is refused."""
    (tmp_path / "unknown-section.yml").write_text("features:\n  - A change.\n")
    (tmp_path / "not-yaml.yml").write_text("minor_changes:\n  - a: b: c\n")
    rc, output = render.changelog("lint", str(tmp_path / "unknown-section.yml"), str(tmp_path / "not-yaml.yml"))
    assert rc != 0
    assert "invalid section: features" in output and "not-yaml.yml" in output, output


def test_every_fragment_is_a_yaml_file_of_known_sections():
    config = yaml.safe_load((ROOT / "changelogs" / "config.yaml").read_text())
    sections = {section[0] for section in config["sections"]} | {config["prelude_section_name"], config["trivial_section_name"]}
    for path in sorted((ROOT / "changelogs" / "fragments").iterdir()):
        if path.name == ".keep":
            continue
        assert path.suffix == ".yml", "%s: fragments end in .yml" % path.name
        assert set(yaml.safe_load(path.read_text())) <= sections, path.name


def test_changelog_md_is_current():
    expected = render.render_changelog()
    actual = (ROOT / "CHANGELOG.md").read_text()
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "CHANGELOG.md",
                                                 "rendered"))[:60])
        pytest.fail("CHANGELOG.md is not what antsibull-changelog writes from changelogs/ now: run make docs\n" + diff)


def test_plugin_cache_is_neither_shipped_nor_committed():
    """antsibull-changelog's changelogs/.plugin-cache.yaml is rebuilt by each release."""
    assert "changelogs/.plugin-cache.yaml" in yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]
    tracked = subprocess.run(["git", "ls-files", "changelogs"], cwd=ROOT, capture_output=True, text=True, check=False)
    if tracked.returncode == 0:
        assert "changelogs/.plugin-cache.yaml" not in tracked.stdout.split()
