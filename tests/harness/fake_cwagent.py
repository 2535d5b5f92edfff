"""A stand-in amazon-cloudwatch-agent .deb, signed like AWS signs theirs, for tests.

The real agent cannot be downloaded on the test machines, so the cloudwatch_agent role is
exercised against this package instead. It has the real one's paths and commands, and
checks what the role gives it against the agent's own configuration schema (copied into the
package at build time from the vendored copy, never kept in the repository):

  bin/amazon-cloudwatch-agent-ctl   records every call in logs/ctl-calls.log; -a fetch-config
                                    validates -c file:PATH and keeps a copy in
                                    etc/amazon-cloudwatch-agent.d/file_<name> (as the real
                                    one does), -s restarts the service; -a status prints
                                    {status, starttime, configstatus, version}
  bin/config-translator             validates --input against the schema, --mode and --config
  bin/start-amazon-cloudwatch-agent runs until stopped
  amazon-cloudwatch-agent.service   the systemd unit; etc/common-config.toml a conffile

Depends: python3, python3-jsonschema (Debian's), so installing it with apt exercises the
role's resolution of Depends.

    python fake_cwagent.py build --schema SCHEMA.json --out DIR [--version V]

writes into DIR, and prints as JSON (also DIR/build.json):
  amazon-cloudwatch-agent.deb(.sig)   the package, with a detached binary signature
  amazon-cloudwatch-agent.gpg         the armored public key of a throwaway signing key
  tampered/...deb(.sig)               another version (1 higher) with the good package's
                                      signature: a bad signature
  other-key/...deb.sig, ...gpg        the good package signed by another throwaway key
  old/...deb(.sig)                    a correctly signed version older than the agent's
                                      journald support (1.300069.0)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "amazon-cloudwatch-agent"
DEB = PACKAGE + ".deb"
DEFAULT_VERSION = "1.300071.0"
OLD_VERSION = "1.300069.0"
HOME = "/opt/aws/amazon-cloudwatch-agent"

VALIDATE = r'''
def validate(path):
    """Problems of the agent configuration in path against the installed schema."""
    import jsonschema

    with open(SCHEMA) as f:
        schema = json.load(f)
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        return ["%s: %s" % (path, exc)]
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top)", e.message)
            for e in jsonschema.Draft4Validator(schema).iter_errors(config)]
'''

CTL = r'''#!/usr/bin/python3
"""Stand-in amazon-cloudwatch-agent-ctl (Airstrip tests)."""
import datetime
import getopt
import json
import os
import shlex
import shutil
import subprocess
import sys

HOME = "@HOME@"
VERSION = "@VERSION@"
SCHEMA = HOME + "/doc/amazon-cloudwatch-agent-schema.json"
CONFIG_DIR = HOME + "/etc/amazon-cloudwatch-agent.d"
TOML = HOME + "/etc/amazon-cloudwatch-agent.toml"
UNIT = "amazon-cloudwatch-agent"
@VALIDATE@

def systemctl(*args):
    return subprocess.run(["systemctl", *args, UNIT], check=False, capture_output=True, text=True)


def main(argv):
    os.makedirs(HOME + "/logs", exist_ok=True)
    with open(HOME + "/logs/ctl-calls.log", "a") as log:
        log.write("%s %s\n" % (datetime.datetime.now().isoformat(timespec="seconds"), shlex.join(argv)))
    opts, _rest = getopt.getopt(argv, "a:m:c:s")
    opts = dict(opts)
    action, mode, source = opts.get("-a"), opts.get("-m", "ec2"), opts.get("-c", "default")
    if action == "status":
        active = systemctl("is-active").stdout.strip() == "active"
        start = systemctl("show", "-p", "ActiveEnterTimestamp", "--value").stdout.strip()
        print(json.dumps({"status": "running" if active else "stopped", "starttime": start if active else "",
                          "configstatus": "configured" if os.path.exists(TOML) else "not configured",
                          "version": VERSION}, indent=2))
        return 0
    if action == "fetch-config":
        if mode not in ("ec2", "onPremise", "onPrem", "auto"):
            print("Invalid mode %s" % mode, file=sys.stderr)
            return 1
        if not source.startswith("file:"):
            print("this stand-in reads file: sources only, got %s" % source, file=sys.stderr)
            return 1
        path = source[len("file:"):]
        errors = validate(path)
        if errors:
            print("Configuration validation first phase failed\n" + "\n".join(errors), file=sys.stderr)
            return 1
        shutil.rmtree(CONFIG_DIR, ignore_errors=True)
        os.makedirs(CONFIG_DIR)
        shutil.copyfile(path, os.path.join(CONFIG_DIR, "file_" + os.path.basename(path)))
        with open(TOML, "w") as f:
            f.write("# translated by the stand-in from %s, mode %s\n" % (path, mode))
        # The real one removes etc/amazon-cloudwatch-agent.json too (a file kept there vanishes).
        if os.path.exists(HOME + "/etc/amazon-cloudwatch-agent.json"):
            os.remove(HOME + "/etc/amazon-cloudwatch-agent.json")
        print("Configuration validation succeeded")
        if "-s" in opts:
            systemctl("enable")
            restart = systemctl("restart")
            if restart.returncode:
                print(restart.stderr, file=sys.stderr)
                return 1
        return 0
    if action in ("start", "stop"):
        return systemctl(action).returncode
    if action == "cond-restart":
        if systemctl("is-active").stdout.strip() == "active":
            return systemctl("restart").returncode
        return 0
    print("unknown action %s" % action, file=sys.stderr)
    return 1


sys.exit(main(sys.argv[1:]))
'''

TRANSLATOR = r'''#!/usr/bin/python3
"""Stand-in config-translator (Airstrip tests): the checks the real one makes first."""
import argparse
import json
import os
import sys
import tomllib

SCHEMA = "@HOME@/doc/amazon-cloudwatch-agent-schema.json"
@VALIDATE@

parser = argparse.ArgumentParser()
for name in ("--input", "--input-dir", "--output", "--mode", "--config", "--multi-config"):
    parser.add_argument(name)
args = parser.parse_args()
if args.mode not in ("ec2", "onPremise", "onPrem", "auto"):
    sys.exit("E! Invalid mode %s" % args.mode)
if args.input_dir and not os.path.isdir(args.input_dir):
    sys.exit("E! input dir %s does not exist" % args.input_dir)
if args.config:
    try:
        with open(args.config, "rb") as f:
            tomllib.load(f)
    except (OSError, ValueError) as exc:
        sys.exit("E! common config %s: %s" % (args.config, exc))
errors = validate(args.input)
if errors:
    print("E! Invalid Json input schema.\n" + "\n".join(errors), file=sys.stderr)
    sys.exit(1)
with open(args.input) as f:
    config = json.load(f)
if args.mode in ("onPremise", "onPrem") and not (config.get("agent") or {}).get("region"):
    sys.exit("E! Under onPremise mode, the region must be given in agent.region")
print("Valid Json input schema.")
if args.output:
    with open(args.output, "w") as f:
        f.write("# translated by the stand-in, mode %s\n" % args.mode)
'''

START = """#!/bin/sh
# Stand-in start-amazon-cloudwatch-agent (Airstrip tests): runs until stopped.
echo "started $(date +%s)" >> @HOME@/logs/start.log
exec sleep infinity
"""

UNIT = """[Unit]
Description=Amazon CloudWatch Agent (Airstrip test stand-in)
After=network.target

[Service]
Type=simple
ExecStart=@HOME@/bin/start-amazon-cloudwatch-agent
KillMode=process
Restart=on-failure
RestartSec=60s

[Install]
WantedBy=multi-user.target
"""

COMMON_CONFIG = """# This common-config is used to configure items used for both ssm and cloudwatch access
## Configuration for shared credential.
# [credentials]
#    shared_credential_profile = "{profile_name}"
#    shared_credential_file = "{file_name}"
"""

POSTINST = """#!/bin/sh
set -e
systemctl daemon-reload 2>/dev/null || true
@HOME@/bin/amazon-cloudwatch-agent-ctl -a cond-restart || true
"""

PRERM = """#!/bin/sh
set -e
systemctl stop amazon-cloudwatch-agent 2>/dev/null || true
"""


class BuildError(Exception):
    pass


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode:
        raise BuildError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc


def _fill(text: str, version: str) -> str:
    return (text.replace("@VALIDATE@", VALIDATE).replace("@HOME@", HOME).replace("@VERSION@", version))


def build_deb(schema: Path, dest: Path, version: str) -> Path:
    """dpkg-deb the stand-in package of one version to dest."""
    with tempfile.TemporaryDirectory(prefix="fake-cwagent-") as tmp:
        root = Path(tmp) / "root"
        home = root / HOME.lstrip("/")
        files = {
            home / "bin" / "amazon-cloudwatch-agent-ctl": (_fill(CTL, version), 0o755),
            home / "bin" / "config-translator": (_fill(TRANSLATOR, version), 0o755),
            home / "bin" / "start-amazon-cloudwatch-agent": (_fill(START, version), 0o755),
            home / "etc" / "common-config.toml": (COMMON_CONFIG, 0o644),
            root / "etc" / "systemd" / "system" / "amazon-cloudwatch-agent.service": (_fill(UNIT, version), 0o644),
            root / "DEBIAN" / "postinst": (_fill(POSTINST, version), 0o755),
            root / "DEBIAN" / "prerm": (PRERM, 0o755),
            root / "DEBIAN" / "conffiles": (f"{HOME}/etc/common-config.toml\n", 0o644),
            root / "DEBIAN" / "control": (
                f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
                "Maintainer: Airstrip tests <tests@airstrip.invalid>\n"
                "Depends: python3, python3-jsonschema\nSection: admin\nPriority: optional\n"
                "Description: Stand-in for the Amazon CloudWatch Agent (Airstrip tests)\n"
                " Records its calls and validates its configuration; ships nothing anywhere.\n", 0o644),
        }
        for path, (text, mode) in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
        (home / "doc").mkdir(parents=True)
        shutil.copyfile(schema, home / "doc" / "amazon-cloudwatch-agent-schema.json")
        (home / "logs").mkdir()
        (home / "var").mkdir()
        for d in [root, *root.rglob("*")]:
            if d.is_dir():
                d.chmod(0o755)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(dest)])
    return dest


class Signer:
    """A throwaway GPG key in a temporary GNUPGHOME."""

    def __init__(self, home: Path, name: str):
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--quick-gen-key", f"{name} <tests@airstrip.invalid>", "rsa2048", "sign", "never")
        colons = self._gpg("--with-colons", "--list-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))

    def _gpg(self, *args: str) -> subprocess.CompletedProcess:
        return _run(["gpg", "--batch", "--homedir", str(self.home), "--pinentry-mode", "loopback",
                     "--passphrase", "", *args])

    def export(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(self._gpg("--armor", "--export", self.fingerprint).stdout)
        return dest

    def sign(self, deb: Path, sig: Path) -> Path:
        sig.parent.mkdir(parents=True, exist_ok=True)
        sig.unlink(missing_ok=True)
        self._gpg("--local-user", self.fingerprint, "--detach-sign", "--output", str(sig), str(deb))
        return sig

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       capture_output=True, check=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bump(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts[:-2] + [str(int(parts[-2]) + 1), parts[-1]])


def build(schema: Path, out: Path, version: str = DEFAULT_VERSION) -> dict:
    """Build the signed package and its bad variants into out; return what was made."""
    schema, out = Path(schema), Path(out)
    if not schema.is_file():
        raise BuildError(f"no agent schema at {schema}: give the vendored schema.json")
    for tool in ("dpkg-deb", "gpg"):
        if not shutil.which(tool):
            raise BuildError(f"{tool} is missing: install it (apt-get install dpkg-dev gpg)")
    out.mkdir(parents=True, exist_ok=True)
    # gpg-agent's socket lives in GNUPGHOME: keep the path short.
    with tempfile.TemporaryDirectory(prefix="cwgpg-") as tmp:
        good, other = Signer(Path(tmp) / "a", "Airstrip test signer"), Signer(Path(tmp) / "b", "Airstrip other signer")
        try:
            deb = build_deb(schema, out / DEB, version)
            sig = good.sign(deb, out / (DEB + ".sig"))
            key = good.export(out / f"{PACKAGE}.gpg")
            # Another version under the good package's signature: what a swapped download looks like.
            tampered = build_deb(schema, out / "tampered" / DEB, _bump(version))
            shutil.copyfile(sig, out / "tampered" / (DEB + ".sig"))
            other_sig = other.sign(deb, out / "other-key" / (DEB + ".sig"))
            other_key = other.export(out / "other-key" / f"{PACKAGE}.gpg")
            old = build_deb(schema, out / "old" / DEB, OLD_VERSION)
            good.sign(old, out / "old" / (DEB + ".sig"))
        finally:
            good.close()
            other.close()
    result = {
        "version": version,
        "fingerprint": good.fingerprint,
        "other_fingerprint": other.fingerprint,
        "deb": str(deb), "sig": str(sig), "key": str(key), "sha256": _sha256(deb),
        "tampered": {"version": _bump(version), "deb": str(tampered), "sig": str(out / "tampered" / (DEB + ".sig"))},
        "other_key": {"sig": str(other_sig), "key": str(other_key)},
        "old": {"version": OLD_VERSION, "deb": str(old), "sig": str(out / "old" / (DEB + ".sig"))},
    }
    (out / "build.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the signed stand-in package and its bad variants")
    b.add_argument("--schema", required=True, type=Path, help="the agent's schema.json (the vendored copy)")
    b.add_argument("--out", required=True, type=Path, help="folder to write into")
    b.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(build(args.schema, args.out, args.version), indent=2))
    except BuildError as exc:
        print(f"fake_cwagent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
