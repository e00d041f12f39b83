"""Slack notifier (slack-sdk): a bot token (threads, a progress message edited in place) or an
incoming webhook (plain messages).

A Slack outage must never delay or stop a rollout: notify() only formats the event and puts it
on a bounded queue; one background thread delivers in order, retries a failing message with
backoff for `retry_seconds` (429 + Retry-After is honoured by slack-sdk's
RateLimitErrorRetryHandler), then drops it with a log line. A full queue drops new messages
(logged) instead of blocking the engine.

Bot mode: one thread per commit. The first message about a commit (normally rollout.detected)
is the thread's root; later events about it are replies, and rollout.progress edits one reply in
place (chat.update). Events that need a human mention the configured user group and are also
broadcast to the channel. Events about no commit (pause/resume, rejected config) go to the
channel itself. Thread timestamps are kept in <state_dir>/slack-threads.json across restarts.

The token / webhook URL comes from a file (a relative name is looked up in systemd's
$CREDENTIALS_DIRECTORY) or an environment variable; never from the YAML, never logged.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from ..model import Event
from ..ports import AdapterError
from ..textfile import read_text

log = structlog.get_logger("autoupdate.slack")

#: Slack errors that no retry can fix: drop the message at once.
PERMANENT_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "channel_not_found", "not_in_channel", "is_archived", "missing_scope", "invalid_blocks",
    "msg_too_long", "no_text", "restricted_action", "invalid_token", "no_service", "no_team",
})

ICONS = {
    "rollout.detected": ":arrows_counterclockwise:", "canary.started": ":hatching_chick:",
    "canary.passed": ":white_check_mark:", "canary.failed": ":x:", "rollout.waves": ":ocean:",
    "rollout.done": ":tada:", "rollout.halted": ":octagonal_sign:", "rollout.error": ":no_entry:",
    "node.failed": ":x:", "node.attempt_failed": ":warning:", "paused": ":double_vertical_bar:",
    "resumed": ":arrow_forward:", "config.rejected": ":no_entry_sign:", "config.reloaded": ":gear:",
    "source.force_push": ":warning:", "source.error": ":warning:", "rollout.progress": ":bar_chart:",
    "tick.failed": ":rotating_light:", "tick.recovered": ":white_check_mark:",
    "fetch.failed": ":rotating_light:", "fetch.recovered": ":white_check_mark:",
}


class SlackError(AdapterError):
    """Slack is misconfigured (no token, unreadable credential file)."""


def read_credential(file_name: str, env_name: str, what: str, environ=os.environ) -> str:
    """A secret from `file_name` (relative: under $CREDENTIALS_DIRECTORY) or `env_name`.

    Error messages name where we looked, never the value.
    """
    if file_name:
        path = Path(file_name)
        if not path.is_absolute():
            base = environ.get("CREDENTIALS_DIRECTORY")
            if not base:
                raise SlackError(f"{what} file {file_name!r} is relative but $CREDENTIALS_DIRECTORY is "
                                 "not set (use an absolute path, or systemd's LoadCredential=)")
            path = Path(base) / path
        try:
            value = read_text(path).strip()
        except OSError as exc:
            raise SlackError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
        if not value:
            raise SlackError(f"{what} file {path} is empty")
        return value
    value = environ.get(env_name, "").strip() if env_name else ""
    if not value:
        raise SlackError(f"no {what}: set a file in the configuration or the environment variable {env_name}")
    return value


@dataclass
class Message:
    kind: str
    text: str
    target: str = ""  # the commit the message is about ("" = channel level)
    broadcast: bool = False
    enqueued_at: float = 0.0
    generation: int = 0  # progress only: older generations are skipped


class TransientError(Exception):
    """Worth retrying: 5xx, connection refused, timeouts, rate limits beyond the SDK's retries."""


class PermanentError(Exception):
    """Retrying cannot help (bad token, unknown channel)."""


def _classify(exc: Exception) -> Exception:
    if isinstance(exc, SlackApiError):
        resp = exc.response
        error = resp.get("error", "") if isinstance(resp.data, dict) else ""
        if error in PERMANENT_ERRORS:
            return PermanentError(error)
        return TransientError(error or f"HTTP {resp.status_code}")
    return TransientError(f"{type(exc).__name__}: {exc}")


class BotTransport:
    """chat.postMessage / chat.update through a WebClient; remembers each commit's thread."""

    def __init__(self, client: WebClient, channel: str, threads_file: Path | None = None):
        self.client = client
        self.channel = channel
        self.threads_file = threads_file
        self.threads: dict[str, dict[str, str]] = self._load()

    def _load(self) -> dict[str, dict[str, str]]:
        if self.threads_file is None:
            return {}
        try:
            data = json.loads(self.threads_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        if self.threads_file is None:
            return
        recent = dict(list(self.threads.items())[-50:])  # a bounded file: old commits are done
        try:
            tmp = self.threads_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(recent))
            tmp.replace(self.threads_file)
        except OSError as exc:
            log.warning("cannot save Slack threads", file=str(self.threads_file), error=exc.strerror)

    def _post(self, text: str, thread_ts: str | None = None, broadcast: bool = False) -> dict:
        kw: dict[str, Any] = {"channel": self.channel, "text": text, "unfurl_links": False}
        if thread_ts:
            kw["thread_ts"] = thread_ts
            if broadcast:
                kw["reply_broadcast"] = True
        resp = self.client.chat_postMessage(**kw)
        return {"ts": resp["ts"], "channel": resp.get("channel") or self.channel}

    def deliver(self, msg: Message) -> None:
        thread = self.threads.get(msg.target) if msg.target else None
        if msg.kind == "rollout.progress":
            if thread is None:
                return  # no thread to put it in (the root was dropped): progress is not news
            if thread.get("progress_ts"):
                try:
                    self.client.chat_update(channel=thread["channel"], ts=thread["progress_ts"], text=msg.text)
                    return
                except SlackApiError as exc:
                    if exc.response.get("error") not in ("message_not_found", "cant_update_message"):
                        raise
            posted = self._post(msg.text, thread["ts"])
            thread["progress_ts"] = posted["ts"]
            self._save()
            return
        if msg.target and thread is None:
            posted = self._post(msg.text)  # the commit's first message opens its thread
            self.threads[msg.target] = {"ts": posted["ts"], "channel": posted["channel"]}
            self._save()
            return
        self._post(msg.text, thread["ts"] if thread else None, msg.broadcast)


class WebhookTransport:
    """An incoming webhook: plain channel messages, no threads, no edits (so no progress)."""

    def __init__(self, client: WebhookClient):
        self.client = client

    def deliver(self, msg: Message) -> None:
        if msg.kind == "rollout.progress":
            return
        resp = self.client.send(text=msg.text, unfurl_links=False)
        if resp.status_code != 200:
            body = (resp.body or "").strip()[:100]
            if resp.status_code in (400, 403, 404, 410):
                raise PermanentError(f"HTTP {resp.status_code} {body}")
            raise TransientError(f"HTTP {resp.status_code} {body}")


def format_event(event: Event, mention: str = "") -> str:
    icon = ICONS.get(event.kind, ":information_source:")
    text = f"{icon} {event.message}"
    if event.kind == "rollout.detected":
        text = f"{icon} *New commit* {event.message}"  # the message starts with the short sha
    if event.needs_human and mention:
        text = f"<!subteam^{mention}> {text}"
    return text


class SlackNotifier:
    """The Notifier: never blocks, never raises, never waits for Slack."""

    def __init__(self, transport, *, mention: str = "", retry_seconds: float = 300.0,
                 queue_size: int = 1000, backoff: Callable[[int], float] | None = None):
        self.transport = transport
        self.mention = mention
        self.retry_seconds = retry_seconds
        self.backoff = backoff or (lambda attempt: min(30.0, 0.5 * 2 ** attempt))
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=queue_size)
        self._progress_generation: dict[str, int] = {}
        self._stop = threading.Event()
        self.delivered = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="autoupdate-slack", daemon=True)
        self._thread.start()

    # --- the engine side (must be instant) ----------------------------------------------------
    def notify(self, event: Event) -> None:
        msg = Message(kind=event.kind, text=format_event(event, self.mention), target=event.target,
                      broadcast=event.needs_human, enqueued_at=time.monotonic())
        if event.kind == "rollout.progress":
            gen = self._progress_generation.get(event.target, 0) + 1
            self._progress_generation[event.target] = msg.generation = gen
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.dropped += 1
            log.warning("slack message dropped: queue full", kind=event.kind, queued=self._queue.qsize())

    # --- the delivery thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            try:
                if msg is None:
                    return
                self._deliver(msg)
            finally:
                self._queue.task_done()

    def _deliver(self, msg: Message) -> None:
        if msg.kind == "rollout.progress" and msg.generation < self._progress_generation.get(msg.target, 0):
            return  # a newer progress message is queued: only the latest is worth sending
        deadline = msg.enqueued_at + self.retry_seconds
        attempt = 0
        while True:
            try:
                self.transport.deliver(msg)
                self.delivered += 1
                return
            except PermanentError as exc:
                return self._drop(msg, str(exc))
            except Exception as exc:  # noqa: BLE001 - whatever Slack does, the thread lives on
                err = exc if isinstance(exc, (TransientError, PermanentError)) else _classify(exc)
                if isinstance(err, PermanentError):
                    return self._drop(msg, str(err))
                delay = self.backoff(attempt)
                attempt += 1
                if time.monotonic() + delay > deadline or self._stop.is_set():
                    return self._drop(msg, f"{err} (tried {attempt} time(s))")
                log.debug("slack delivery failed, retrying", kind=msg.kind, error=str(err), delay=delay)
                if self._stop.wait(delay):
                    return self._drop(msg, f"{err} (shutting down)")

    def _drop(self, msg: Message, why: str) -> None:
        self.dropped += 1
        log.warning("slack message dropped", kind=msg.kind, error=why)

    # --- lifecycle ----------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for the queue to empty (tests, and a clean shutdown)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout`, then stop retrying and exit."""
        self.flush(timeout)
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=1.0)


def from_settings(settings, deps) -> SlackNotifier:
    """Registry factory ("notifier": "slack"); `settings` is Settings."""
    s = settings.notify.slack
    if s is None:
        raise SlackError("notify.slack: section missing")
    # We log delivery failures ourselves, once per message and without secrets; slack-sdk would
    # log every failed attempt, and at debug level the webhook client logs its URL (a secret).
    logging.getLogger("slack_sdk").setLevel(logging.CRITICAL)
    rate_limits = [RateLimitErrorRetryHandler(max_retry_count=2)]
    if s.mode == "webhook":
        url = read_credential(s.webhook_url_file, s.webhook_url_env, "Slack webhook URL")
        transport: Any = WebhookTransport(WebhookClient(url, timeout=int(max(1, s.timeout)),
                                                        retry_handlers=rate_limits))
    else:
        token = read_credential(s.token_file, s.token_env, "Slack bot token")
        kw: dict[str, Any] = {"token": token, "timeout": int(max(1, s.timeout)), "retry_handlers": rate_limits}
        if s.base_url:
            kw["base_url"] = s.base_url if s.base_url.endswith("/") else s.base_url + "/"
        threads_file = None
        state_dir = getattr(settings, "state_dir", None)
        if state_dir is not None and Path(state_dir).is_dir():
            threads_file = Path(state_dir) / "slack-threads.json"
        transport = BotTransport(WebClient(**kw), s.channel, threads_file)
    return SlackNotifier(transport, mention=s.mention, retry_seconds=s.retry_seconds, queue_size=s.queue_size)
