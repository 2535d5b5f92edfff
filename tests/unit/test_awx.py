"""docs/awx: the sample surveys and the custom credential type are what AWX accepts, every
variable they set is one the playbooks or roles read (so renaming a variable fails here), and the
sample project's wrapper playbooks import the collection's playbooks by FQCN.

The rules are AWX's own: JobTemplateSurveySpec._validate_spec_data (awx/api/views) for a survey,
and the JSON schemas and checks of CredentialTypeInputField / CredentialTypeInjectorField
(awx/main/fields.py) for a credential type.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "docs" / "awx"
JOBS = ("create", "update", "info", "delete")

# The question types AWX allows, with the type a non-empty default must have.
SURVEY_TYPES = {"text": str, "textarea": str, "password": str, "multiplechoice": str, "multiselect": str,
                "integer": int, "float": float}
NAME = "^[a-zA-Z_]+[a-zA-Z0-9_]*$"
CREDENTIAL_INPUTS = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "required": {"type": "array", "items": {"type": "string"}},
        "fields": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["id", "label"],
            "properties": {
                "type": {"enum": ["string", "boolean"]}, "format": {"enum": ["ssh_private_key", "url"]},
                "choices": {"type": "array", "minItems": 1, "items": {"type": "string"}, "uniqueItems": True},
                "id": {"type": "string", "pattern": NAME}, "label": {"type": "string"}, "help_text": {"type": "string"},
                "multiline": {"type": "boolean"}, "secret": {"type": "boolean"}, "ask_at_runtime": {"type": "boolean"},
                "default": {}}}}}}
CREDENTIAL_INJECTORS = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "file": {"type": "object", "additionalProperties": False,
                 "patternProperties": {r"^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$": {"type": "string"}}},
        "env": {"type": "object", "additionalProperties": False,
                "patternProperties": {NAME: {"type": "string", "pattern": "^[\x00-\x7F]*$"}}},
        "extra_vars": {"type": "object", "additionalProperties": False, "patternProperties": {NAME: {"type": "string"}}}}}


def surveys():
    return {job: json.loads((AWX / "surveys" / f"{job}.json").read_text()) for job in JOBS}


def credential_type():
    return yaml.safe_load((AWX / "credential_type.yml").read_text())


def read_by_the_collection(variable):
    """Files of playbooks/ and roles/ that use the variable outside a comment."""
    pattern = re.compile(r"(?<![\w.])%s(?!\w)" % re.escape(variable))
    found = []
    for path in sorted((ROOT / "playbooks").rglob("*.yml")) + sorted((ROOT / "roles").rglob("*")):
        if path.is_file() and path.suffix in (".yml", ".yaml", ".j2"):
            lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
            if pattern.search("\n".join(lines)):
                found.append(path.relative_to(ROOT))
    return found


def awx_survey_errors(survey):
    """The errors AWX's survey endpoint answers with (empty when it accepts the survey)."""
    errors = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if not isinstance(survey.get(field), kind):
            errors.append("%s: missing or not a %s" % (field, kind.__name__))
    if errors or not survey["spec"]:
        return errors or ["spec: no questions"]
    seen = set()
    for idx, item in enumerate(survey["spec"]):
        if not isinstance(item, dict):
            errors.append("question %d: not an object" % idx)
            continue
        for field in ("type", "question_name", "variable", "required"):
            if not isinstance(item.get(field), bool if field == "required" else str):
                errors.append("question %d: %s missing or of the wrong type" % (idx, field))
        if errors:
            continue
        if item["variable"] in seen:
            errors.append("question %d: variable %s twice" % (idx, item["variable"]))
        seen.add(item["variable"])
        if not re.match(NAME, item["variable"]):
            errors.append("question %d: %s is not a variable name" % (idx, item["variable"]))
        qtype = item["type"]
        if qtype not in SURVEY_TYPES:
            errors.append("question %d: type %s is not one of %s" % (idx, qtype, ", ".join(SURVEY_TYPES)))
            continue
        if item.get("default", "") != "" and not isinstance(item["default"], SURVEY_TYPES[qtype]):
            errors.append("question %d: default %r is not a %s" % (idx, item["default"], qtype))
        for key in ("min", "max"):
            if item.get(key) is not None and not isinstance(item[key], int):
                errors.append("question %d: %s is not an integer" % (idx, key))
        if qtype in ("multiplechoice", "multiselect"):
            if "choices" not in item:
                errors.append("question %d: %s without choices" % (idx, qtype))
                continue
            choices = item["choices"].splitlines() if isinstance(item["choices"], str) else item["choices"]
            defaults = item.get("default", "")
            defaults = [d for d in defaults.splitlines() if d.strip()] if isinstance(defaults, str) else defaults
            if qtype == "multiplechoice" and len(defaults) > 1:
                errors.append("question %d: a multiple choice has one default" % idx)
            if any(d not in choices for d in defaults):
                errors.append("question %d: default not among the choices" % idx)
        if isinstance(item.get("default"), str) and item["default"].startswith("$encrypted$"):
            errors.append("question %d: $encrypted$ is reserved" % idx)
    return errors


@pytest.mark.parametrize("job", JOBS)
def test_each_job_template_has_a_survey_awx_accepts(job):
    survey = surveys()[job]
    assert awx_survey_errors(survey) == []
    assert (ROOT / "playbooks" / f"{job}.yml").is_file()


def test_the_survey_check_refuses_what_awx_refuses():
    good = {"question_name": "q", "variable": "v", "type": "text", "required": False}
    assert awx_survey_errors({"name": "n", "description": "d", "spec": [good]}) == []
    for bad in ({"type": "checkbox"}, {"required": "yes"}, {"default": 3}, {"max": "9"},
                {"type": "multiplechoice", "choices": ["a"], "default": "b"}, {"type": "multiplechoice"}):
        assert awx_survey_errors({"name": "n", "description": "d", "spec": [dict(good, **bad)]}), bad
    assert awx_survey_errors({"name": "n", "description": "d", "spec": [good, good]})
    assert awx_survey_errors({"name": "n", "description": "d", "spec": []})


def test_surveys_that_read_a_spec_offer_it_inline_and_as_a_file():
    for job in ("create", "update", "delete"):
        questions = {q["variable"]: q for q in surveys()[job]["spec"]}
        assert questions["airstrip_spec"]["type"] == "textarea", job
        assert questions["airstrip_spec_file"]["type"] == "text", job


def test_every_survey_variable_is_read_by_the_playbooks_or_roles():
    unread = {(job, q["variable"]) for job, survey in surveys().items() for q in survey["spec"]
              if not read_by_the_collection(q["variable"])}
    assert not unread, "survey variables no playbook or role reads: %s" % sorted(unread)


def test_the_variable_search_tells_a_variable_from_a_longer_name():
    assert read_by_the_collection("airstrip_aws_access_key")
    assert not read_by_the_collection("airstrip_aws_access")
    assert not read_by_the_collection("airstrip_no_such_variable")


def test_the_credential_type_is_one_awx_accepts():
    ct = credential_type()
    assert set(ct) == {"name", "description", "kind", "inputs", "injectors"}
    assert ct["kind"] in ("cloud", "net")  # the kinds a custom credential type may have
    jsonschema.validate(ct["inputs"], CREDENTIAL_INPUTS)
    jsonschema.validate(ct["injectors"], CREDENTIAL_INJECTORS)
    ids = [f["id"] for f in ct["inputs"]["fields"]]
    assert len(ids) == len(set(ids)) and "tower" not in ids
    assert set(ct["inputs"].get("required", [])) <= set(ids)
    assert not [k for k in ct["injectors"].get("env", {}) if k.startswith("ANSIBLE_")]
    # Each injector template renders from the defined fields only, as AWX checks it.
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    for kind, injector in ct["injectors"].items():
        for key, template in injector.items():
            assert env.from_string(template).render({i: "EXAMPLE" for i in ids}) == "EXAMPLE", (kind, key)


def test_the_credential_type_gives_the_hosts_keys_as_secret_extra_vars():
    ct = credential_type()
    assert all(f.get("secret") for f in ct["inputs"]["fields"])
    extra_vars = ct["injectors"]["extra_vars"]
    assert set(extra_vars) == {"airstrip_aws_access_key", "airstrip_aws_secret_key"}
    for variable in extra_vars:
        assert read_by_the_collection(variable), variable
    assert ROOT / "roles" / "environment" / "defaults" / "main.yml" in [ROOT / p for p in read_by_the_collection("airstrip_aws_secret_key")]


@pytest.mark.parametrize("job", JOBS)
def test_the_projects_wrapper_imports_the_playbook_by_fqcn(job):
    """docs/awx/project/<job>.yml, with this ansible-core (tests/integration/test_ansible_core_217.py: 2.17)."""
    wrapper = AWX / "project" / f"{job}.yml"
    (play,) = yaml.safe_load(wrapper.read_text())
    assert play["ansible.builtin.import_playbook"] == f"airstrip.airflow.{job}"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                           wrapper.name], cwd=wrapper.parent, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
