"""A real one-node Slurm cluster on this machine, for the tests of ``slurm/``.

``LocalSlurm.start(workdir)`` installs Debian's ``slurm-wlm`` and ``munge`` when
they are missing (as root, with apt-get), starts ``munged``, writes a
``slurm.conf`` for this machine's cores and memory (controller and node daemon
on 127.0.0.1, ports chosen free), starts ``slurmctld`` and ``slurmd``, and waits
for the node to be idle. ``stop()`` cancels what is left and stops the daemons
it started. ``Unavailable`` says why the machine cannot run Slurm.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]
DAEMONS = ["slurmctld", "slurmd", "munged", "sbatch", "scontrol", "sinfo"]
MUNGE_SOCKET_DIR = Path("/run/munge")


class Unavailable(RuntimeError):
    """This machine cannot run a local Slurm; the message says why."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )


def _run(args: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def install_if_missing() -> None:
    if all(_which(name) for name in DAEMONS):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(
            "slurm-wlm and munge are not installed and cannot be installed here "
            "(needs root and apt-get: `apt-get install slurm-wlm munge`)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        out = _run(args, timeout=900, env=env)
        if out.returncode != 0:
            raise Unavailable(f"`{' '.join(args)}` failed:\n{out.stdout[-2000:]}{out.stderr}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    text = Path("/proc/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", text).group(1))
    return max(1024, total_kb // 1024 - 1024)  # leave 1 GiB to the system


def write_config(workdir: Path) -> Path:
    """A slurm.conf for one node (this machine) that small multi-task jobs fit on.

    ``cred_expire=10``: a requeued job waits this long before it may start again
    (Slurm's default is 120 s), which would dominate the preemption test.
    ``FirstJobId`` is random: MPICH names its shared-memory segments after the
    job and step, and a killed MPI job leaves them behind in /dev/shm, where a
    later cluster numbering its jobs from 1 again would collide with them.
    """
    host = socket.gethostname()
    for sub in ("state", "spool", "log"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=hpcrltest
FirstJobId={random.randint(1_000, 60_000_000)}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=3600
KillWait=5
InactiveLimit=0
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/log/slurmctld.log
SlurmdLogFile={workdir}/log/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
"""
    )
    return conf


class LocalSlurm:
    """Handle of the running cluster: ``env`` (with ``SLURM_CONF``), ``sbatch``,
    ``job``, ``wait``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = dict(os.environ)
        self._started: list[tuple[str, Path | int]] = []

    @classmethod
    def start(cls, workdir: Path) -> LocalSlurm:
        if not Path("/proc").exists():
            raise Unavailable("not a Linux machine")
        install_if_missing()
        if os.geteuid() != 0:
            raise Unavailable("starting slurmd and slurmctld needs root")
        cluster = cls(workdir)
        try:
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start(self) -> None:
        self._start_munge()
        conf = write_config(self.workdir)
        self.env["SLURM_CONF"] = str(conf)
        for daemon in ("slurmctld", "slurmd"):
            out = _run([_which(daemon), "-f", str(conf)], env=self.env)
            if out.returncode != 0:
                raise Unavailable(f"{daemon} did not start: {out.stderr}{self._log(daemon)}")
            self._started.append((daemon, self.workdir / f"{daemon}.pid"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = _run(["sinfo", "-h", "-o", "%t"], env=self.env)
            if out.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise Unavailable(f"the node did not come up: sinfo says {out.stdout.strip()!r}")

    def _start_munge(self) -> None:
        if _run(["munge", "-n"]).returncode == 0:
            return  # a munged is already running
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
        out = _run(["runuser", "-u", "munge", "--", _which("munged"), "--num-threads=4"])
        if out.returncode != 0:
            raise Unavailable(f"munged did not start: {out.stderr}")
        pid_file = MUNGE_SOCKET_DIR / "munged.pid"
        self._started.append(("munged", pid_file))

    def _log(self, daemon: str) -> str:
        log = self.workdir / "log" / f"{daemon}.log"
        return log.read_text()[-3000:] if log.exists() else ""

    def sbatch(self, *args: str, cwd: Path | None = None) -> str:
        """Submit; the job id."""
        out = _run(["sbatch", "--parsable", *args], env=self.env, cwd=cwd)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, ...)."""
        out = _run(["scontrol", "show", "job", "-o", job_id], env=self.env)
        assert out.returncode == 0, out.stderr
        fields: dict[str, str] = {}
        for token in out.stdout.split():
            key, _, value = token.partition("=")
            fields[key] = value
        return fields

    def task_pid(self, job_id: str, step: str, task: int) -> int | None:
        """The pid of task (rank) ``task`` of step ``step`` of a running job, from
        ``scontrol listpids``; None while it has not started."""
        out = _run(["scontrol", "listpids", job_id], env=self.env)
        for line in out.stdout.splitlines()[1:]:  # PID JOBID STEPID LOCALID GLOBALID
            fields = line.split()
            if len(fields) == 5 and fields[2] == step and fields[4] == str(task):
                return int(fields[0])
        return None

    def scancel(self, *args: str) -> None:
        out = _run(["scancel", *args], env=self.env)
        assert out.returncode == 0, out.stderr

    def wait(self, job_id: str, timeout: float = 600, restarts: int = 0) -> dict[str, str]:
        """Wait until the job has finished after ``restarts`` requeues; its fields."""
        finished = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            done = fields.get("JobState") in finished
            if done and int(fields.get("Restarts", 0)) >= restarts:
                return fields
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {fields.get('JobState')}: {fields}")
            time.sleep(0.5)

    def stop(self) -> None:
        if "SLURM_CONF" in self.env:
            _run(["scancel", "--user", "root"], env=self.env)
        for name, pid_file in reversed(self._started):
            try:
                os.kill(int(Path(pid_file).read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError) as err:
                print(f"could not stop {name}: {err}")
        self._started.clear()
