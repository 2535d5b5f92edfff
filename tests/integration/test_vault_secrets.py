"""airstrip.airflow.vault_secrets run by ansible with real vault passwords: the controller's
encrypted secrets file of an on-prem environment."""

import os
import stat

import adhoc
import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

NAMES = {"db_password": 32, "admin_password": 20, "fernet_seed": 48}


def run(args, password_file=None, check=False, extra=(), ok=True):
    env = dict(os.environ)
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    if password_file:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(password_file)
    result, out = adhoc.run_module("airstrip.airflow.vault_secrets", args, check, extra, env)
    assert bool(result.get("failed")) != ok, result
    return result, out


def decrypt(path, password):
    return yaml.safe_load(VaultLib([("default", VaultSecret(password))]).decrypt(path.read_bytes()))


@pytest.fixture
def vault(tmp_path):
    password = tmp_path / "vault-password"
    password.write_text("correct horse battery staple\n")
    path = tmp_path / "env" / "secrets.yml"
    return password, path, {"path": str(path), "names": NAMES}


def test_check_then_real_then_no_change(vault):
    password, path, args = vault
    r, out = run(args, password, check=True)
    assert r["changed"] is True and not path.exists()

    r, out = run(args, password)
    assert r["changed"] is True
    values = decrypt(path, b"correct horse battery staple")
    assert {k: len(v) for k, v in values.items()} == NAMES
    assert all(v.isalnum() for v in values.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert data.startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    for value in values.values():
        assert value.encode() not in data and value not in out, "a secret in clear"

    for check in (True, False):
        r, out = run(args, password, check=check)
        assert r["changed"] is False
    assert path.read_bytes() == data, "a run with nothing to add rewrote the file"


def test_a_new_name_is_added_and_the_others_kept(vault):
    password, path, args = vault
    run(args, password)
    before = decrypt(path, b"correct horse battery staple")
    r, dummy = run(dict(args, names=dict(NAMES, jwt_secret=48)), password)
    assert r["changed"] is True
    after = decrypt(path, b"correct horse battery staple")
    assert len(after.pop("jwt_secret")) == 48 and after == before


def test_without_a_vault_password_it_stops_and_writes_nothing(vault):
    dummy, path, args = vault
    r, out = run(args, ok=False)
    assert r.get("failed") is True
    assert f"The environment's secrets file {path}: no vault password was given" in r["msg"]
    assert "--vault-password-file" in r["msg"] and "AWX" in r["msg"]
    assert not path.parent.exists()


def test_a_wrong_password_is_refused_and_the_file_kept(vault, tmp_path):
    password, path, args = vault
    run(args, password)
    data = path.read_bytes()
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    r, dummy = run(args, wrong, ok=False)
    assert r.get("failed") is True and "none of the vault passwords given to this run decrypts it" in r["msg"]
    assert path.read_bytes() == data


def test_a_file_in_clear_is_refused(vault):
    password, path, args = vault
    path.parent.mkdir(parents=True)
    path.write_text("db_password: plain\n")
    r, dummy = run(args, password, ok=False)
    assert r.get("failed") is True and f"ansible-vault encrypt {path}" in r["msg"]


def test_vault_ids_pick_the_named_one(vault, tmp_path):
    password, path, args = vault
    other = tmp_path / "other"
    other.write_text("second password\n")
    extra = ("--vault-id", f"dev@{password}", "--vault-id", f"prod@{other}")
    r, dummy = run(dict(args, vault_id="prod"), extra=extra)
    assert r["changed"] is True
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;prod")
    assert sorted(decrypt(path, b"second password")) == sorted(NAMES)
    r, dummy = run(dict(args, vault_id="prod"), extra=extra)
    assert r["changed"] is False


def test_check_mode_without_the_password_stops_as_the_real_run_would(vault):
    dummy, path, args = vault
    r, dummy = run(args, check=True, ok=False)
    assert "no vault password was given to this run" in r["msg"]


def test_read_only_makes_nothing(vault):
    password, path, args = vault
    r, dummy = run(dict(args, create=False))
    assert r["changed"] is False and not path.exists()
    run(args, password)
    r, dummy = run(dict(args, create=False, names=dict(NAMES, jwt_secret=48)), password)
    assert r["changed"] is False
    assert sorted(decrypt(path, b"correct horse battery staple")) == sorted(NAMES)


def test_a_damaged_file_is_named(vault):
    password, path, args = vault
    run(args, password)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + ["zz" + lines[1][2:]] + lines[2:]) + "\n")
    r, dummy = run(args, password, ok=False)
    assert f"The environment's secrets file {path}: " in r["msg"]
    assert "restore it from its backup" in r["msg"] or "decrypts it" in r["msg"], r["msg"]


def test_a_folder_it_cannot_write_is_named(vault, tmp_path):
    password, path, args = vault
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be\n")
    r, dummy = run(dict(args, path=str(blocked / "secrets.yml")), password, ok=False)
    assert f"The environment's secrets file {blocked / 'secrets.yml'}: " in r["msg"]
    assert "check who owns it and its folder" in r["msg"], r["msg"]


def test_a_missing_file_is_written_again_from_the_recovered_secrets(vault):
    """A lost file with secrets taken back from the hosts: those values, the Fernet key standing
    for its seed (not generated), the others generated; an existing file ignores recovered."""
    password, path, args = vault
    held = {"db_password": "HeldDbPassword0123456789", "fernet_key": "A" * 43 + "="}
    r, out = run(dict(args, recovered=held), password)
    assert r["changed"] is True
    values = decrypt(path, b"correct horse battery staple")
    assert sorted(values) == ["admin_password", "db_password", "fernet_key"], "the seed generated beside its key"
    assert values["db_password"] == held["db_password"] and values["fernet_key"] == held["fernet_key"]
    assert len(values["admin_password"]) == 20
    assert held["db_password"] not in out

    r, out = run(dict(args, recovered={"db_password": "Other"}), password)
    assert r["changed"] is False
    assert decrypt(path, b"correct horse battery staple") == values
