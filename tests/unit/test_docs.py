"""docs/ stays true to the code.

The generated docs (variables.md, spec.md, mwaa.md's tables) are what docs/render.py renders now;
every field of the spec checker has its text in docs/spec_fields.yml; troubleshooting.md quotes
messages the code still gives; the links between the docs lead somewhere.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path

import pytest

from ansible_collections.airstrip.airflow.plugins.module_utils import _spec

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _render():
    spec = importlib.util.spec_from_file_location("airstrip_docs_render", DOCS / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _render()
RENDERERS = {
    "variables.md": render.render_variables,
    "spec.md": render.render_spec,
    "mwaa.md": lambda: render.render_mwaa((DOCS / "mwaa.md").read_text()),
}


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_generated_docs_are_current(name):
    expected = RENDERERS[name]()
    actual = (DOCS / name).read_text()
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "docs/" + name,
                                                 "rendered"))[:60])
        pytest.fail("docs/%s is not what docs/render.py renders from the code now: run make docs\n%s" % (name, diff))


def test_every_spec_field_has_its_text():
    problems = render.spec_entry_problems()
    assert not problems, "docs/spec_fields.yml is behind the spec checker (then run make docs):\n" + "\n".join(problems)


def test_a_field_without_text_is_found(monkeypatch):
    """The check above can fail: a field the checker gains, or loses, is named."""
    paths = render.Spec.field_paths
    monkeypatch.setattr(render.Spec, "field_paths", lambda self: [p for p in paths(self) if p != "name"] + ["airstrip.new"])
    problems = render.spec_entry_problems()
    assert any(p.startswith("airstrip.new: a field of the spec checker with no entry") for p in problems), problems
    assert any(p.startswith("name: an entry of docs/spec_fields.yml that the spec checker has no field for") for p in problems)


def test_every_spec_field_is_in_spec_md():
    text = (DOCS / "spec.md").read_text()
    for path in render.Spec().field_paths():
        assert "| `%s` |" % path in text, path


def _code_text():
    """The messages of plugins/, roles/ and playbooks/, as one text: whitespace collapsed, adjacent
    Python string literals joined (a message may be split over lines)."""
    parts = []
    for folder in ("plugins", "roles", "playbooks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".yml", ".yaml", ".j2") and path.is_file():
                parts.append(path.read_text())
    text = "\n".join(parts)
    text = re.sub(r"\"\s*\n\s*\"|'\s*\n\s*'", "", text)
    return " ".join(text.split())


def test_troubleshooting_quotes_messages_of_the_code():
    code = _code_text()
    headings = re.findall(r"^### `(.+)`$", (DOCS / "troubleshooting.md").read_text(), re.M)
    assert len(headings) >= 20, headings
    for heading in headings:
        for piece in heading.split("…"):
            piece = piece.strip(" :;,.")
            if piece:
                assert piece in code, "docs/troubleshooting.md quotes %r, which no message of the code holds now" % piece


def test_airflow_2_message_points_at_a_real_section():
    with pytest.raises(_spec.SpecError) as exc:
        _spec.normalize({"name": "x", "airflow_version": "2.10.3"})
    (message,) = exc.value.errors
    doc, title = re.search(r"see (docs/[\w.-]+), '([^']+)'", message).groups()
    assert re.search(r"^## %s$" % re.escape(title), (ROOT / doc).read_text(), re.M), (doc, title)


def _anchors(path):
    """GitHub's anchors of a Markdown file's headings, and its explicit <a id>s."""
    text = path.read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_links_between_the_docs_resolve():
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, anchor = (target.split("#", 1) + [""])[:2]
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append("%s: %s (no such file)" % (page.name, target))
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append("%s: %s (no such heading)" % (page.name, target))
    assert not broken, "\n".join(broken)
