"""The spec given inline or as a file, and a relative file found from the working directory."""

from __future__ import annotations

import pytest

from ansible_collections.airstrip.airflow.plugins.lookup.spec_document import candidates, spec_document


def test_inline_mapping_and_text():
    assert spec_document({"name": "a"}) == {"name": "a"}
    assert spec_document("name: a\nmin_workers: 2\n") == {"name": "a", "min_workers": 2}
    assert spec_document('{"Name": "a", "AirflowVersion": "3.3.2"}') == {"Name": "a", "AirflowVersion": "3.3.2"}


@pytest.mark.parametrize("value, message", [
    ("name: [a", "airstrip_spec is not valid YAML or JSON at line"),
    ("- a\n- b\n", "airstrip_spec must be a mapping (the spec's fields"),
    (42, "airstrip_spec must be a mapping or its YAML/JSON text, not int"),
])
def test_bad_inline_spec(value, message):
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace("[", r"\[")):
        spec_document(value)


def test_one_source_only():
    with pytest.raises(ValueError, match="both airstrip_spec and airstrip_spec_file are set"):
        spec_document({"name": "a"}, "env.yml")
    with pytest.raises(ValueError, match="no environment spec was given: give the environment spec with -e airstrip_spec_file"):
        spec_document(None, "")


def test_relative_file_from_the_working_directory_then_the_playbook(tmp_path):
    project, plays = tmp_path / "project", tmp_path / "project" / "plays"
    plays.mkdir(parents=True)
    (plays / "env.yml").write_text("name: beside\n")
    assert spec_document(spec_file="env.yml", cwd=str(project), playbook_dir=str(plays)) == {"name": "beside"}
    (project / "env.yml").write_text("name: cwd\n")
    assert spec_document(spec_file="env.yml", cwd=str(project), playbook_dir=str(plays)) == {"name": "cwd"}
    assert spec_document(spec_file=str(plays / "env.yml"), cwd="/nowhere") == {"name": "beside"}


def test_missing_file_names_every_path_tried(tmp_path):
    with pytest.raises(ValueError) as err:
        spec_document(spec_file="specs/prod.yml", cwd=str(tmp_path), playbook_dir="/srv/plays")
    assert str(err.value).startswith("airstrip_spec_file specs/prod.yml was not found (looked at %s/specs/prod.yml, "
                                     "/srv/plays/specs/prod.yml)" % tmp_path)
    assert candidates("/abs/x.yml", "/cwd", "/pb") == ["/abs/x.yml"]
