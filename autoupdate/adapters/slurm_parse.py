"""Parsers for what Slurm prints: JSON (sinfo/squeue --json, scontrol --json) and one-line text
(scontrol -o show node|reservation, squeue -o). Pure functions, no I/O: tested on captured output.

Node states: Slurm prints a base state plus flags ("MIXED+DRAIN+REBOOT_REQUESTED" in text,
"mixed" + ["DRAIN", ...] in 22.05 JSON, ["MIXED", "DRAIN"] from 23.02). Every spelling is mapped
onto autoupdate.model's NodeBase + KNOWN_FLAGS; anything else is kept verbatim and recorded in
NodeInfo.unknown_state, which the engine treats as "do not touch". Nothing here raises on an odd
state: only on output that is not Slurm's at all (SlurmParseError).
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any, Iterable, Mapping

from ..model import KNOWN_FLAGS, Job, NodeBase, NodeInfo, PendingJob, Reservation
from ..nodeset import HostlistError, expand


class SlurmParseError(ValueError):
    """Output that cannot be Slurm's answer (not JSON, no node list...)."""


_BASES = {
    "IDLE": NodeBase.IDLE, "ALLOCATED": NodeBase.ALLOCATED, "ALLOC": NodeBase.ALLOCATED,
    "MIXED": NodeBase.MIXED, "MIX": NodeBase.MIXED, "COMPLETING": NodeBase.COMPLETING,
    "COMP": NodeBase.COMPLETING, "DOWN": NodeBase.DOWN, "FUTURE": NodeBase.FUTURE,
    "FUTR": NodeBase.FUTURE, "UNKNOWN": NodeBase.UNKNOWN, "UNK": NodeBase.UNKNOWN,
    # sinfo's derived names: the base they stand for (the DRAIN flag is added separately)
    "DRAINING": NodeBase.MIXED, "DRAINED": NodeBase.IDLE, "DRAIN": NodeBase.IDLE,
}
# Short or old spellings of flags -> autoupdate's names.
_FLAG_ALIASES = {
    "MAINT": "MAINTENANCE", "RESV": "RESERVED", "NO_RESPOND": "NOT_RESPONDING", "NPC": "NPC",
    "POWER_DOWN": "POWER_DOWN", "POWERED_DOWN": "POWERED_DOWN", "POWERING_DOWN": "POWERING_DOWN",
    "POWERING_UP": "POWERING_UP", "POWER_UP": "POWER_UP", "COMP": "COMPLETING",
    "REBOOT": "REBOOT_REQUESTED", "BOOT": "REBOOT_ISSUED", "REBOOT_CANCELLED": "REBOOT_CANCELED",
}
_SUFFIX_FLAGS = {"*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP", "%": "POWERING_DOWN",
                 "!": "POWER_DOWN", "@": "REBOOT_REQUESTED", "^": "REBOOT_ISSUED", "-": "PLANNED"}
_BUSY = (NodeBase.ALLOCATED, NodeBase.MIXED, NodeBase.COMPLETING)
# Far future for jobs without a time limit: "not idle any time soon", still a finite number.
UNLIMITED_SECONDS = 10 * 365 * 86400.0


def classify_state(tokens: Iterable[str], raw: str = "") -> tuple[NodeBase, frozenset[str], str]:
    """Base state, flags and (if any part was not understood) the raw text to report."""
    base: NodeBase | None = None
    flags: set[str] = set()
    unknown: list[str] = []
    for token in tokens:
        token = str(token).strip().upper()
        if not token:
            continue
        while token and token[-1] in _SUFFIX_FLAGS:  # sinfo %t/%T suffixes: idle*, down~
            flags.add(_SUFFIX_FLAGS[token[-1]])
            token = token[:-1]
        if token in ("DRAIN", "DRAINING", "DRAINED"):
            flags.add("DRAIN")
            if base is None and token != "DRAIN":
                base = _BASES[token]
            continue
        if base is None and token in _BASES:
            base = _BASES[token]
            continue
        if token in _BASES and token == "COMPLETING":  # base already set: COMPLETING is a flag
            flags.add("COMPLETING")
            continue
        name = _FLAG_ALIASES.get(token, token)
        if name in KNOWN_FLAGS:
            flags.add(name)
        else:
            flags.add(name)
            unknown.append(token)
    if base is None:
        base = NodeBase.UNKNOWN
        if not unknown:
            unknown.append("no base state")
    if "DRAIN" in flags:  # what sinfo calls draining / drained
        flags.add("DRAINING" if base in _BUSY or "COMPLETING" in flags else "DRAINED")
    if base is NodeBase.COMPLETING:
        flags.add("COMPLETING")
    return base, frozenset(flags), (raw or "+".join(tokens) or "(no state)") if unknown else ""


def split_state_text(text: str) -> list[str]:
    return [t for t in re.split(r"[+,]", text.strip()) if t]


# --- value helpers -----------------------------------------------------------------------------

def number(value: Any) -> float | None:
    """22.05 prints plain numbers; 23.02+ prints {"set": bool, "infinite": bool, "number": n}."""
    if isinstance(value, dict):
        if value.get("infinite"):
            return float("inf")
        if not value.get("set", True):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def timestamp(value: Any) -> float | None:
    """A Unix time from JSON; 0 / unset mean unknown."""
    n = number(value)
    return n if n and n != float("inf") else None


def text_time(value: str | None) -> float | None:
    """Slurm's text timestamps are local time: 2026-11-21T06:30:37; None/Unknown/N/A -> None."""
    if not value or value in ("None", "Unknown", "N/A", "(null)", "0"):
        return None
    value = value.strip()
    if not _TEXT_TIME.fullmatch(value):
        return None
    try:  # fromisoformat: strptime took half of reading a 40,000-job queue
        return time.mktime(datetime.fromisoformat(value).timetuple())
    except ValueError:
        return None


_TEXT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def duration(text: str | None) -> float | None:
    """Slurm durations: [days-]hours:minutes:seconds, minutes:seconds, minutes; UNLIMITED -> inf."""
    if not text:
        return None
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return float("inf")
    if text.upper() in ("N/A", "NONE", "(NULL)", "INVALID", "PARTITION_LIMIT", "NOT_SET"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, m, s = (0, *parts) if days == 0 else (parts[0], parts[1], 0)
    else:
        h, m, s = (0, parts[0], 0) if days == 0 else (parts[0], 0, 0)
    return float(days * 86400 + h * 3600 + m * 60 + s)


def _list(value: Any) -> tuple[str, ...]:
    if value is None or value == "" or value == "(null)":
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split(",") if v and v != "(null)")
    return tuple(str(v) for v in value if v)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # 23.02+: some strings became {"string": ...}
        value = value.get("string", value.get("name", ""))
    return "" if value in ("(null)", "none", "None") else str(value)


def load_json(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SlurmParseError(f"{what}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise SlurmParseError(f"{what}: expected a JSON object")
    errors = [e for e in data.get("errors") or [] if e]
    if errors:
        first = errors[0]
        msg = first.get("error") or first.get("description") if isinstance(first, dict) else str(first)
        raise SlurmParseError(f"{what}: Slurm reported an error: {msg}")
    return data


# --- nodes -------------------------------------------------------------------------------------

def node_from_json(d: Mapping[str, Any]) -> NodeInfo:
    state = d.get("state")
    tokens: list[str] = list(state) if isinstance(state, list) else split_state_text(str(state or ""))
    tokens += [str(f) for f in d.get("state_flags") or []]
    raw = "+".join(t.upper() for t in tokens)
    base, flags, unknown = classify_state(tokens, raw)
    return NodeInfo(
        name=str(d["name"]), base=base, flags=flags,
        partitions=_list(d.get("partitions")),
        reason=_text(d.get("reason")), reason_user=_text(d.get("reason_set_by_user")),
        boot_time=timestamp(d.get("boot_time")),
        features=_list(d.get("active_features") or d.get("features")),
        extra=_text(d.get("extra")), unknown_state=unknown,
    )


def nodes_from_json(text: str, what: str = "sinfo --json") -> dict[str, NodeInfo]:
    """sinfo --json (22.05: {"nodes": [...]}) or scontrol --json show nodes (23.02+)."""
    data = load_json(text, what)
    if not isinstance(data.get("nodes"), list):
        raise SlurmParseError(f"{what}: no node list in the output")
    out = {}
    for d in data["nodes"]:
        info = node_from_json(d)
        out[info.name] = info
    return out


_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$")
# A node's Reason is free text followed by " [user@2026-11-21T06:31:16]"; fields may follow it
# (22.05 prints Extra= and Comment= after it).
_REASON = re.compile(r" Reason=(.*?)(?: \[([^\[\]@ ]*)@(\d{4}-\d\d-\d\dT[\d:]+|Unknown)\])?(?= [A-Z][A-Za-z]*=|$)")


def split_fields(line: str) -> dict[str, str]:
    """`Key=value Key2=a b c ...`: a word without '=' belongs to the previous value (OS=Linux 6.1 ...)."""
    fields: dict[str, str] = {}
    key = None
    for word in line.rstrip("\n").split(" "):
        m = _KEY.match(word)
        if m and m.group(1) not in fields:
            key = m.group(1)
            fields[key] = m.group(2)
        elif key is not None and word:
            fields[key] += " " + word
    return fields


def node_from_text(line: str) -> NodeInfo:
    reason = user = ""
    m = _REASON.search(line)
    if m:
        reason, user = m.group(1), m.group(2) or ""
        line = line[:m.start()] + line[m.end():]
    f = split_fields(line)
    state = f.get("State", "")
    base, flags, unknown = classify_state(split_state_text(state), state)
    return NodeInfo(
        name=f["NodeName"], base=base, flags=flags,
        partitions=_list(f.get("Partitions")), reason=reason if reason != "(null)" else "",
        reason_user=user, boot_time=text_time(f.get("BootTime")),
        features=_list(f.get("ActiveFeatures") or f.get("AvailableFeatures")),
        extra=_text(f.get("Extra")), unknown_state=unknown,
    )


def nodes_from_text(text: str) -> dict[str, NodeInfo]:
    """`scontrol -o show node`: one line per node."""
    out = {}
    for line in text.splitlines():
        if line.startswith("NodeName="):
            info = node_from_text(line)
            out[info.name] = info
    if not out and text.strip() and "No nodes in the system" not in text:
        raise SlurmParseError("scontrol show node: no NodeName= lines in the output")
    return out


# --- jobs --------------------------------------------------------------------------------------

# Job states whose nodes are still occupied (a COMPLETING job has not left its node yet).
OCCUPYING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STOPPED", "RESIZING",
                       "SIGNALING", "STAGE_OUT"})


def _occupying(states: Iterable[str]) -> bool:
    return any(s.upper() in OCCUPYING for s in states)


def _expand(hostlist: str, what: str) -> tuple[str, ...]:
    try:
        return tuple(expand(hostlist))
    except HostlistError as exc:
        raise SlurmParseError(f"{what}: {exc}") from None


def _job_end(start: float, end: float | None, limit_seconds: float | None, now: float) -> float:
    """Expected end: Slurm's EndTime (start + limit for running jobs); unlimited -> far future."""
    if limit_seconds == float("inf") or end is None or end == float("inf"):
        if limit_seconds not in (None, float("inf")):
            return start + limit_seconds
        return max(now, start) + UNLIMITED_SECONDS
    return end


def queue_from_json(text: str, now: float, what: str = "squeue --json") -> tuple[list[Job], tuple[PendingJob, ...]]:
    """The jobs holding nodes, and those waiting for nodes (see `waiting_for_nodes`)."""
    data = load_json(text, what)
    if not isinstance(data.get("jobs"), list):
        raise SlurmParseError(f"{what}: no job list in the output")
    jobs = []
    pending = []
    for d in data["jobs"]:
        state = d.get("job_state")
        states = state if isinstance(state, list) else [str(state or "")]
        if "PENDING" in (s.upper() for s in states):
            limit = number(d.get("time_limit"))
            pending.append((number(d.get("priority")) or 0.0, str(d.get("job_id")), number(d.get("node_count")),
                            None if limit is None else limit * 60, _text(d.get("partition")),
                            _text(d.get("state_reason"))))
            continue
        if not _occupying(states):
            continue
        nodes = _expand(_text(d.get("nodes")), what)
        if not nodes:
            continue
        start = timestamp(d.get("start_time")) or now
        limit = number(d.get("time_limit"))  # minutes
        limit_s = None if limit is None else (limit if limit == float("inf") else limit * 60)
        jobs.append(Job(job_id=str(d.get("job_id")), nodes=nodes, start_time=start,
                        end_time=_job_end(start, timestamp(d.get("end_time")), limit_s, now),
                        name=_text(d.get("name")), user=_text(d.get("user_name")),
                        reservation=_text(d.get("resv_name"))))
    return jobs, waiting_for_nodes(pending)


# Why a pending job waits when it waits for nodes: not held, not a dependency, not a limit.
WAITING_REASONS = ("Resources", "Priority", "ReqNodeNotAvail")


def waiting_for_nodes(pending: Iterable[tuple[float, str, float | None, float | None, str, str]]) -> tuple[PendingJob, ...]:
    """(priority, id, nodes, time limit in seconds, partition, reason) -> the jobs waiting for
    nodes, highest priority first, as the scheduler considers them."""
    out = []
    for priority, job_id, count, limit, partition, reason in sorted(pending, key=lambda p: -p[0]):
        if reason not in ("", "None") and not reason.startswith(WAITING_REASONS):  # none: just submitted
            continue
        limit = UNLIMITED_SECONDS if limit is None or limit == float("inf") else limit
        # Submitted to several partitions: it may run in any of them.
        out.append(PendingJob(job_id, max(1, int(count or 1)), limit, "" if "," in partition else partition))
    return tuple(out)


# squeue text format: fixed fields first, the free-text job name last (it may hold anything).
SQUEUE_FORMAT = "%i|%T|%S|%e|%l|%u|%v|%N|%j"
SQUEUE_STATES = "RUNNING,COMPLETING,SUSPENDED,CONFIGURING,STOPPED,RESIZING,SIGNALING,STAGE_OUT"


PENDING_FORMAT = "%i|%Q|%D|%l|%P|%r"


def _squeue_rows(text: str, fields: int) -> Iterable[list[str]]:
    """The lines of `squeue -h -o` with `fields` fields split on "|" (the last may hold "|")."""
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", fields - 1)
        if len(parts) != fields:
            raise SlurmParseError(f"squeue: unexpected line {line[:120]!r}")
        yield parts


def pending_from_text(text: str) -> tuple[PendingJob, ...]:
    """`squeue -h -t PENDING -o PENDING_FORMAT`."""
    return waiting_for_nodes((number(priority) or 0.0, job_id, number(count), duration(limit), partition, reason)
                             for job_id, priority, count, limit, partition, reason in _squeue_rows(text, 6))


def jobs_from_text(text: str, now: float) -> list[Job]:
    jobs = []
    for job_id, state, start, end, limit, user, resv, nodelist, name in _squeue_rows(text, 9):
        if not _occupying([state]):
            continue
        nodes = _expand(nodelist, "squeue")
        if not nodes:
            continue
        st = text_time(start) or now
        jobs.append(Job(job_id=job_id, nodes=nodes, start_time=st,
                        end_time=_job_end(st, text_time(end), duration(limit), now),
                        name=name, user=user, reservation="" if resv in ("(null)", "") else resv))
    return jobs


# --- reservations ------------------------------------------------------------------------------

def reservations_from_text(text: str) -> list[Reservation]:
    """`scontrol -o show reservation` (prints "No reservations in the system" when empty)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("ReservationName="):
            continue
        f = split_fields(line)
        out.append(Reservation(
            name=f["ReservationName"],
            nodes=_expand(_text(f.get("Nodes")), "scontrol show reservation"),
            start_time=text_time(f.get("StartTime")) or 0.0,
            end_time=text_time(f.get("EndTime")) or float("inf"),
            flags=frozenset(x.upper() for x in _list(f.get("Flags"))),
            users=_list(f.get("Users")),
        ))
    return out


def reservations_from_json(text: str, what: str = "scontrol --json show reservation") -> list[Reservation]:
    data = load_json(text, what)
    out = []
    for d in data.get("reservations") or []:
        flags = d.get("flags") or []
        out.append(Reservation(
            name=str(d["name"]), nodes=_expand(_text(d.get("node_list")), what),
            start_time=timestamp(d.get("start_time")) or 0.0,
            end_time=timestamp(d.get("end_time")) or float("inf"),
            flags=frozenset(str(x).upper() for x in (flags if isinstance(flags, list) else _list(flags))),
            users=_list(d.get("users")),
        ))
    return out


def slurm_version(text: str) -> tuple[int, int]:
    """`scontrol --version` -> (22, 5). Unknown -> (0, 0): text output only."""
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
