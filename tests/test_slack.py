"""The Slack notifier against a local server that answers like Slack's Web API."""
from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from autoupdate.adapters import slack
from autoupdate.adapters.slack import SlackError, SlackNotifier, read_credential
from autoupdate.config import parse_config
from autoupdate.model import Event
from rig.slack_server import TOKEN, FakeSlack

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake():
    server = FakeSlack().start()
    yield server
    server.stop()


def settings(fake: FakeSlack, tmp_path, **slack_kw):
    section = {"mode": "bot", "channel": "#hpc-updates", "token_env": "AU_TEST_SLACK_TOKEN",
               "base_url": fake.base_url, "timeout": 1, "retry_seconds": 5, **slack_kw}
    return parse_config({"repository": {"url": "x"}, "notify": {"slack": section},
                         "control": {"state_dir": str(tmp_path)}})


@pytest.fixture
def bot(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("AU_TEST_SLACK_TOKEN", TOKEN)
    made = []

    def make(**kw) -> SlackNotifier:
        n = slack.from_settings(settings(fake, tmp_path, **kw), deps=None)
        n.backoff = lambda attempt: 0.1  # fast retries for tests
        made.append(n)
        return n

    yield make
    for n in made:
        n.close(timeout=0.1)


def ev(kind, message="m", target=SHA, **kw) -> Event:
    return Event(kind=kind, message=message, target=target, rollout_id=1, **kw)


def test_one_thread_per_commit_and_progress_edited_in_place(fake, bot):
    n = bot(mention="S0HPCADMINS")
    n.notify(ev("rollout.detected", "abc 'new kernel': 4 drain, 0 hot"))
    n.notify(ev("canary.started", "canaries node[001-002] first"))
    n.notify(ev("rollout.progress", "progress: 0/4 done"))
    assert n.flush(5)
    n.notify(ev("rollout.progress", "progress: 2/4 done, ETA 10 min"))
    assert n.flush(5)
    n.notify(ev("node.failed", "node003: reboot timed out", needs_human=True))
    n.notify(ev("rollout.progress", "progress: 4/4 done"))
    n.notify(ev("rollout.done", "rolled out"))
    n.notify(ev("rollout.detected", "second commit", target="f" * 40))
    n.notify(Event(kind="paused", message="paused: maintenance"))
    assert n.flush(5)

    roots = fake.roots()
    assert [r["text"] for r in roots] == [
        ":arrows_counterclockwise: *New commit* abc 'new kernel': 4 drain, 0 hot",
        ":arrows_counterclockwise: *New commit* second commit",
        ":double_vertical_bar: paused: maintenance",  # about no commit: channel level
    ]
    replies = fake.replies(roots[0]["ts"])
    texts = [r["text"] for r in replies]
    assert texts[0] == ":hatching_chick: canaries node[001-002] first"
    progress = [r for r in replies if "progress" in r["text"]]
    assert len(progress) == 1 and progress[0]["text"].endswith("progress: 4/4 done")
    assert progress[0]["edits"] >= 1
    failed = next(r for r in replies if "node003" in r["text"])
    assert failed["text"].startswith("<!subteam^S0HPCADMINS> :x: node003")
    assert failed["broadcast"] is True
    assert texts[-1] == ":tada: rolled out"
    assert {c.method for c in fake.calls} == {"chat.postMessage", "chat.update"}
    assert n.dropped == 0


def test_progress_messages_are_coalesced_while_queued(fake, bot):
    n = bot()
    fake.down = "hang"
    fake.hang_seconds = 0.5
    n.notify(ev("rollout.detected"))  # stuck behind the hanging server for a moment
    for i in range(20):
        n.notify(ev("rollout.progress", f"progress {i}"))
    fake.down = ""
    assert n.flush(15)
    root = fake.roots()[0]
    progress = fake.replies(root["ts"])
    assert [p["text"] for p in progress] == [":bar_chart: progress 19"]
    assert sum(1 for c in fake.calls if c.method in ("chat.update",)) == 0  # only the last was sent


def test_rate_limit_honours_retry_after(fake, bot):
    n = bot()
    fake.fail_next(429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"})
    started = time.monotonic()
    n.notify(ev("rollout.detected"))
    assert n.flush(10)
    posts = [c for c in fake.calls if c.method == "chat.postMessage"]
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 1.0  # waited as told
    assert len(fake.roots()) == 1 and n.dropped == 0
    assert time.monotonic() - started < 5


def test_server_errors_are_retried_then_delivered(fake, bot):
    n = bot()
    fake.fail_next(500, times=3)
    n.notify(ev("rollout.detected"))
    assert n.flush(10)
    assert [c.status for c in fake.calls] == [500, 500, 500, 200]
    assert len(fake.roots()) == 1 and n.dropped == 0


def test_outage_longer_than_retry_window_drops_with_a_log_line(fake, bot):
    n = bot(retry_seconds=1)
    fake.down = "500"
    with capture_logs() as logs:
        n.notify(ev("rollout.halted", "halted: 3 failures", needs_human=True))
        assert n.flush(10)
    assert n.dropped == 1 and not fake.roots()
    assert 2 <= len(fake.calls) <= 15  # retried for a while, then gave up
    drops = [e for e in logs if e["event"] == "slack message dropped"]
    assert drops and drops[0]["kind"] == "rollout.halted"


def test_permanent_error_is_not_retried(fake, bot, monkeypatch):
    monkeypatch.setenv("AU_TEST_SLACK_TOKEN", "xoxb-wrong-token")
    n = bot()
    with capture_logs() as logs:
        n.notify(ev("rollout.detected"))
        assert n.flush(5)
    assert len(fake.calls) == 1 and n.dropped == 1
    assert "invalid_auth" in str(logs)
    assert "xoxb-wrong-token" not in str(logs)  # the token never reaches a log


@pytest.mark.parametrize("down", ["500", "hang"])
def test_notify_never_waits_for_slack(fake, bot, down):
    n = bot(retry_seconds=2)
    fake.down, fake.hang_seconds = down, 3
    started = time.monotonic()
    for i in range(200):
        n.notify(ev("node.attempt_failed", f"event {i}"))
    assert time.monotonic() - started < 0.5  # 200 events cost the engine next to nothing


def test_full_queue_drops_instead_of_blocking(fake, bot):
    n = bot(queue_size=3, retry_seconds=1)
    fake.down, fake.hang_seconds = "hang", 2
    started = time.monotonic()
    with capture_logs() as logs:
        for i in range(10):
            n.notify(ev("node.attempt_failed", f"event {i}"))
    assert time.monotonic() - started < 0.5
    assert n.dropped >= 6
    assert any(e["event"] == "slack message dropped: queue full" for e in logs)


def test_threads_survive_a_restart(fake, bot):
    first = bot()
    first.notify(ev("rollout.detected"))
    first.notify(ev("rollout.progress", "1/4"))
    assert first.flush(5)
    first.close()
    second = bot()  # same state_dir: a restarted daemon
    second.notify(ev("rollout.progress", "2/4"))
    second.notify(ev("rollout.done"))
    assert second.flush(5)
    assert len(fake.roots()) == 1
    replies = fake.replies(fake.roots()[0]["ts"])
    assert [r["text"] for r in replies] == [":bar_chart: 2/4", ":tada: m"]


def test_webhook_mode_sends_plain_messages(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("AU_TEST_WEBHOOK", fake.webhook_url)
    s = settings(fake, tmp_path, mode="webhook", channel="", webhook_url_env="AU_TEST_WEBHOOK",
                 mention="S0ADMINS")
    n = slack.from_settings(s, deps=None)
    try:
        n.notify(ev("rollout.detected", "new"))
        n.notify(ev("rollout.progress", "1/2"))  # cannot be edited in place: not sent
        n.notify(ev("rollout.halted", "halted", needs_human=True))
        assert n.flush(5)
    finally:
        n.close(0.1)
    assert [c.body["text"] for c in fake.calls] == [
        ":arrows_counterclockwise: *New commit* new",
        "<!subteam^S0ADMINS> :octagonal_sign: halted",
    ]
    assert all(c.method == "webhook" for c in fake.calls)


def test_webhook_rate_limit_and_errors(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("AU_TEST_WEBHOOK", fake.webhook_url)
    n = slack.from_settings(settings(fake, tmp_path, mode="webhook", channel="",
                                     webhook_url_env="AU_TEST_WEBHOOK"), deps=None)
    n.backoff = lambda attempt: 0.1
    try:
        fake.fail_next(429, {"Retry-After": "1"}, {"ok": False})
        fake.fail_next(503)
        n.notify(ev("rollout.done"))
        assert n.flush(10)
    finally:
        n.close(0.1)
    assert [c.status for c in fake.calls] == [429, 503, 200]
    assert n.dropped == 0


@pytest.mark.parametrize("file_name,env,creds_dir,expected", [
    ("slack-token", {}, True, "from-file"),
    ("ABSOLUTE", {}, False, "from-file"),
    ("", {"AU_TOK": "from-env"}, False, "from-env"),
])
def test_read_credential(tmp_path, file_name, env, creds_dir, expected):
    (tmp_path / "slack-token").write_text("from-file\n")
    environ = dict(env)
    if creds_dir:
        environ["CREDENTIALS_DIRECTORY"] = str(tmp_path)
    if file_name == "ABSOLUTE":
        file_name = str(tmp_path / "slack-token")
    assert read_credential(file_name, "AU_TOK", "Slack bot token", environ) == expected


@pytest.mark.parametrize("file_name,environ,message", [
    ("slack-token", {}, "is relative but $CREDENTIALS_DIRECTORY is not set"),
    ("/nonexistent/token", {}, "cannot read Slack bot token file /nonexistent/token: No such file"),
    ("", {}, "no Slack bot token: set a file in the configuration or the environment variable AU_TOK"),
    ("NOT_UTF8", {}, "cannot read Slack bot token file {tmp}/token: not UTF-8 text (byte 6)"),
])
def test_read_credential_errors(tmp_path, file_name, environ, message):
    if file_name == "NOT_UTF8":
        (tmp_path / "token").write_bytes(b"xoxb-\xff-s3cret")
        file_name, message = str(tmp_path / "token"), message.format(tmp=tmp_path)
    with pytest.raises(SlackError, match=None) as err:
        read_credential(file_name, "AU_TOK", "Slack bot token", environ)
    assert message in str(err.value)
