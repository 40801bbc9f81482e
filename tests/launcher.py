"""Ray's cluster launcher for real on this machine: ``ray up`` / ``ray submit`` / ``ray down``
with ``cluster/onprem.yaml``'s ``local`` provider, over ssh to 127.0.0.1 and rsync.

- :func:`missing` says why it cannot run here (not root, no sshd, rsync, ...), for a skip.
- :class:`LocalMachines` makes three "machines" of this one, as a lab has them:
  - a **dedicated user** (``useradd``), so that the ``ray stop`` that Ray's start commands
    and ``ray down`` run as that user ends only its own processes, never another Ray of
    this machine;
  - a **private sshd** on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all loopback), on a free
    non-default port, key-only, ``AllowUsers`` that user, ``UsePAM no``, its own PidFile;
    each address is one machine (the head, a gpu_small worker, a gpu_large worker). The
    ``ray`` CLI reaches them through an ssh proxy command that sets the port (Ray's auth
    config has no port); the head's autoscaler, whose copy of the config Ray strips of the
    proxy command, through the user's ``~/.ssh/config``;
  - a stand-in ``nvidia-smi`` that lists the GPUs of the machine an ssh session reached
    (the server address in ``$SSH_CONNECTION``): none on the head, one 24 GB-class card on
    127.0.0.2, one 80 GB-class card on 127.0.0.3 (stand-in sizes, not measured cards).
    Ray gets them as logical GPUs; trials are CPU-only (``--smoke-test``);
  - a **Python the user can run** with this environment's packages, without loosening any
    permission: the interpreter and site-packages are used in place when every user can
    read them, else hard-linked (copied when on another filesystem) into this run's own
    folder (a venv whose interpreter lives in a mode-700 home, e.g. /root/.pyenv, is not
    runnable by another user);
  - the user's ``~/.bashrc``, as a lab's activates its environment: that Python first on
    ``PATH``; each machine's own ``RAY_TMPDIR`` and ``TMPDIR`` (inside this run's folder;
    like separate machines' /tmp: Ray nodes starting at once in one folder pick the same
    socket names); ``RAY_ADDRESS`` from the machine's Ray address file
    (``address="auto"`` would find every Ray of this machine).
- :func:`launch_config` is ``cluster/onprem.yaml`` with only the addresses, the ports (the
  ssh port through the proxy command), the paths (the key; each worker's own temporary folder) and the CPU counts changed;
  :func:`normalise` masks exactly those, so a test can check that nothing else differs.

:meth:`LocalMachines.close` runs ``ray down`` if the cluster is still up, ends every process
of the user and every ssh client of this run (by pid), stops the sshd, deletes the user and
its home, and removes every file of this run (Ray's config cache and ssh control folders
included); :meth:`LocalMachines.leftovers` lists what is still there.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

import resources

ROOT = Path(__file__).resolve().parents[1]
ONPREM = ROOT / "cluster" / "onprem.yaml"
SSHD = "/usr/sbin/sshd"
RAY_CLI = Path(sys.executable).parent / "ray"  # this environment's ray command
HEAD, SMALL, LARGE = "127.0.0.1", "127.0.0.2", "127.0.0.3"
GPUS_MIB = {SMALL: [24000], LARGE: [81000]}  # stand-in sizes: one 24 GB-class, one 80 GB-class
CPUS = {"head": 1, "worker": 2}
# the ssh port, as a proxy command (Ray's auth config has no port setting)
PROXY = "bash -c 'exec 3<>/dev/tcp/%h/{port}; cat <&3 & exec cat >&3'"
PORT_FLAG = re.compile(r"(--[a-z-]*port=|\$RAY_HEAD_IP:)\d+")
CPU_FLAG = re.compile(r" --num-cpus=\d+")
WORKER_TEMP_DIR = "--temp-dir=$RAY_TMPDIR/ray"  # a path: each machine's own (tests only)
COMMANDS = ("setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands", "initialization_commands")


def missing() -> str | None:
    """Why the launcher test cannot run on this machine (None when it can)."""
    if os.geteuid() != 0:
        return "not root: the test creates a dedicated user for its cluster"
    if not os.access(RAY_CLI, os.X_OK):
        return f"no ray command beside this Python ({RAY_CLI})"
    if not os.access(SSHD, os.X_OK):
        return f"no sshd ({SSHD}): apt-get install openssh-server (.ci/run does)"
    for tool, package in (("rsync", "rsync"), ("ssh", "openssh-client"),
                          ("ssh-keygen", "openssh-client"), ("pgrep", "procps"),
                          ("useradd", "passwd"), ("userdel", "passwd"), ("runuser", "util-linux")):
        if shutil.which(tool) is None:
            return f"no {tool}: apt-get install {package} (.ci/run does)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------
# The test config
# ----------------------------------------------------------------------------------------
def launch_config(user: str, key: str, ssh_port: int, ports: dict[str, int]) -> dict[str, Any]:
    """``cluster/onprem.yaml`` for these machines: addresses, ports, paths, CPU counts."""
    cfg = yaml.safe_load(ONPREM.read_text())
    cfg["provider"].update(head_ip=HEAD, worker_ips=[SMALL, LARGE])
    cfg["auth"] = {"ssh_user": user, "ssh_private_key": key,
                   "ssh_proxy_command": PROXY.format(port=ssh_port)}

    def moved(cmd: str, cpus: int) -> str:
        for flag, port in ports.items():  # a free port, or 0 (any) where many nodes share one
            cmd = re.sub(rf"{re.escape(flag)}\d+", f"{flag}{port}", cmd)
        return cmd.replace(" $FLAGS", f" --num-cpus={cpus} $FLAGS")

    cfg["head_start_ray_commands"] = [moved(c, CPUS["head"]) for c in cfg["head_start_ray_commands"]]
    # each worker in its machine's temporary folder: by default a worker uses the head's
    # path, which on one machine is one folder, where two workers starting at once pick the
    # same socket names
    cfg["worker_start_ray_commands"] = [
        moved(c, CPUS["worker"]).replace(" $FLAGS", f" {WORKER_TEMP_DIR} $FLAGS")
        for c in cfg["worker_start_ray_commands"]]
    return cfg


def normalise(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with the addresses, ports, paths and CPU counts masked (and the user, a
    placeholder of the file): what must be the same in the test config and the file."""
    c = copy.deepcopy(cfg)
    c["provider"]["head_ip"] = "ADDRESS"
    c["provider"]["worker_ips"] = ["ADDRESS"] * len(c["provider"]["worker_ips"])
    auth = c["auth"]
    proxy = auth.pop("ssh_proxy_command", None)
    if proxy is not None and re.sub(r"/\d+;", "/{port};", proxy) != PROXY:
        auth["ssh_proxy_command"] = proxy  # anything but the port: a difference
    auth.update(ssh_user="USER", ssh_private_key="PATH")
    for key in COMMANDS:
        c[key] = [CPU_FLAG.sub("", PORT_FLAG.sub(r"\1PORT", cmd)).replace(f" {WORKER_TEMP_DIR}", "")
                  for cmd in c.get(key, [])]
    return c


# ----------------------------------------------------------------------------------------
# The machines
# ----------------------------------------------------------------------------------------
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr or out.stdout}")
    return out


def _world_readable(path: Path) -> bool:
    """Can any user read ``path`` (every folder above it searchable by others)?"""
    path = path.resolve()
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


def _processes_of_uid(uid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid:
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _end(pids: list[int], alive) -> list[int]:
    """SIGTERM, then SIGKILL, ``pids`` while ``alive(pid)``; returns those left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        for _ in range(50):
            if not [p for p in pids if alive(p)]:
                return []
            time.sleep(0.1)
    return [p for p in pids if alive(p)]


class LocalMachines:
    """Three ssh "machines" of this one for Ray's ``local`` provider; see the module docstring."""

    def __init__(self) -> None:
        resources.require("cluster")
        self.tmp = Path(tempfile.mkdtemp(prefix="kdl-", dir="/tmp"))  # short: Ray's socket paths
        self.tmp.chmod(0o755)
        self.user = f"kdl{uuid.uuid4().hex[:8]}"
        self.launcher_user = f"{self.user}-launcher"  # $USER of the ray CLI: its ssh folders
        self.home = self.tmp / "home"
        self.key = self.tmp / "id_ed25519"
        self.ssh_port = free_port()
        self.config_path = self.tmp / "onprem-test.yaml"
        self.sshd: subprocess.Popen | None = None
        self.created_run_sshd = False
        self.uid: int | None = None
        self.up = False

    # -- setting up --------------------------------------------------------------------
    def start(self) -> None:
        self._user()
        self._sshd()
        self._machines()
        self._bashrc(self._python())
        gcs = free_port()
        ports = {"--port=": gcs, "$RAY_HEAD_IP:": gcs, "--dashboard-port=": free_port(),
                 "--dashboard-agent-listen-port=": 0, "--min-worker-port=": 0,
                 "--max-worker-port=": 0}
        self.config = launch_config(self.user, str(self.key), self.ssh_port, ports)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _user(self) -> None:
        _run(["useradd", "--create-home", "--home-dir", str(self.home), "--shell", "/bin/bash",
              "--password", "*", self.user])  # '*': no password login; a locked '!' is refused
        self.uid = pwd.getpwnam(self.user).pw_uid
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.user, "-f", str(self.key)])
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        # the head's autoscaler reaches the workers as this user; Ray drops the proxy command
        # from the head's copy of the config, so the port comes from the user's ssh config
        (ssh / "config").write_text(f"Host {HEAD} {SMALL} {LARGE}\n    Port {self.ssh_port}\n")
        for f in ("authorized_keys", "config"):
            (ssh / f).chmod(0o600)
        _run(["chown", "-R", f"{self.user}:", str(ssh)])

    def _sshd(self) -> None:
        host_key = self.tmp / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        conf = self.tmp / "sshd_config"
        conf.write_text("\n".join([
            *(f"ListenAddress {a}" for a in (HEAD, SMALL, LARGE)), f"Port {self.ssh_port}",
            f"HostKey {host_key}", f"PidFile {self.tmp}/sshd.pid", f"AllowUsers {self.user}",
            "AuthenticationMethods publickey", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no",
            "UsePAM no", "AuthorizedKeysFile .ssh/authorized_keys", "X11Forwarding no",
            "PrintMotd no", "MaxStartups 50", "MaxSessions 50", ""]))
        if not os.path.isdir("/run/sshd"):  # sshd's privilege separation folder
            os.makedirs("/run/sshd", mode=0o755)
            self.created_run_sshd = True
        self.sshd = subprocess.Popen([SSHD, "-D", "-f", str(conf), "-E", str(self.tmp / "sshd.log")])
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((LARGE, self.ssh_port), timeout=1):
                    return
            except OSError:
                if self.sshd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(self.tmp / 'sshd.log').read_text()}")
                time.sleep(0.2)

    def _readable(self, path: Path, name: str, exclude: str | None = None) -> Path:
        """``path``, or a copy of it (hard links where possible) that the user can read."""
        if _world_readable(path):
            return path
        dest = self.tmp / name
        _run(["rsync", "-a", f"--link-dest={path}", *(["--exclude", exclude] if exclude else []),
              f"{path}/", f"{dest}/"], timeout=1800)
        return dest

    def _python(self) -> Path:
        """A venv the user can run, with this environment's packages and a ``ray`` command;
        returns the interpreter's install (its ``lib`` holds libpython)."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        base = self._readable(Path(sys.base_prefix), "python", exclude=f"/lib/{version}/site-packages")
        deps = self._readable(Path(sysconfig.get_paths()["purelib"]), "site-packages")
        venv = self.home / "venv"
        _run(["runuser", "-u", self.user, "--", "env", "PATH=/usr/bin:/bin",
              f"LD_LIBRARY_PATH={base}/lib", str(base / "bin" / version), "-m", "venv",
              "--without-pip", str(venv)])
        (venv / "lib" / version / "site-packages" / "kdray-test-deps.pth").write_text(f"{deps}\n")
        ray = venv / "bin" / "ray"  # the console script pip would write
        ray.write_text(f"#!{venv}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\n"
                       f"sys.exit(main())\n")
        ray.chmod(0o755)
        return base

    def _machines(self) -> None:
        """Each machine's stand-in GPUs (read by the stand-in nvidia-smi, by the address its
        ssh session reached) and its own temporary folders."""
        fake = self.tmp / "fakebin"
        fake.mkdir()
        (fake / "nvidia-smi").write_text(
            "#!/bin/sh\n# stand-in: the GPUs of the machine (address) this ssh session reached\n"
            f'set -- $SSH_CONNECTION\n[ -n "$3" ] && [ -f "{self.tmp}/gpus/$3" ] && '
            f'cat "{self.tmp}/gpus/$3"\nexit 0\n')
        (fake / "nvidia-smi").chmod(0o755)
        (self.tmp / "gpus").mkdir()
        for address, sizes in GPUS_MIB.items():
            (self.tmp / "gpus" / address).write_text("".join(f"{m}\n" for m in sizes))
        for address in (HEAD, SMALL, LARGE):
            for folder in (self.machine_dir(address), self.machine_dir(address) / "tmp"):
                folder.mkdir(mode=0o700, parents=True)
                shutil.chown(folder, self.user)

    def _bashrc(self, python: Path) -> None:
        """What a lab's ~/.bashrc does (its Python first on PATH), and each machine's /tmp."""
        with open(self.home / ".bashrc", "a") as f:
            f.write(f"\nexport PATH={self.tmp}/fakebin:{self.home}/venv/bin:$PATH "
                    f"LD_LIBRARY_PATH={python}/lib\n"
                    f'read -r _ _ KDRAY_TEST_MACHINE _ <<< "$SSH_CONNECTION"\n'
                    f"KDRAY_TEST_MACHINE={self.tmp}/m/${{KDRAY_TEST_MACHINE##*.}}\n"
                    f"export RAY_TMPDIR=$KDRAY_TEST_MACHINE TMPDIR=$KDRAY_TEST_MACHINE/tmp\n"
                    f"[ -f $RAY_TMPDIR/ray/ray_current_cluster ] && "
                    f"export RAY_ADDRESS=$(cat $RAY_TMPDIR/ray/ray_current_cluster)\n"
                    f"true\n")

    def machine_dir(self, address: str) -> Path:
        """The temporary folder of the "machine" reached at ``address`` (its RAY_TMPDIR;
        TMPDIR is its ``tmp``), short: Ray's socket paths must stay under 108 bytes."""
        return self.tmp / "m" / address.rsplit(".", 1)[1]

    # -- the launcher ------------------------------------------------------------------
    def ray(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """The ray CLI as root from the repository root (file_mounts' `.`), on this run's files."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TMPDIR"))}
        (self.tmp / "launcher-tmp").mkdir(exist_ok=True)
        env.update(RAY_UP_enable_autoscaler_v2="0", RAY_TMPDIR=str(self.tmp / "launcher-tmp"),
                   TMPDIR=str(self.tmp / "launcher-tmp"), USER=self.launcher_user,
                   LOGNAME=self.launcher_user)
        if args[0] == "up":
            self.up = True
        try:
            return subprocess.run([str(RAY_CLI), *args], capture_output=True, text=True, cwd=ROOT,
                                  env=env, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return subprocess.CompletedProcess(e.cmd, 124, out + f"\n[timed out after {timeout} s]", "")

    # -- cleaning up -------------------------------------------------------------------
    def _ssh_folders(self) -> list[Path]:
        """Ray's ssh control folders of this run: /tmp/ray_ssh_<hash of $USER>."""
        return [Path(f"/tmp/ray_ssh_{hashlib.sha256(u.encode()).hexdigest()[:10]}")
                for u in (self.user, self.launcher_user)]

    def _our_ssh_clients(self) -> list[int]:
        """Root's ssh/rsync processes of this run (ssh keeps a control master 10 s)."""
        return [p for p in _processes_of_uid(0)
                if f"{self.user}@" in _cmdline(p) and p != os.getpid()]

    def keep_logs(self, dest: Path) -> None:
        """Copy the head's Ray logs (the autoscaler's monitor.* among them) and the sshd log
        to ``dest``, for a failed test."""
        dest.mkdir(parents=True, exist_ok=True)
        for address in (HEAD, SMALL, LARGE):
            logs = self.machine_dir(address) / "ray" / "session_latest" / "logs"
            for f in [*logs.glob("monitor*"), *logs.glob("raylet*"), *logs.glob("python-core-driver*")]:
                if f.is_file():
                    shutil.copy(f, dest / f"{address}-{f.name}")
        if (self.tmp / "sshd.log").is_file():
            shutil.copy(self.tmp / "sshd.log", dest / "sshd.log")

    def close(self) -> None:
        if self.up:
            self.up = False
            self.ray("down", "-y", str(self.config_path), timeout=300)
        if self.uid is not None:
            uid = self.uid
            _end(_processes_of_uid(uid), lambda p: Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}").stat().st_uid == uid)
        _end(self._our_ssh_clients(), lambda p: Path(f"/proc/{p}").exists())
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(timeout=10)
        if self.uid is not None:
            subprocess.run(["userdel", "--remove", self.user], capture_output=True, timeout=60)
            self.uid = None
        for folder in [self.tmp, *self._ssh_folders()]:
            shutil.rmtree(folder, ignore_errors=True)
        if self.created_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
            self.created_run_sshd = False

    def leftovers(self) -> list[str]:
        """What of this run is still on the machine (nothing, after :meth:`close`)."""
        out = []
        try:
            uid = pwd.getpwnam(self.user).pw_uid
            out.append(f"user {self.user}")
            out += [f"process {p} of {self.user}: {_cmdline(p)[:200]}" for p in _processes_of_uid(uid)]
        except KeyError:
            pass
        if self.sshd is not None and self.sshd.poll() is None:
            out.append(f"sshd {self.sshd.pid}")
        out += [f"ssh client {p}: {_cmdline(p)[:200]}" for p in self._our_ssh_clients()]
        out += [f"file {f}" for f in [self.tmp, *self._ssh_folders()] if f.exists()]
        out += [f"ray process {p}: {_cmdline(p)[:200]}" for p in _processes_of_uid(0)
                if str(self.tmp) in _cmdline(p)]
        return out
