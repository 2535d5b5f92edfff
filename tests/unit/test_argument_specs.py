"""Each role's meta/argument_specs.yml mirrors its defaults/main.yml.

The rule, for every role under roles/:

* meta/argument_specs.yml exists, loads without a duplicate key (Ansible warns on one, and
  fails with ANSIBLE_DUPLICATE_YAML_DICT_KEY=error; a merge key `<<:` whose keys are set again
  counts as one), and has a `main` entry point.
* Every variable of defaults/main.yml is an option of `main`.
* An option that is not in defaults/main.yml is an input the caller must give: it is
  `required: true` and declares no `default` (the role would never apply one: only
  defaults/main.yml gives a variable a value). This holds for every entry point.
* An option that is in defaults/main.yml is not `required: true`: the default always
  satisfies it, so it would check nothing.
* Where the value in defaults/main.yml has no Jinja, the option declares a `default` equal to
  it, and its `type` (and `elements`, `choices`) accept it. Where it has Jinja, the declared
  `default` (if any) documents what it renders to when the variables it reads are unset, and
  is not compared.
* Every entry point has a tasks file, and every `tasks_from` of a playbook or role names an
  entry point of the role it includes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
SPEC_FILES = sorted((ROOT / "roles").glob("*/meta/argument_specs.y*ml"))
COLLECTION = "airstrip.airflow."


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that fails on a key given twice in one mapping, also through a merge key."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        seen = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: Path):
    return yaml.load(path.read_text(), Loader=UniqueKeyLoader)


def has_jinja(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(has_jinja(k) or has_jinja(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_jinja(v) for v in value)
    return False


def role_defaults(role: str) -> dict:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    return (load(path) or {}) if path.is_file() else {}


def role_specs(role: str) -> dict:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    assert path.is_file(), f"roles/{role} has no meta/argument_specs.yml"
    return load(path)["argument_specs"]


def test_the_loader_finds_duplicate_keys():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        yaml.load("a: 1\na: 2\n", Loader=UniqueKeyLoader)
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        yaml.load("x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  a: 3\n", Loader=UniqueKeyLoader)
    assert yaml.load("x: &x {a: 1}\ny: *x\n", Loader=UniqueKeyLoader) == {"x": {"a": 1}, "y": {"a": 1}}


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.parts[-3])
def test_argument_specs_have_no_duplicate_keys(path):
    assert isinstance(load(path)["argument_specs"], dict)


@pytest.mark.parametrize("role", ROLES)
def test_main_documents_every_default(role):
    specs = role_specs(role)
    assert "main" in specs, f"roles/{role}: no main entry point"
    options = specs["main"].get("options") or {}
    missing = sorted(set(role_defaults(role)) - set(options))
    assert not missing, f"roles/{role}: defaults not in the main entry point: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_options_match_the_defaults(role):
    defaults = role_defaults(role)
    errors = []
    for entry, spec in role_specs(role).items():
        options = spec.get("options") or {}
        literal = {}
        for name, option in options.items():
            where = f"roles/{role} {entry}: {name}"
            if name not in defaults:
                if not option.get("required") or "default" in option:
                    errors.append(f"{where} is not in defaults/main.yml, so it must be required: true without a default")
                continue
            if option.get("required"):
                errors.append(f"{where} is in defaults/main.yml, so required: true checks nothing")
            value = defaults[name]
            if has_jinja(value):
                continue
            literal[name] = value
            if "default" not in option:
                errors.append(f"{where} declares no default; defaults/main.yml has {value!r}")
            elif option["default"] != value or type(option["default"]) is not type(value):
                errors.append(f"{where} declares default {option['default']!r}; defaults/main.yml has {value!r}")
        # The declared type, elements and choices accept the role's own defaults.
        result = ArgumentSpecValidator({n: options[n] for n in literal}).validate(literal)
        errors += [f"roles/{role} {entry}: {msg}" for msg in result.error_messages]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_has_a_tasks_file(role):
    tasks = ROOT / "roles" / role / "tasks"
    for entry in role_specs(role):
        assert (tasks / f"{entry}.yml").is_file(), f"roles/{role}: entry point {entry} has no tasks/{entry}.yml"


def _includes(node):
    """(role, tasks_from) of each include_role/import_role in a parsed playbook or task file."""
    if isinstance(node, list):
        for item in node:
            yield from _includes(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.split(".")[-1] in ("include_role", "import_role") and isinstance(value, dict):
                if "tasks_from" in value:
                    yield value["name"], value["tasks_from"]
            else:
                yield from _includes(value)


def _tasks_from():
    files = sorted((ROOT / "playbooks").rglob("*.yml")) + sorted((ROOT / "roles").glob("*/tasks/*.yml"))
    found = set()
    for path in files:
        for name, tasks_from in _includes(yaml.safe_load(path.read_text())):
            if has_jinja(name) or has_jinja(tasks_from):
                continue
            role = name[len(COLLECTION):] if name.startswith(COLLECTION) else name
            found.add((str(path.relative_to(ROOT)), role, Path(tasks_from).stem))
    return sorted(found)


def test_tasks_from_are_found():
    assert ("playbooks/aws.yml", "iam", "policy") in _tasks_from()


@pytest.mark.parametrize("where,role,entry", _tasks_from())
def test_every_tasks_from_is_an_entry_point(where, role, entry):
    assert entry in role_specs(role), f"{where} includes roles/{role} tasks_from {entry}, which has no entry point"
