"""Durable state in SQLite: node records, rollouts, applied commits, history.

Every node transition is one transaction (the row and its history line) committed before the
engine acts on it, so a restart after SIGKILL finds each node in the phase whose action may or
may not have happened, and redoes it (actions are idempotent).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator

from .model import ChangeClass, NodeAction, NodePhase, NodeRecord, Rollout, RolloutState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, state TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, summary TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '', soak_until REAL NOT NULL DEFAULT 0,
  canaries TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT PRIMARY KEY, phase TEXT NOT NULL, target TEXT NOT NULL, rollout_id INTEGER NOT NULL,
  klass INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, since REAL NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
  action_done INTEGER NOT NULL DEFAULT 0, boot_time_before REAL, drained_by_us INTEGER NOT NULL DEFAULT 0,
  canary INTEGER NOT NULL DEFAULT 0, cancel_reason TEXT NOT NULL DEFAULT '',
  actions TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS applied (node TEXT PRIMARY KEY, sha TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, node TEXT, rollout_id INTEGER,
  target TEXT, from_phase TEXT, to_phase TEXT, message TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS history_rollout ON history (rollout_id);
"""

_NODE_COLS = ("node", "phase", "target", "rollout_id", "klass", "attempts", "since", "next_attempt_at",
              "last_error", "action_done", "boot_time_before", "drained_by_us", "canary",
              "cancel_reason", "actions")
_ROLLOUT_COLS = ("id", "target", "state", "created_at", "updated_at", "summary", "reason",
                 "soak_until", "canaries")


def _node_row(r: NodeRecord) -> tuple:
    actions = json.dumps([{"kind": a.kind, "detail": dict(a.detail)} for a in r.actions])
    return (r.node, r.phase.value, r.target, r.rollout_id, int(r.klass), r.attempts, r.since,
            r.next_attempt_at, r.last_error, int(r.action_done), r.boot_time_before,
            int(r.drained_by_us), int(r.canary), r.cancel_reason, actions)


def _record(row: sqlite3.Row) -> NodeRecord:
    return NodeRecord(
        node=row["node"], phase=NodePhase(row["phase"]), target=row["target"],
        rollout_id=row["rollout_id"], klass=ChangeClass(row["klass"]), attempts=row["attempts"],
        since=row["since"], next_attempt_at=row["next_attempt_at"], last_error=row["last_error"],
        action_done=bool(row["action_done"]), boot_time_before=row["boot_time_before"],
        drained_by_us=bool(row["drained_by_us"]), canary=bool(row["canary"]),
        cancel_reason=row["cancel_reason"],
        actions=tuple(NodeAction(a["kind"], a["detail"]) for a in json.loads(row["actions"])))


def _rollout(row: sqlite3.Row) -> Rollout:
    return Rollout(id=row["id"], target=row["target"], state=RolloutState(row["state"]),
                   created_at=row["created_at"], updated_at=row["updated_at"], summary=row["summary"],
                   reason=row["reason"], soak_until=row["soak_until"],
                   canaries=tuple(json.loads(row["canaries"])))


class StoreError(Exception):
    """The state database cannot be opened: nothing can be done safely without it."""


class Store:
    """SQLite state. Path ':memory:' gives a private in-memory store (unit tests)."""

    def __init__(self, path: str | Path):
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:  # not a directory, read-only, not a database...
            raise StoreError(f"cannot open the state database {path}: {getattr(exc, 'strerror', None) or exc}") \
                from None
        # Reads are served from memory while no other connection has written (SQLite's
        # data_version says so); our own writes go to SQLite first, then to the cache. The
        # engine reads the records several times per tick: at 10,000 nodes that is what costs.
        self._cache: dict[str, dict] = {}
        self._pending: list[tuple[str, tuple]] | None = None  # statements of an open batch()
        self._seen_version: int | None = None

    @classmethod
    def open_readonly(cls, path: str | Path) -> "Store":
        """For CLI readers: never creates the file."""
        if not Path(path).exists():
            raise FileNotFoundError(str(path))
        return cls(path)

    def close(self) -> None:
        with self._lock:  # never under a query running in another thread (sqlite would crash)
            self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many saves into one transaction, committed when the block ends (also on error).

        Callers act on the saved records only after the block: persistence still comes first.
        """
        with self._lock:
            if self._pending is not None:  # nested: the outer block commits
                yield
                return
            self._pending = []
            try:
                yield
            finally:
                statements, self._pending = self._pending, None
                if statements:
                    self._tx(statements)

    def _tx(self, statements: Iterable[tuple[str, tuple]]) -> None:
        with self._lock:
            if self._pending is not None:
                self._pending.extend(statements)
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _cached(self, key: str, load) -> dict:
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._seen_version:  # another connection wrote: forget everything
                self._cache.clear()
                self._seen_version = version
            if key not in self._cache:
                self._cache[key] = load()
            return self._cache[key]

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- meta ---------------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return self._cached("meta", lambda: {r["key"]: r["value"] for r in self._query("SELECT * FROM meta")})

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        return self._meta().get(key, default)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._tx([("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))])
            self._cache.pop("meta", None)

    # --- node records -------------------------------------------------------------------------
    def _records(self) -> dict[str, NodeRecord]:
        return self._cached("nodes", lambda: {row["node"]: _record(row) for row in self._query("SELECT * FROM nodes")})

    def records(self) -> dict[str, NodeRecord]:
        """Every node record. Treat them as values (dataclasses.replace, then save): they are
        shared with the cache, which is what keeps this cheap at 10,000 nodes."""
        return dict(self._records())

    def record(self, node: str) -> NodeRecord | None:
        return self._records().get(node)

    def save(self, record: NodeRecord, *, at: float, from_phase: NodePhase | None = None,
             message: str = "") -> None:
        """Persist a record; when its phase changed, also append the transition to history."""
        placeholders = ",".join("?" * len(_NODE_COLS))
        stmts = [(f"INSERT OR REPLACE INTO nodes ({','.join(_NODE_COLS)}) VALUES ({placeholders})",
                  _node_row(record))]
        if from_phase is not None or message:
            stmts.append(("INSERT INTO history (at, node, rollout_id, target, from_phase, to_phase, message)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (at, record.node, record.rollout_id, record.target,
                           from_phase.value if from_phase else None, record.phase.value, message)))
        with self._lock:
            self._tx(stmts)
            if "nodes" in self._cache:
                self._cache["nodes"][record.node] = replace(record)

    def forget(self, node: str) -> None:
        with self._lock:
            self._tx([("DELETE FROM nodes WHERE node=?", (node,))])
            self._cache.get("nodes", {}).pop(node, None)

    # --- applied commits ----------------------------------------------------------------------
    def applied(self) -> dict[str, str]:
        return dict(self._cached("applied", lambda: {row["node"]: row["sha"]
                                                     for row in self._query("SELECT node, sha FROM applied")}))

    def set_applied(self, nodes: Iterable[str], sha: str, at: float) -> None:
        with self._lock:
            self._tx([("INSERT OR REPLACE INTO applied (node, sha, at) VALUES (?, ?, ?)", (n, sha, at))
                      for n in nodes])
            self._cache.pop("applied", None)

    # --- rollouts -----------------------------------------------------------------------------
    def new_rollout(self, target: str, state: RolloutState, at: float, summary: str = "",
                    reason: str = "") -> Rollout:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO rollouts (target, state, created_at, updated_at, summary, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)", (target, state.value, at, at, summary, reason))
            rid = cur.lastrowid
        return self.rollout(rid)  # type: ignore[return-value]

    def save_rollout(self, r: Rollout) -> None:
        self._tx([("UPDATE rollouts SET state=?, updated_at=?, summary=?, reason=?, soak_until=?, canaries=?"
                   " WHERE id=?", (r.state.value, r.updated_at, r.summary, r.reason, r.soak_until,
                                   json.dumps(list(r.canaries)), r.id))])

    def rollout(self, rid: int) -> Rollout | None:
        rows = self._query("SELECT * FROM rollouts WHERE id=?", (rid,))
        return _rollout(rows[0]) if rows else None

    def rollouts(self, limit: int = 50) -> list[Rollout]:
        return [_rollout(r) for r in self._query("SELECT * FROM rollouts ORDER BY id DESC LIMIT ?", (limit,))]

    def active_rollout(self) -> Rollout | None:
        active = [s.value for s in RolloutState if s.active]
        rows = self._query(f"SELECT * FROM rollouts WHERE state IN ({','.join('?' * len(active))})"
                           " ORDER BY id DESC LIMIT 1", tuple(active))
        return _rollout(rows[0]) if rows else None

    def latest_rollout(self) -> Rollout | None:
        rows = self._query("SELECT * FROM rollouts ORDER BY id DESC LIMIT 1")
        return _rollout(rows[0]) if rows else None

    def history(self, rollout_id: int | None = None, node: str | None = None,
                limit: int = 200) -> list[dict]:
        sql, args = "SELECT * FROM history WHERE 1=1", []
        if rollout_id is not None:
            sql += " AND rollout_id=?"
            args.append(rollout_id)
        if node is not None:
            sql += " AND node=?"
            args.append(node)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self._query(sql, tuple(args))]

    def log(self, message: str, at: float, rollout_id: int | None = None, node: str | None = None) -> None:
        self._tx([("INSERT INTO history (at, node, rollout_id, message) VALUES (?, ?, ?, ?)",
                   (at, node, rollout_id, message))])

    def iter_phase_counts(self) -> Iterator[tuple[str, int]]:
        for row in self._query("SELECT phase, COUNT(*) AS n FROM nodes GROUP BY phase"):
            yield row["phase"], row["n"]
