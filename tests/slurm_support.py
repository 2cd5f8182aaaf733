"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd started on this machine.

Everything is private to the cluster's folder: its own munge key and socket, its own
``slurm.conf`` (the client commands find it through ``SLURM_CONF``), free ports on the loopback,
state, spool and logs; the daemons are stopped by their pid files at teardown. The configuration
is the one measured to work on a Debian 12 machine without systemd (``SLURM.md`` of the project):
no cgroups, no accounting, scheduling at once, and a dependent job cancelled (not left pending)
when a job it depends on fails.

The cluster needs root and Debian's ``slurm-wlm`` and ``munge``; where they are missing the tests
using it are skipped, unless ``DEEP_PRL_REQUIRE_SLURM=1`` (``.ci/run`` sets it after installing
them), where that is a failure.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

#: The commands the cluster needs.
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")

CONFIG = """\
ClusterName=deepprltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
DependencyParameters=kill_invalid_depend
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def unavailable() -> str | None:
    """Why no cluster can be started here, or ``None``."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        return f"SLURM and munge are not installed ({', '.join(missing)} missing: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd runs as root, and these tests do not"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no munge account (apt-get install munge)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A one-node cluster in ``root``: submit batch scripts and wait for them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.pid_files = []

    def start(self) -> None:
        root = self.root
        root.chmod(0o755)
        for name in ("state", "spool", "log", "munge"):
            (root / name).mkdir()
        munge = root / "munge"
        shutil.chown(munge, "munge", "munge")
        munge.chmod(0o711)  # munged wants its socket's folder searchable by all and writable by it alone
        as_munge = ["runuser", "-u", "munge", "--"]
        subprocess.run([*as_munge, "mungekey", "--create", f"--keyfile={munge}/munge.key"], check=True)
        subprocess.run([*as_munge, "munged", f"--socket={munge}/munge.socket", f"--key-file={munge}/munge.key",
                        f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                        f"--seed-file={munge}/munged.seed"], check=True)
        self.pid_files.append(munge / "munged.pid")
        (root / "slurm.conf").write_text(CONFIG.format(host=self.host, root=root, ctld_port=free_port(),
                                                       slurmd_port=free_port(), cpus=os.cpu_count() or 1))
        (root / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        subprocess.run(["slurmctld", "-f", str(root / "slurm.conf")], check=True, env=self.env)
        self.pid_files.append(root / "slurmctld.pid")
        subprocess.run(["slurmd", "-f", str(root / "slurm.conf"), "-N", self.host], check=True, env=self.env)
        self.pid_files.append(root / "slurmd.pid")
        deadline = time.monotonic() + 30
        while self._run("sinfo", "-h", "-n", self.host, "-o", "%T").strip() != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node did not become idle:\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the daemons by their pid files, the last started first, and wait for each to exit."""
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, 15)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)

    def _run(self, *command: str) -> str:
        return subprocess.run(command, check=True, capture_output=True, text=True, env=self.env).stdout

    def submit(self, script: str, *options: str, cwd: Path) -> str:
        """Submit the bash ``script`` (from ``cwd``); its job id."""
        path = self.root / f"job-{time.monotonic_ns()}.sh"
        path.write_text("#!/bin/bash\nset -euo pipefail\n" + script)
        return self._run("sbatch", "--parsable", f"--chdir={cwd}", f"--output={self.root}/log/%x-%A_%a.out",
                         *options, str(path)).strip().split(";")[0]

    def wait(self, *jobs: str, timeout: float = 300) -> dict[str, list[str]]:
        """Wait until ``jobs`` (arrays included) have left the queue; the final state of each
        task, by job id."""
        deadline = time.monotonic() + timeout
        while self._run("squeue", "-h", "-j", ",".join(jobs), "-o", "%i").strip():
            if time.monotonic() > deadline:
                self._run("scancel", *jobs)
                raise AssertionError(f"jobs {', '.join(jobs)} did not finish in {timeout:.0f} s:\n{self.logs()}")
            time.sleep(0.5)
        return {job: re.findall(r"JobState=(\S+)", self._run("scontrol", "show", "job", job)) for job in jobs}

    def logs(self) -> str:
        """The jobs' outputs and the daemons' logs, to show when something went wrong."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").iterdir()))


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM cluster for the session (see the module doc)."""
    why = unavailable()
    if why is not None:
        if os.environ.get("DEEP_PRL_REQUIRE_SLURM") == "1":
            pytest.fail(f"DEEP_PRL_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="deep-prl-slurm-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
