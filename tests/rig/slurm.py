"""A real Slurm cluster on one host for tests and benchmarks: munged, slurmctld, N slurmd.

    rig = SlurmRig("/tmp/rig1", n_nodes=4).start()
    job = rig.submit(["sleep", "5"], nodes="node001")
    rig.wait_job(job, {"COMPLETED"})
    rig.stop()

Everything (keys, sockets, state, logs, pid files) lives under one short directory. Every process
the rig starts carries the environment marker AU_SLURM_RIG=<dir> and names <dir> on its command
line; stop() ends only those. Nodes are named <prefix>001...; each has a directory
<dir>/nodes/<node>/ holding `staged` (what the next boot will run) and `booted` (what it runs).
A reboot (Slurm's RebootProgram, or power_reset() from a test BMC) copies staged -> booted and
restarts the node's slurmd as freshly booted; set_never_back(node) makes reboots leave it down.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ClusterShell.NodeSet import NodeSet

from . import reboot_program as rp

BINARIES = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch", "scancel")
MAX_SOCKET_DIR = 80  # unix socket paths must stay under 108 bytes


class RigError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    """Binaries the rig needs that are not installed (scripts/test.sh installs slurm-wlm, munge)."""
    return [b for b in BINARIES if _which(b) is None]


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return shutil.which(name, path=path)


def _free_ports(count: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _fields(line: str) -> dict[str, str]:
    """`scontrol -o show ...` Key=Value words (Reason= may contain spaces: words without '=' are
    glued on to the value before them)."""
    fields: dict[str, str] = {}
    key = None
    for word in line.split():
        if "=" in word and word.split("=", 1)[0].isalnum():
            key, value = word.split("=", 1)
            fields[key] = value
        elif key:
            fields[key] += " " + word
    return fields


class SlurmRig:
    def __init__(self, directory: str | os.PathLike, n_nodes: int = 4, *, prefix: str = "node",
                 partitions: Mapping[str, str] | None = None, reboot_delay: float = 0.3,
                 cpus: int = 2, features: Mapping[str, str] | None = None, name: str = "aurig"):
        self.dir = Path(directory).absolute()
        if len(str(self.dir)) > MAX_SOCKET_DIR:
            raise RigError(f"rig directory {self.dir} is too long for unix sockets; use a short path")
        self.n_nodes = n_nodes
        self.nodes = [f"{prefix}{i:03d}" for i in range(1, n_nodes + 1)]
        self.partitions = dict(partitions or {"batch": self.hostlist()})
        self.features = dict(features or {})  # hostlist -> comma-separated features
        self.reboot_delay = reboot_delay
        self.cpus = cpus
        self.name = name
        self.conf = self.dir / "etc" / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), **{rp.MARKER: str(self.dir)})
        self._procs: list[subprocess.Popen] = []
        self.started = False

    # --- paths ---------------------------------------------------------------------------------
    def hostlist(self, nodes: Iterable[str] | None = None) -> str:
        return str(NodeSet.fromlist(list(self.nodes if nodes is None else nodes)))

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def staged_file(self, node: str) -> Path:
        return self.node_dir(node) / "staged"

    def booted_file(self, node: str) -> Path:
        return self.node_dir(node) / "booted"

    def booted(self, node: str) -> str:
        try:
            return self.booted_file(node).read_text().strip()
        except FileNotFoundError:
            return ""

    def stage(self, node: str, text: str) -> None:
        self.staged_file(node).write_text(text + "\n")

    # --- life cycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "SlurmRig":
        missing = missing_binaries()
        if missing:
            raise RigError("missing Slurm/munge binaries: " + ", ".join(missing)
                           + " (scripts/test.sh installs slurm-wlm and munge)")
        self._write_files()
        self._start_munged()
        self._start_slurmctld(timeout)
        for node in self.nodes:
            rp.start_slurmd(self.dir, node, fresh_boot=True)
        self.started = True
        self.wait_nodes_state({"IDLE"}, timeout=timeout)
        return self

    def __enter__(self) -> "SlurmRig":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _write_files(self) -> None:
        for sub in ("etc", "munge", "ctl", "jobs", "bin"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "munge", 0o755)
        key = self.dir / "etc" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o600)
        for node in self.nodes:
            (self.node_dir(node) / "spool").mkdir(parents=True, exist_ok=True)
            if not self.booted_file(node).exists():
                self.booted_file(node).write_text("initial\n")
            if not self.staged_file(node).exists():
                self.staged_file(node).write_text("initial\n")
        reboot = self.dir / "bin" / "reboot"
        reboot.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(rp.__file__).absolute()} {self.dir} \"$@\"\n")
        os.chmod(reboot, 0o755)
        ctl_port, *node_ports = _free_ports(1 + len(self.nodes))
        self.ctl_port = ctl_port
        (self.dir / "rig.json").write_text(json.dumps({
            "conf": str(self.conf), "slurmd": _which("slurmd"), "reboot_delay": self.reboot_delay,
        }))
        self.conf.write_text(self._slurm_conf(ctl_port, node_ports))

    def _slurm_conf(self, ctl_port: int, node_ports: Sequence[int]) -> str:
        d = self.dir
        lines = [
            f"ClusterName={self.name}",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={ctl_port}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={d}/munge/sock",
            "CryptoType=crypto/munge", "CredType=cred/munge",
            f"StateSaveLocation={d}/ctl",
            f"SlurmdSpoolDir={d}/nodes/%n/spool",
            f"SlurmctldPidFile={d}/ctl/slurmctld.pid",
            f"SlurmdPidFile={d}/nodes/%n/slurmd.pid",
            f"SlurmctldLogFile={d}/ctl/slurmctld.log",
            f"SlurmdLogFile={d}/nodes/%n/slurmd.log",
            "SlurmctldDebug=info", "SlurmdDebug=info",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2", "ResumeTimeout=60", "SlurmdTimeout=10",
            "MessageTimeout=5", "TCPTimeout=2", "KillWait=2", "MinJobAge=600",
            "SchedulerType=sched/backfill", "SchedulerParameters=batch_sched_delay=0,sched_interval=1",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "ProctrackType=proctrack/pgid", "TaskPlugin=task/none", "MpiDefault=none",
            "SwitchType=switch/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            f"RebootProgram={d}/bin/reboot",
            "SlurmctldParameters=reboot_from_controller",
        ]
        feats = {n: f for hl, f in self.features.items() for n in NodeSet(hl)}
        for node, port in zip(self.nodes, node_ports):
            extra = f" Features={feats[node]}" if node in feats else ""
            lines.append(f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={self.cpus} RealMemory=1000{extra} State=UNKNOWN")
        for i, (part, hl) in enumerate(self.partitions.items()):
            lines.append(f"PartitionName={part} Nodes={hl} Default={'YES' if i == 0 else 'NO'} "
                         "MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=str(self.dir), start_new_session=True)
        self._procs.append(proc)
        return proc

    def _start_munged(self) -> None:
        m = self.dir / "munge"
        self._spawn([_which("munged"), "--foreground", "--force", f"--key-file={self.dir}/etc/munge.key",
                     f"--socket={m}/sock", f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                     f"--seed-file={m}/seed", "--num-threads=4"], m / "munged.out")
        _wait(lambda: (m / "sock").exists(), 10, "munged socket")

    def _start_slurmctld(self, timeout: float) -> None:
        self._spawn([_which("slurmctld"), "-D", "-i", "-f", str(self.conf)], self.dir / "ctl" / "slurmctld.out")
        _wait(lambda: "UP" in self.run(["scontrol", "ping"], check=False).stdout, timeout, "slurmctld UP")

    def stop(self) -> None:
        """Cancel jobs, then end every process of this rig (and nothing else)."""
        if self.started:
            self.run(["scancel", "--full", "--quiet", *self._job_ids()], check=False, timeout=10)
        pids = self.own_pids()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(rp.alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if rp.alive(pid):
                _signal(pid, signal.SIGKILL)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        for pid in pids:  # slurmds this process started (restarts, power resets): reap them
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.started = False

    def own_pids(self) -> list[int]:
        """Processes of this rig: its marker in their environment or its directory in their argv."""
        me, marker = os.getpid(), f"{rp.MARKER}={self.dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in environ or str(self.dir).encode() in cmdline:
                if int(entry.name) != me and rp.alive(int(entry.name)):
                    found.append(int(entry.name))
        return found

    # --- commands ------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        cp = subprocess.run(list(argv), env=self.env, capture_output=True, encoding="utf-8", errors="replace",
                            timeout=timeout, stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise RigError(f"{' '.join(argv)}: {cp.stderr.strip() or cp.stdout.strip()}")
        return cp

    def scontrol(self, *args: str) -> str:
        return self.run(["scontrol", *args]).stdout

    def submit(self, argv: Sequence[str] | str, nodes: str | Sequence[str] | None = None,
               time_limit: str = "10", name: str = "rigjob", partition: str | None = None,
               exclusive: bool = False) -> str:
        """sbatch a command (argv list or shell text); returns the job id. Jobs share nodes
        unless `exclusive`."""
        script = argv if isinstance(argv, str) else " ".join(_quote(a) for a in argv)
        cmd = ["sbatch", "--parsable", f"--job-name={name}", f"--time={time_limit}",
               f"--chdir={self.dir}/jobs", f"--output={self.dir}/jobs/%j.out", "--wrap", script]
        if nodes:
            nodes = nodes if isinstance(nodes, str) else self.hostlist(nodes)
            cmd[1:1] = [f"--nodelist={nodes}", f"--nodes={len(NodeSet(nodes))}"]
        if partition:
            cmd.insert(1, f"--partition={partition}")
        if exclusive:
            cmd.insert(1, "--exclusive")
        return self.run(cmd).stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol -o show job` fields ({} once Slurm forgot the job)."""
        return _fields(self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False).stdout)

    def job_state(self, job_id: str) -> str:
        return self.job_info(job_id).get("JobState", "UNKNOWN")

    def wait_job(self, job_id: str, states: Iterable[str], timeout: float = 60.0) -> str:
        states = set(states)
        return _wait(lambda: (s := self.job_state(job_id)) in states and s, timeout,
                     f"job {job_id} to reach {sorted(states)}", interval=0.2)

    def _job_ids(self) -> list[str]:
        cp = self.run(["squeue", "-h", "-o", "%i"], check=False)
        return cp.stdout.split()

    def node_states(self) -> dict[str, str]:
        """node -> its state as `sinfo -N -o %T` style text, e.g. IDLE, IDLE+DRAIN (scontrol form)."""
        cp = self.run(["scontrol", "-o", "show", "node"], check=False)
        out = {}
        for line in cp.stdout.splitlines():
            fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if "NodeName" in fields:
                out[fields["NodeName"]] = fields.get("State", "")
        return out

    def node_info(self, node: str) -> dict[str, str]:
        return _fields(self.run(["scontrol", "-o", "show", "node", node]).stdout)

    def wait_nodes_state(self, states: set[str], nodes: Iterable[str] | None = None,
                         timeout: float = 60.0) -> dict[str, str]:
        nodes = list(self.nodes if nodes is None else nodes)

        def ready():
            cur = self.node_states()
            return cur if all(cur.get(n) in states for n in nodes) else None
        return _wait(ready, timeout, f"{self.hostlist(nodes)} to be {sorted(states)}", interval=0.2)

    def wait_rebooted(self, node: str, boot_time_before: str, timeout: float = 30.0) -> str:
        """Until slurmctld shows a new BootTime (text, as node_info gives it) and the node IDLE."""
        def back():
            info = self.node_info(node)
            return info.get("BootTime") != boot_time_before and info.get("State") == "IDLE" and info["BootTime"]
        return _wait(back, timeout, f"{node} to come back with a new boot time", interval=0.2)

    # --- node control (also what a test BMC calls) --------------------------------------------
    def kill_slurmd(self, node: str) -> None:
        rp.stop_slurmd(self.dir, node, sig=signal.SIGKILL)

    def stop_slurmd(self, node: str) -> None:
        rp.stop_slurmd(self.dir, node)

    def restart_slurmd(self, node: str, fresh_boot: bool = True) -> None:
        rp.stop_slurmd(self.dir, node)
        rp.start_slurmd(self.dir, node, fresh_boot=fresh_boot)

    def power_reset(self, node: str, delay: float | None = None) -> bool:
        """A power cycle: what a test BMC calls. Boots staged -> booted (unless never_back)."""
        return rp.boot(self.dir, node, delay=delay)

    def power_off(self, node: str) -> None:
        rp.stop_slurmd(self.dir, node, sig=signal.SIGKILL)

    def power_on(self, node: str) -> bool:
        return rp.boot(self.dir, node, delay=0.0)

    def slurmd_running(self, node: str) -> bool:
        pid = rp.read_pid(self.node_dir(node) / "slurmd.pid")
        return bool(pid and rp.alive(pid) and rp.ours(self.dir, pid))

    def set_never_back(self, node: str, on: bool = True) -> None:
        marker = self.node_dir(node) / "never_back"
        if on:
            marker.write_text("1\n")
        else:
            marker.unlink(missing_ok=True)

    def reboot_log(self) -> list[str]:
        try:
            return (self.dir / "reboots.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def reset(self, timeout: float = 60.0) -> None:
        """Back to a clean cluster between tests: no jobs, reservations, flags; every node IDLE."""
        ids = self._job_ids()
        if ids:
            self.run(["scancel", *ids], check=False)
            _wait(lambda: not self._job_ids(), timeout, "jobs to end", interval=0.2)
        for line in self.run(["scontrol", "-o", "show", "reservation"], check=False).stdout.splitlines():
            if line.startswith("ReservationName="):
                self.run(["scontrol", "delete", f"reservation={line.split()[0].split('=', 1)[1]}"], check=False)
        for node in self.nodes:
            self.set_never_back(node, False)
            if not self.slurmd_running(node):
                rp.start_slurmd(self.dir, node, fresh_boot=True)
        _wait(lambda: all(rp.read_pid(self.node_dir(n) / "slurmd.pid") for n in self.nodes), 10, "slurmd")

        def settled():
            states = self.node_states()
            flagged = [n for n in self.nodes if states.get(n) != "IDLE"]
            if flagged:
                cancel = [n for n in flagged if "REBOOT" in states.get(n, "")]
                if cancel:
                    self.run(["scontrol", "cancel_reboot", self.hostlist(cancel)], check=False)
                self.run(["scontrol", "update", f"nodename={self.hostlist(flagged)}", "state=resume"],
                         check=False)
                # a DOWN node wants "idle"-via-resume; one not responding waits for its slurmd
            return not flagged
        _wait(settled, timeout, "every node IDLE", interval=0.5)
        for node in self.nodes:
            self.booted_file(node).write_text("initial\n")
            self.staged_file(node).write_text("initial\n")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)
