# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment's generated secrets in one ansible-vault file on the controller.

Runs on the controller only (nothing is sent to a host). The file is encrypted and
decrypted with the vault secrets the run was given (--vault-password-file, --vault-id,
--ask-vault-pass, ANSIBLE_VAULT_PASSWORD_FILE, an AWX Vault credential).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import secrets
import string
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.parsing.vault import VaultLib, is_encrypted
from ansible.plugins.action import ActionBase

from ansible_collections.airstrip.airflow.plugins.module_utils._model import SECRET_REPLACED_BY

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core needs PyYAML
    yaml = None

ALPHABET = string.ascii_letters + string.digits
HOW = ("run with the vault password: --vault-password-file FILE (or ANSIBLE_VAULT_PASSWORD_FILE), "
       "--vault-id, --ask-vault-pass, or a Vault credential on the AWX job template")


class VaultSecretsError(Exception):
    pass


def generate(length):
    return "".join(secrets.choice(ALPHABET) for dummy in range(length))


def pick_secret(vault_secrets, vault_id=None, verb="encrypt"):
    """The (id, secret) to encrypt with: the one named, else the configured encrypt identity, else the first."""
    if not vault_secrets:
        raise VaultSecretsError("no vault password was given to this run to %s it; %s" % (verb, HOW))
    wanted = vault_id or C.DEFAULT_VAULT_ENCRYPT_IDENTITY
    if wanted:
        for ident, secret in vault_secrets:
            if ident == wanted:
                return ident, secret
        raise VaultSecretsError("no vault password with id '%s' was given to this run; %s" % (wanted, HOW))
    return vault_secrets[0]


def settle(current, names):
    """The full set of secrets, and the names of those generated for it (a name whose
    replacement is held, SECRET_REPLACED_BY, is not)."""
    values = dict(current)
    generated = []
    for name, length in sorted(names.items()):
        if not values.get(name) and not values.get(SECRET_REPLACED_BY.get(name, "")):
            values[name] = generate(int(length))
            generated.append(name)
    return values, generated


def write_private(path, data):
    """Write bytes to path as 0600, atomically, in a 0700 folder."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vault-secrets-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = self._task.args
        path = os.path.expanduser(args.get("path") or "")
        names = args.get("names") or {}
        if not path or not isinstance(names, dict) or not names:
            result.update(failed=True, msg="vault_secrets needs path and names (a mapping of secret name to length)")
            return result
        vault_secrets = self._loader._vault.secrets if self._loader._vault else []
        check_mode = self._play_context.check_mode
        generated, changed, recovered = [], False, []
        try:
            exists = os.path.exists(path)
            values = self._read(path, vault_secrets) if exists else {}
            if boolean(args.get("create", True)):
                if not exists and args.get("recovered"):
                    values = dict((to_text(k), to_text(v)) for k, v in args["recovered"].items() if v)
                    recovered = sorted(values)
                values, generated = settle(values, names)
                # Also in check mode, so that a check run without the password fails as the real one would.
                ident, secret = pick_secret(vault_secrets, args.get("vault_id"))
                changed = bool(generated or recovered)
                if not check_mode:
                    changed = self._write(path, values, ident, secret, changed)
        except VaultSecretsError as exc:
            result.update(failed=True, msg="The environment's secrets file %s: %s." % (path, exc))
            return result
        except (OSError, IOError) as exc:
            where = getattr(exc, "filename", None) or path
            result.update(failed=True, msg="The environment's secrets file %s: %s (%s): check who owns it and its "
                                           "folder, and the space left." % (path, exc.strerror or exc, where))
            return result
        # The secrets are never shown, whatever the task says; a failure's message holds none.
        result["_ansible_no_log"] = True
        result.update(changed=changed, secrets=values, path=path, generated=generated, recovered=recovered)
        return result

    @staticmethod
    def _write(path, values, ident, secret, added):
        """Encrypt and write the file when secrets were added; else only make it private.
        Whether it changed anything."""
        if added:
            # Plain str keys and values (a task's arguments may come as tagged strings).
            plain = yaml.safe_dump(json.loads(json.dumps(values)), default_flow_style=False, sort_keys=True)
            write_private(path, VaultLib([(ident, secret)]).encrypt(plain, secret, ident if ident != "default" else None))
            return True
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
            return True
        return False

    def _read(self, path, vault_secrets):
        with open(path, "rb") as handle:
            data = handle.read()
        if not is_encrypted(data):
            raise VaultSecretsError("it is not encrypted: encrypt it with 'ansible-vault encrypt %s'" % path)
        if not vault_secrets:
            raise VaultSecretsError("no vault password was given to this run to decrypt it; %s" % HOW)
        try:
            plain = VaultLib(vault_secrets).decrypt(data)
        except AnsibleError as exc:
            if "no vault secrets were found that could decrypt" in to_text(exc):
                raise VaultSecretsError("none of the vault passwords given to this run decrypts it (it was encrypted "
                                        "with another one); %s" % HOW)
            raise VaultSecretsError("it is damaged (%s): restore it from its backup" % to_text(exc).split("\n")[0])
        try:
            loaded = yaml.safe_load(to_text(plain)) or {}
        except yaml.YAMLError:
            # The parser's message may quote the decrypted text: not shown.
            raise VaultSecretsError("it does not hold YAML once decrypted: fix it with 'ansible-vault edit %s'" % path)
        if not isinstance(loaded, dict):
            raise VaultSecretsError("it does not hold a mapping of secret names to values")
        return dict((to_text(k), to_text(v)) for k, v in loaded.items() if v)
