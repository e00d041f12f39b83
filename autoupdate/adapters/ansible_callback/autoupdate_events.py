# An Ansible callback plugin: one JSON line per task result and one for the final stats,
# written to the file named by $AUTOUPDATE_ANSIBLE_EVENTS (nothing happens without it).
# autoupdate reads per-host results from this file instead of scraping ansible-playbook's text.
# Loaded by ansible-playbook itself (ANSIBLE_CALLBACK_PLUGINS points at this directory), so it
# may import Ansible; it must not import autoupdate.
from __future__ import annotations

DOCUMENTATION = """
    name: autoupdate_events
    type: notification
    short_description: per-host task results as JSON lines for autoupdate
    description:
      - Writes one JSON object per line to the file named by AUTOUPDATE_ANSIBLE_EVENTS.
"""

import json
import os

from ansible.plugins.callback import CallbackBase

_MSG_LIMIT = 300


def _text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_MSG_LIMIT]


def _message(result: dict) -> str:
    """The short reason a failing task gives (never the whole result: it may hold secrets)."""
    for key in ("msg", "reason", "stderr", "module_stderr"):
        if result.get(key):
            return _text(result[key]).strip().splitlines()[0] if str(result[key]).strip() else ""
    return ""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "autoupdate_events"
    CALLBACK_NEEDS_ENABLED = False  # active whenever its directory is on the callback path

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("AUTOUPDATE_ANSIBLE_EVENTS", "")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._play = ""

    def _write(self, record: dict) -> None:
        if self._out is not None:
            self._out.write(json.dumps(record, default=str) + "\n")
            self._out.flush()

    def _task_record(self, result, status: str, **extra) -> None:
        task = result._task
        data = result._result if isinstance(result._result, dict) else {}
        role = getattr(task, "_role", None)
        self._write({
            "event": "task",
            "status": status,
            "host": result._host.get_name(),
            "play": self._play,
            "task": task.get_name(),
            "role": role.get_name() if role is not None else "",
            "tags": sorted(str(t) for t in (task.tags or [])),
            "action": str(task.action),
            # None when Ansible hides it (no_log results may omit it): callers treat as changed
            "changed": data.get("changed") if "changed" in data else None,
            "msg": _message(data) if status in ("failed", "unreachable") else "",
            **extra,
        })

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def v2_runner_on_ok(self, result):
        self._task_record(result, "changed" if result.is_changed() else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task_record(result, "failed", ignored=bool(ignore_errors))

    def v2_runner_on_unreachable(self, result):
        self._task_record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._task_record(result, "skipped")

    def v2_playbook_on_stats(self, stats):
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._write({"event": "stats", "hosts": hosts})
        if self._out is not None:
            self._out.close()
            self._out = None
