"""The one place that runs subprocesses: argv lists only (never a shell string), always a timeout."""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import structlog

log = structlog.get_logger("autoupdate.proc")


class CommandError(Exception):
    """The command could not run, timed out, or (with check=True) exited non-zero."""

    def __init__(self, argv: Sequence[str], message: str, result: "Result | None" = None):
        self.argv = list(argv)
        self.result = result
        super().__init__(message)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def brief(self, limit: int = 300) -> str:
        """The last line of stderr (or stdout): what a human wants in a reason."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return (text[-1] if text else f"exit status {self.returncode}")[:limit]


# Counts every command by program name: the benchmarks and tests read it to prove that a
# control-loop tick costs a constant number of Slurm commands.
CALLS: dict[str, int] = {}


def run(argv: Sequence[str], *, timeout: float, check: bool = False, input: str | None = None,
        env: Mapping[str, str] | None = None, cwd: str | None = None) -> Result:
    if isinstance(argv, (str, bytes)):
        raise TypeError("proc.run takes an argv list, never a shell string")
    argv = tuple(str(a) for a in argv)
    name = os.path.basename(argv[0])
    CALLS[name] = CALLS.get(name, 0) + 1
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    started = time.monotonic()
    try:
        # Output is text, whatever bytes it holds: a job name or a drain reason a user typed in
        # Latin-1 shows up in squeue's output, and must not make every tick fail to decode it.
        cp = subprocess.run(argv, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout,
                            input=input, env=full_env, cwd=cwd,
                            stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandError(argv, f"{name}: command not found") from None
    except PermissionError:
        raise CommandError(argv, f"{name}: permission denied") from None
    except subprocess.TimeoutExpired as exc:
        # What it said before it was stopped is often why (scontrol retrying a missing slurm.conf).
        said = exc.stderr or b""  # bytes, even in text mode
        said = (said.decode("utf-8", "replace") if isinstance(said, bytes) else said).strip().splitlines()
        raise CommandError(argv, f"{name}: timed out after {timeout:g}s" + (f" ({said[-1][:200]})" if said else "")) \
            from None
    result = Result(argv, cp.returncode, cp.stdout, cp.stderr, time.monotonic() - started)
    log.debug("command", argv=argv[:6], rc=cp.returncode, seconds=round(result.seconds, 3))
    if check and not result.ok:
        raise CommandError(argv, f"{name} failed: {result.brief()}", result)
    return result
