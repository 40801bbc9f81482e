"""A real SLURM on this machine, for ``sbatch cluster/slurm.sbatch``: ``munged``,
``slurmctld`` and two ``slurmd`` on 127.0.0.1, from Debian's packages.

- :func:`missing` says why it cannot run here (not root, SLURM or munge not installed), for a
  skip; ``.ci/run`` installs them from Debian when missing.
- :class:`LocalSlurm` starts the daemons from a generated ``slurm.conf`` in a temporary
  folder, all of their files there:
  - a **private munged** (its own key, socket, pid, log and seed files; ``AuthInfo`` points
    SLURM at its socket), so that nothing of the machine's own munge is used or changed;
  - ``slurmctld`` on a free port and two ``slurmd``, ``kd1`` and ``kd2``, each with its own
    ``Port``, spool folder, pid and log file (``slurmd -N kd1``): two machines of this one,
    one CPU each, one partition. ``proctrack/linuxproc``, ``task/none``,
    ``select/cons_tres`` and no cgroup plugin, no accounting: what SLURM needs without
    systemd;
  - :meth:`LocalSlurm.environment` is a submitting user's environment: this Python's
    ``python`` and ``ray`` first on ``PATH``, the checkout on ``PYTHONPATH`` (what an
    installed kdray gives), ``SLURM_CONF``, and ``RAY_TMPDIR`` and ``TMPDIR`` inside the
    folder (short: Ray's socket paths).
- :meth:`LocalSlurm.processes` finds every process of this SLURM and of its jobs (daemons,
  job steps, Ray nodes, the sweep driver) by the folder's path in its command line or its
  open files (a job's output file included), never by a name;
  :meth:`LocalSlurm.close` ends any job, stops the daemons by pid and removes the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import resources
from launcher import _cmdline, free_port
from multinode import _descendants, _session_processes, end_processes

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "cluster" / "slurm.sbatch"
MACHINES = ("kd1", "kd2")
DAEMONS = {"munged": "munge", "mungekey": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd",
           "sbatch": "slurm-client", "scontrol": "slurm-client", "scancel": "slurm-client"}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE")
CONF = """\
ClusterName=kdray-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={tmp}/run/munge.sock
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool-%n
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd-%n.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
MailProg=/bin/true
{nodes}
PartitionName=kdray Nodes={machines} Default=YES MaxTime=INFINITE State=UP
"""
NODE = "NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs=1 State=UNKNOWN"


def missing() -> str | None:
    """Why the SLURM test cannot run on this machine (None when it can)."""
    if os.geteuid() != 0:
        return "not root: the test runs SLURM's daemons, which run as root here"
    for tool, package in DAEMONS.items():
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin") is None:
            how = "(.ci/run does)" if shutil.which("apt-get") else "(no apt-get here)"
            return f"no {tool}: apt-get install {package} {how}"
    if not os.access(Path(sys.executable).parent / "ray", os.X_OK):
        return f"no ray command beside this Python ({sys.executable})"
    return None


def _tool(name: str) -> str:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin") or name


class LocalSlurm:
    """munged, slurmctld and two slurmd on 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        resources.require("cluster")
        self.tmp = Path(tempfile.mkdtemp(prefix="kds-", dir="/tmp"))  # short: Ray's sockets
        self.tmp.chmod(0o755)  # munged requires its socket's folders searchable by all
        self.conf = self.tmp / "slurm.conf"
        self.daemons: dict[str, subprocess.Popen] = {}

    # -- starting ------------------------------------------------------------------------
    def start(self) -> None:
        self._munged()
        ports = {name: free_port() for name in MACHINES}
        nodes = "\n".join(NODE.format(name=n, port=p) for n, p in ports.items())
        self.conf.write_text(CONF.format(tmp=self.tmp, ctld_port=free_port(), nodes=nodes,
                                         machines=",".join(MACHINES)))
        (self.tmp / "state").mkdir()
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._daemon("slurmctld", [_tool("slurmctld"), "-D", "-i", "-f", str(self.conf)], env)
        for name in MACHINES:
            (self.tmp / f"spool-{name}").mkdir()
            self._daemon(f"slurmd-{name}", [_tool("slurmd"), "-D", "-N", name, "-f",
                                            str(self.conf)], env)
        self._wait_until(lambda: self._idle() == set(MACHINES), "both nodes idle in sinfo")

    def _munged(self) -> None:
        keys, run = self.tmp / "munge", self.tmp / "run"
        keys.mkdir(mode=0o700)
        run.mkdir(mode=0o755)
        subprocess.run([_tool("mungekey"), "--create", f"--keyfile={keys}/munge.key"],
                       check=True, capture_output=True, timeout=60)
        self._daemon("munged", [_tool("munged"), "--foreground", f"--socket={run}/munge.sock",
                                f"--key-file={keys}/munge.key", f"--pid-file={keys}/munged.pid",
                                f"--log-file={keys}/munged.log", f"--seed-file={keys}/seed"],
                     dict(os.environ))
        self._wait_until(lambda: (run / "munge.sock").exists(), "munged's socket")

    def _daemon(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = open(self.tmp / f"{name}.out", "w")
        self.daemons[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL)
        log.close()

    def _idle(self) -> set[str]:
        out = self.slurm("sinfo", "--noheader", "--Node", "--format=%N %t")
        return {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == ["idle"]}

    def _wait_until(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [n for n, p in self.daemons.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"SLURM: no {what} after {timeout:.0f} s (ended: {dead}); "
                                   f"{self.logs()}")
            time.sleep(0.2)

    # -- using it ------------------------------------------------------------------------
    def environment(self, **values: str) -> dict[str, str]:
        """A submitting user's environment (module docstring), with ``values``."""
        from conftest import child_environment

        (self.tmp / "tmp").mkdir(exist_ok=True)
        env = child_environment(**values)
        env.pop("RAY_ADDRESS", None)  # the tests' "local"; the job's own cluster is set by it
        env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
                   PYTHONPATH=str(ROOT), SLURM_CONF=str(self.conf), RAY_TMPDIR=str(self.tmp),
                   TMPDIR=str(self.tmp / "tmp"))
        return env

    def slurm(self, tool: str, *args: str, env: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM command from the repository root, on this SLURM."""
        env = env or {**os.environ, "SLURM_CONF": str(self.conf)}
        out = subprocess.run([_tool(tool), *args], capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({out.returncode}): "
                               f"{out.stderr or out.stdout}")
        return out

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields of the job (JobState, ExitCode, ...)."""
        out = self.slurm("scontrol", "--oneliner", "show", "job", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: str, timeout: float = 600) -> dict[str, str]:
        """The job's fields once it has ended (polled; at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while (info := self.job(job_id))["JobState"] not in ENDED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info['JobState']} after {timeout:.0f} s")
            time.sleep(1)
        return info

    def processes(self) -> dict[int, int]:
        """``{pid: start time}`` of every process of this SLURM and its jobs (module
        docstring), the daemons included."""
        return _session_processes(str(self.tmp))

    def daemon_pids(self) -> set[int]:
        """The daemons and their own helpers (slurmctld's slurmscriptd); a job step's
        slurmstepd is not among them (it leaves slurmd)."""
        helpers = {name: _descendants(p.pid) if name in ("slurmctld", "munged") else [p.pid]
                   for name, p in self.daemons.items()}
        return {pid for pids in helpers.values() for pid in pids}

    def job_processes(self) -> list[str]:
        """What of the jobs still runs (job steps, Ray, a driver): every process of
        :meth:`processes` but the daemons', with its command line."""
        daemons = self.daemon_pids()
        return [f"{pid}: {_cmdline(pid)[:200]}" for pid in self.processes() if pid not in daemons]

    def no_job_processes(self, timeout: float = 60) -> list[str]:
        """:meth:`job_processes` once none is left, or after ``timeout`` seconds (a step's
        processes end a moment after SLURM reports the job ended)."""
        deadline = time.monotonic() + timeout
        while (left := self.job_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def logs(self) -> str:
        """The daemons' own logs, for a failure message."""
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
                         for f in sorted(self.tmp.glob("*.log")) + sorted(self.tmp.glob("*.out"))
                         if f.is_file())

    # -- stopping ------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel any job, end whatever of the jobs is left and the daemons, by pid; remove
        the folder."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.slurm("scancel", "--user=root", "--partition=kdray", check=False)
        daemons = self.daemon_pids()
        end_processes({p: t for p, t in self.processes().items() if p not in daemons})
        for name in reversed(list(self.daemons)):  # slurmd, slurmctld, then munged
            proc = self.daemons[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)
        end_processes(self.processes())
        shutil.rmtree(self.tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this SLURM is still on the machine (nothing, after :meth:`close`)."""
        out = [f"process {pid}: {_cmdline(pid)[:200]}" for pid in self.processes()]
        return out + ([f"folder {self.tmp}"] if self.tmp.exists() else [])

