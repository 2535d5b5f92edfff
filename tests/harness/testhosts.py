"""Local test hosts for Airstrip: systemd containers reached over SSH, plus emulated AWS.

Subcommands:
  engine                 make sure a Docker engine answers (installs Debian's docker.io as root)
  image                  build the Debian 12 systemd base image (cached by recipe hash)
  up ENV HOST[:GROUP,..] create hosts of environment ENV on a private bridge network
  moto ENV               start the emulated AWS endpoint (moto server) for ENV
  info ENV               print what exists for ENV as JSON
  down ENV               remove ENV's hosts, network and emulated AWS

Everything is labelled with the environment's name, so a half-created set is
found again: a host that runs with the current image is reused, anything else
of that environment is removed and made again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATE_DIR = Path(os.environ.get("AIRSTRIP_STATE_DIR", Path.home() / ".cache" / "airstrip"))
LABEL = "io.airstrip.env"
IMAGE_REPO = "airstrip/debian-systemd"
SUITE = "bookworm"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "openssh-server", "sudo",
    "ca-certificates", "iproute2", "procps", "curl",
]
# The image tag hashes the recipe (suite, packages, tweaks, this version), so it is
# rebuilt exactly when the recipe changes.
RECIPE_VERSION = "1"
IMAGE_MIN_FREE_BYTES = 2 * 1024 ** 3
MOTO_PORT = 5000
# Every capability except SYS_RESOURCE: --privileged and --cap-add ALL are refused here,
# and hardened Debian units (redis-server) need more than SYS_ADMIN.
CAPABILITIES = [
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "CHOWN", "DAC_OVERRIDE",
    "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG",
    "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
]


class HarnessError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def log(msg: str) -> None:
    print(f"[testhosts] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, text=True, capture_output=capture, check=False, **kw)
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip()
        raise HarnessError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {err[-2000:]}")
    return proc


def docker(*args: str, check: bool = True) -> str:
    return run(["docker", *args], check=check).stdout.strip()


# ---------------------------------------------------------------- engine
def engine_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0


def is_debian() -> bool:
    try:
        return "ID=debian" in Path("/etc/os-release").read_text()
    except OSError:
        return False


def apt_install(*packages: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(packages)} from Debian's packages")
    update = run(["apt-get", "update", "-qq"], check=False, env=env)
    if update.returncode != 0:
        raise HarnessError(f"apt-get update failed: {update.stderr.strip()[-500:]}")
    run(["apt-get", "install", "-y", "-qq", *packages], env=env)


def cmd_engine(_args: argparse.Namespace) -> None:
    if engine_ok():
        return
    if os.geteuid() != 0:
        raise HarnessError(
            "no Docker engine answers and this is not root, so none can be installed: "
            "start a Docker engine you may use (check with 'docker info'), or run as root on Debian")
    if not is_debian():
        raise HarnessError(
            "no Docker engine answers and this is not Debian, so docker.io cannot be installed "
            "here: install and start a Docker engine, then run again")
    if not shutil.which("dockerd"):
        apt_install("docker.io")
    log_path = STATE_DIR / "dockerd.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log("starting dockerd")
    with open(log_path, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)  # noqa: S603
    for _attempt in range(60):
        if engine_ok():
            return
        time.sleep(1)
    raise HarnessError(f"dockerd did not answer within 60 s; see {log_path}")


# ---------------------------------------------------------------- image
def debian_mirror() -> str:
    """The controller's own Debian mirror, so hosts use what this machine may reach."""
    if os.environ.get("AIRSTRIP_DEBIAN_MIRROR"):
        return os.environ["AIRSTRIP_DEBIAN_MIRROR"]
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line:
                parts = [p for p in line.split()[1:] if not p.startswith("[")]
                return parts[0]
    raise HarnessError("no Debian mirror found in /etc/apt; set AIRSTRIP_DEBIAN_MIRROR to one")


def image_tag() -> str:
    recipe = json.dumps([SUITE, sorted(PACKAGES), RECIPE_VERSION, ROOTFS_TWEAKS])
    return f"{IMAGE_REPO}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


ROOTFS_TWEAKS = r"""
set -e
# systemd makes a fresh machine-id on each boot of each host
: > etc/machine-id
rm -f var/lib/dbus/machine-id
mkdir -p root/.ssh && chmod 700 root/.ssh
# units that have nothing to do in a container
for u in systemd-udevd.service systemd-udev-trigger.service getty@tty1.service \
         systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount; do
  ln -sf /dev/null etc/systemd/system/$u
done
echo 'UseDNS no' > etc/ssh/sshd_config.d/airstrip-test.conf
rm -rf var/cache/apt/archives/*.deb
"""


def ensure_image(args: argparse.Namespace) -> str:
    cmd_engine(args)
    tag = image_tag()
    if docker("images", "-q", tag):
        return tag
    workdir = Path(os.environ.get("AIRSTRIP_BUILD_DIR", "/var/tmp"))
    free = shutil.disk_usage(workdir).free
    if free < IMAGE_MIN_FREE_BYTES:
        raise HarnessError(
            f"{workdir} has {free // 1024 ** 2} MiB free; building the base image needs "
            f"{IMAGE_MIN_FREE_BYTES // 1024 ** 2} MiB: free some space or set AIRSTRIP_BUILD_DIR")
    if not shutil.which("debootstrap"):
        if os.geteuid() != 0 or not is_debian():
            raise HarnessError("debootstrap is missing: install it (apt-get install debootstrap)")
        apt_install("debootstrap")
    mirror = debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airstrip-rootfs-", dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} into {rootfs}")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror])
        run(["sh", "-c", ROOTFS_TWEAKS], cwd=rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "--change", 'CMD ["/sbin/init"]',
             "-", tag], stdin=tar.stdout)
        tar.wait()
    log(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def cmd_image(args: argparse.Namespace) -> None:
    print(ensure_image(args))


# ---------------------------------------------------------------- network and hosts
def network_name(env: str) -> str:
    return f"airstrip-{env}"


def network_exists(env: str) -> bool:
    return bool(docker("network", "ls", "-q", "--filter", f"name=^{network_name(env)}$"))


def ensure_network(env: str) -> dict:
    name = network_name(env)
    if not network_exists(env):
        used = set()
        for net in docker("network", "ls", "-q").split():
            for cfg in json.loads(docker("network", "inspect", net))[0]["IPAM"]["Config"] or []:
                used.add(cfg.get("Subnet"))
        start = int(hashlib.sha256(env.encode()).hexdigest(), 16) % 200
        for i in range(200):
            subnet = f"172.29.{(start + i) % 200 + 20}.0/24"
            if subnet not in used:
                break
        else:
            raise HarnessError("no free 172.29.x.0/24 subnet for a test network")
        docker("network", "create", "--driver", "bridge", "--subnet", subnet, "--label", f"{LABEL}={env}", name)
    info = json.loads(docker("network", "inspect", name))[0]
    cfg = info["IPAM"]["Config"][0]
    return {"name": name, "subnet": cfg["Subnet"], "gateway": cfg.get("Gateway") or cfg["Subnet"].rsplit(".", 1)[0] + ".1"}


def ssh_key() -> Path:
    key = STATE_DIR / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "airstrip-testhosts", "-f", str(key)])
    return key


def container_name(env: str, host: str) -> str:
    return f"airstrip-{env}-{host}"


def host_address(net: dict, index: int) -> str:
    return net["subnet"].rsplit(".", 1)[0] + f".{10 + index}"


def wait_ssh(addr: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((addr, 22), timeout=2) as sock:
                if sock.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise HarnessError(f"host {addr} did not answer SSH within {timeout:.0f} s")


def ensure_host(env: str, host: str, index: int, net: dict, image: str, key: Path) -> dict:
    name = container_name(env, host)
    addr = host_address(net, index)
    state = docker("ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.State}} {{.Image}}")
    if state and state != f"running {image}":
        log(f"removing stale host {name} ({state})")
        docker("rm", "-f", "-v", name)
        state = ""
    if not state:
        cmd = ["run", "-d", "--name", name, "--hostname", host, "--label", f"{LABEL}={env}",
               "--network", net["name"], "--ip", addr, "--network-alias", host,
               "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
               "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
               "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
               "--security-opt", "systempaths=unconfined",
               "-v", f"{key}.pub:/root/.ssh/authorized_keys:ro"]
        cmd += ["--cap-drop", "ALL"] + [arg for cap in CAPABILITIES for arg in ("--cap-add", cap)]
        docker(*cmd, image, "/sbin/init")
    return {"instance": host, "address": addr, "user": "root", "port": 22, "identity_file": str(key)}


def cmd_up(args: argparse.Namespace) -> None:
    image = ensure_image(args)
    key = ssh_key()
    net = ensure_network(args.env)
    hosts = [spec.split(":", 1)[0] for spec in args.hosts]
    wanted = {container_name(args.env, h) for h in hosts}
    for other in docker("ps", "-a", "--filter", f"label={LABEL}={args.env}", "--format", "{{.Names}}").split():
        if other not in wanted:
            log(f"removing {other}: not in this environment any more")
            docker("rm", "-f", "-v", other)
    instances = [ensure_host(args.env, h, i, net, image, key) for i, h in enumerate(hosts)]
    for inst in instances:
        wait_ssh(inst["address"])
    if args.moto:
        start_moto(args.env, net)
    out = json.dumps(instances, indent=2)
    if args.instance_config:
        Path(args.instance_config).write_text(out)
    if args.inventory:
        write_inventory(Path(args.inventory), args.hosts, instances, key, net)
    print(out)


def write_inventory(path: Path, specs: list[str], instances: list[dict], key: Path, net: dict) -> None:
    groups: dict[str, list[str]] = {}
    for spec in specs:
        host, _sep, grp = spec.partition(":")
        for g in filter(None, grp.split(",")):
            groups.setdefault(g, []).append(host)
    inv = {"all": {
        "hosts": {i["instance"]: {"ansible_host": i["address"], "ansible_user": "root"} for i in instances},
        "vars": {
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "airstrip_test_aws_endpoint": f"http://{net['gateway']}:{MOTO_PORT}",
        },
        "children": {g: {"hosts": {h: {} for h in hs}} for g, hs in groups.items()},
    }}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(inv, indent=2))


# ---------------------------------------------------------------- emulated AWS
def moto_pidfile(env: str) -> Path:
    return STATE_DIR / "envs" / env / "moto.pid"


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_moto(env: str, net: dict) -> str:
    endpoint = f"http://{net['gateway']}:{MOTO_PORT}"
    pidfile = moto_pidfile(env)
    if pid_alive(pidfile):
        return endpoint
    try:
        import moto.server  # noqa: F401  (the emulated AWS runs moto's server)
    except ImportError:
        raise HarnessError("moto is missing: install the dev requirements (make venv)") from None
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    # Bound to the test network's gateway only: the controller and the test hosts reach it,
    # nothing else does.
    with open(pidfile.with_suffix(".log"), "ab") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("emulated_aws.py")),  # noqa: S603
                                 "-H", net["gateway"], "-p", str(MOTO_PORT)],
                                stdout=out, stderr=out, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((net["gateway"], MOTO_PORT), timeout=1).close()
            log(f"emulated AWS at {endpoint}")
            return endpoint
        except OSError:
            time.sleep(0.3)
    raise HarnessError(f"moto server did not start; see {pidfile.with_suffix('.log')}")


def cmd_moto(args: argparse.Namespace) -> None:
    cmd_engine(args)
    print(start_moto(args.env, ensure_network(args.env)))


def cmd_info(args: argparse.Namespace) -> None:
    net = engine_ok() and network_exists(args.env)
    hosts = docker("ps", "--filter", f"label={LABEL}={args.env}", "--format", "{{.Names}}").split() if net else []
    info = {"env": args.env, "network": None, "hosts": hosts, "aws_endpoint": None}
    if net:
        info["network"] = ensure_network(args.env)
        if pid_alive(moto_pidfile(args.env)):
            info["aws_endpoint"] = f"http://{info['network']['gateway']}:{MOTO_PORT}"
    print(json.dumps(info, indent=2))


def cmd_down(args: argparse.Namespace) -> None:
    pid = pid_alive(moto_pidfile(args.env))
    if pid:
        os.killpg(pid, signal.SIGTERM)
    moto_pidfile(args.env).unlink(missing_ok=True)
    if not engine_ok():
        return
    names = docker("ps", "-a", "--filter", f"label={LABEL}={args.env}", "--format", "{{.Names}}").split()
    if names:
        docker("rm", "-f", "-v", *names)
    if network_exists(args.env):
        docker("network", "rm", network_name(args.env))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("engine").set_defaults(func=cmd_engine)
    sub.add_parser("image").set_defaults(func=cmd_image)
    up = sub.add_parser("up")
    up.add_argument("env")
    up.add_argument("hosts", nargs="+", help="HOST or HOST:GROUP1,GROUP2 (groups go to --inventory)")
    up.add_argument("--moto", action="store_true", help="also start the emulated AWS endpoint")
    up.add_argument("--instance-config", help="write molecule's instance config here")
    up.add_argument("--inventory", help="write an Ansible inventory (JSON, which is YAML) here")
    up.set_defaults(func=cmd_up)
    for name, func in (("moto", cmd_moto), ("info", cmd_info), ("down", cmd_down)):
        p = sub.add_parser(name)
        p.add_argument("env")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except HarnessError as exc:
        print(f"testhosts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
