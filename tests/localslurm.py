"""A throwaway Slurm cluster on 127.0.0.1: one munged, one slurmctld, one ``slurmd -N`` per board.

For the test suite, the throughput benchmark and demos: the real Debian daemons
(``slurm-wlm`` 22.05, ``munge``), configured in a private directory and stopped
by ``stop()``. Every board is a logical node with its own port; its architecture
is only a node feature (an arm64 job on an amd64 host runs its container under
QEMU), and a GPU is a GRES backed by ``/dev/null`` so that placement, not CUDA,
is what is exercised.

Why the details: munged refuses a key or socket directory that others can
write, and as the munge user it cannot enter a root-only temporary directory,
so it gets its own ``/tmp/rp-munge-*``; ``SLURMD_NODENAME`` (not ``%N``, which is
the host name for all boards) names the board inside a job; completion records
go to ``jobcomp/filetxt`` because ``sacct`` would need slurmdbd and MariaDB.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import EnvironmentMissing, RequestPackError

log = logging.getLogger(__name__)

DAEMONS = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client"}


@dataclass(frozen=True)
class Board:
    name: str
    features: tuple[str, ...]
    gpus: int = 0
    cpus: int = 1


@dataclass
class LocalCluster:
    """Start with ``start()`` (or as a context manager); ``env`` is what a client needs (``SLURM_CONF``)."""

    boards: tuple[Board, ...]
    root: Path
    partition: str = "farm"
    kill_wait: int = 5
    cred_expire: int = 10
    procs: list[subprocess.Popen] = field(default_factory=list)
    munge_dir: Path | None = None

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def jobcomp(self) -> Path:
        return self.root / "jobcomp.txt"

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start ------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        for tool, package in DAEMONS.items():
            if shutil.which(tool) is None:
                raise EnvironmentMissing(f"{tool} is not installed", fix=f"apt-get install -y slurm-wlm munge ({package})")
        self.root.mkdir(parents=True, exist_ok=True)
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(exist_ok=True)
        try:
            socket_path = self._start_munge()
            self._write_config(socket_path)
            self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
            self._wait_port(self.ctld_port, timeout)
            for b in self.boards:
                (self.root / "spool" / b.name).mkdir(exist_ok=True)
                self._spawn(["slurmd", "-D", "-N", b.name, "-f", str(self.conf)], f"slurmd-{b.name}")
            self.wait_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_munge(self) -> str:
        munge = pwd.getpwnam("munge")
        self.munge_dir = Path(tempfile.mkdtemp(prefix="rp-munge-"))
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        os.chmod(self.munge_dir, 0o700)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        sock = self.munge_dir / "munge.socket"
        argv = ["runuser", "-u", "munge", "--", "munged", "--foreground", "--force", f"--socket={sock}",
                f"--key-file={key}", f"--pid-file={self.munge_dir / 'munged.pid'}",
                f"--log-file={self.munge_dir / 'munged.log'}", f"--seed-file={self.munge_dir / 'munged.seed'}"]
        self._spawn(argv, "munged")
        deadline = time.monotonic() + 20
        while not sock.exists():
            if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                raise EnvironmentMissing(f"munged did not start: {self._tail('munged')}")
            time.sleep(0.1)
        return str(sock)

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _write_config(self, munge_socket: str) -> None:
        self.ctld_port = self._free_port()
        r = self.root
        lines = [
            "ClusterName=requestpack", "SlurmctldHost=localhost(127.0.0.1)", f"SlurmctldPort={self.ctld_port}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            # ReturnToService=1: a board an admin set DOWN stays down while its slurmd still answers.
            # A requeued job waits out the old credential's lifetime (default 120 s) before it may start again.
            f"AuthInfo=socket={munge_socket},cred_expire={self.cred_expire}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool' / '%n'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SchedulerType=sched/backfill",
            "GresTypes=gpu", "JobRequeue=1", "ReturnToService=1", f"KillWait={self.kill_wait}",
            # The scheduler reacts within a second, so a few hundred short jobs are not paced by it.
            "SchedulerParameters=sched_interval=1,default_queue_depth=1000,batch_sched_delay=0",
            "MessageTimeout=30", "SlurmdTimeout=300", "InactiveLimit=0", "MinJobAge=3600", "MaxJobCount=100000",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={self.jobcomp}",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "SlurmctldDebug=info", "SlurmdDebug=info",
        ]
        for b in self.boards:
            gres = f" Gres=gpu:{b.gpus}" if b.gpus else ""
            lines.append(f"NodeName={b.name} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
                         f"Port={self._free_port()} CPUs={b.cpus} RealMemory=1 Features={','.join(b.features)}{gres} State=UNKNOWN")
        lines.append(f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        gres_lines = ["AutoDetect=off"] + [f"NodeName={b.name} Name=gpu Count={b.gpus} File=/dev/null"
                                           for b in self.boards if b.gpus]
        (r / "gres.conf").write_text("\n".join(gres_lines) + "\n")

    def _spawn(self, argv: list[str], name: str) -> None:
        log.info("+ %s", " ".join(argv))
        out = (self.root / "log" / f"{name}.out").open("ab")
        self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def _tail(self, name: str) -> str:
        p = self.root / "log" / f"{name}.out"
        return " | ".join(p.read_text(errors="replace").strip().splitlines()[-5:]) if p.is_file() else ""

    def _wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise EnvironmentMissing(f"slurmctld exited: {self._tail('slurmctld')}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise EnvironmentMissing(f"slurmctld did not listen on {port}: {self._tail('slurmctld')}")

    def node_states(self) -> dict[str, str]:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, env=self.env)
        return dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if len(states) == len(self.boards) and all(s == "idle" for s in states.values()):
                return
            time.sleep(0.3)
        raise EnvironmentMissing(f"boards not idle after {timeout:.0f} s: {states}; slurmctld: {self._tail('slurmctld')}")

    def scontrol(self, *args: str) -> str:
        proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, env=self.env)
        if proc.returncode != 0:
            raise RequestPackError(f"scontrol {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    # --- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None
