"""The rig's simulated node boot, shared by Slurm's RebootProgram and by test BMCs.

Stdlib + ClusterShell only: slurmctld runs this file as a plain script (through <rig>/bin/reboot,
with SlurmctldParameters=reboot_from_controller it passes the node list as the first argument).
22.05's slurmctld wants RebootProgram to return at once, so the script hands the work to a
detached worker process and exits.

A "boot" of node N: stop N's slurmd, wait `reboot_delay` seconds, then - unless
<rig>/nodes/N/never_back exists (a node that never comes back) - copy nodes/N/staged to
nodes/N/booted (what the node now runs) and start `slurmd -D -b -N N` (-b: report a fresh boot).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

MARKER = "AU_SLURM_RIG"  # environment marker: every process the rig starts carries its directory


def rig_config(rig: Path) -> dict:
    return json.loads((rig / "rig.json").read_text())


def log(rig: Path, text: str) -> None:
    with open(rig / "reboots.log", "a") as fh:
        fh.write(f"{time.time():.3f} {text}\n")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True for a running process (kill -0 also succeeds on zombies: read /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def ours(rig: Path, pid: int) -> bool:
    """Only processes started for this rig (their command line names its config file)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(rig) in cmdline


def stop_slurmd(rig: Path, node: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    pid = read_pid(rig / "nodes" / node / "slurmd.pid")
    if pid is None or not alive(pid) or not ours(rig, pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def start_slurmd(rig: Path, node: str, fresh_boot: bool = True) -> int:
    cfg = rig_config(rig)
    ndir = rig / "nodes" / node
    argv = [cfg["slurmd"], "-D", "-f", cfg["conf"], "-N", node]
    if fresh_boot:
        argv.insert(2, "-b")
    env = dict(os.environ, SLURM_CONF=cfg["conf"], **{MARKER: str(rig)})
    with open(ndir / "slurmd.out", "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=str(ndir), start_new_session=True, close_fds=True)
    # slurmd writes the same pid file itself; writing it now closes the gap before it does.
    (ndir / "slurmd.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def boot(rig: Path, node: str, delay: float | None = None) -> bool:
    """Simulated power cycle of one node. False when the node is set to never come back."""
    cfg = rig_config(rig)
    ndir = rig / "nodes" / node
    stop_slurmd(rig, node)
    time.sleep(cfg.get("reboot_delay", 0.0) if delay is None else delay)
    if (ndir / "never_back").exists():
        log(rig, f"{node} stays down (never_back)")
        return False
    staged = ndir / "staged"
    if staged.exists():
        shutil.copyfile(staged, ndir / "booted")
    start_slurmd(rig, node, fresh_boot=True)
    log(rig, f"{node} booted {(ndir / 'booted').read_text().strip() if (ndir / 'booted').exists() else '-'}")
    return True


def expand(hostlist: str) -> list[str]:
    from ClusterShell.NodeSet import NodeSet
    return list(NodeSet(hostlist))


def worker(rig: Path, hostlist: str) -> None:
    for node in expand(hostlist):
        try:
            boot(rig, node)
        except Exception as exc:  # keep going: one node's failure must not strand the others
            log(rig, f"{node} boot failed: {exc!r}")


def main(argv: list[str]) -> int:
    rig = Path(argv[0])
    hostlist = ",".join(argv[1:])
    if len(argv) > 2 and argv[1] == "--worker":
        worker(rig, argv[2])
        return 0
    log(rig, f"RebootProgram {hostlist}")
    # slurmctld runs RebootProgram with SIGTERM blocked: clear the mask so slurmd can be stopped.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    subprocess.Popen([sys.executable, __file__, str(rig), "--worker", hostlist],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True,
                     env=dict(os.environ, **{MARKER: str(rig)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
