#!/usr/bin/env bash
# ansible-test sanity, offline: ansible-test wants the collection at
# .../ansible_collections/airstrip/airflow inside a git work tree, and bootstraps pip from
# a host that is not reachable here, so give it both.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/airstrip/airflow"
mkdir -p "$dest"
# The working tree as git sees it (tracked and new files, nothing ignored).
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read -c 2>/dev/null) | tar -C "$dest" -x
# Collections our plugins build on (amazon.aws's module_utils and doc fragments), from the
# ansible package, beside ours as ansible-test expects them.
for dep in amazon/aws; do
  mkdir -p "$work/ansible_collections/$(dirname "$dep")"
  cp -a "$("$bin/python" -c 'import ansible_collections, sys; print(ansible_collections.__path__[0])')/$dep" \
    "$work/ansible_collections/$dep"
done
git -C "$dest" init -q
git -C "$dest" add -A

core=$("$bin/python" -c 'import ansible.release as r; print(r.__version__)')
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
# ansible-test names its pip bootstrap after the pip version it wants (24.2 for core 2.19).
for pipver in 24_2; do
  cat > "$cache/get_pip_${pipver}.py" <<'PY'
"""Offline stand-in for get-pip: ensurepip, then pip from the configured package index."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
PY
done
echo "ansible-test sanity (ansible-core $core) in $dest"
cd "$dest"
PATH="$bin:$PATH" "$bin/ansible-test" sanity --local --python 3.11 --color no "$@"
