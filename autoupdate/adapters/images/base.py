"""What every image back-end shares: secrets from files, checked commands, JSON over HTTP.

Back-end errors become ports.ImageError carrying the back-end's own message. Secrets (bearer
tokens) are read from files at each use, so a rotated token is picked up, and never appear in
a message or a log line.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from ... import proc
from ...ports import ImageError
from ...textfile import read_text

MODES = ("reload", "reprovision")


class PartialImageError(ImageError):
    """Some nodes failed, others did not: `failures` maps node -> the back-end's message."""

    def __init__(self, failures: Mapping[str, str]):
        self.failures = dict(failures)
        first = next(iter(self.failures.items()))
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        super().__init__(f"{first[0]}: {first[1]}{more}")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ImageError(f"unknown image mode {mode!r} (expected reload or reprovision)")
    return mode


def read_secret(path: str, what: str) -> str:
    """The secret in `path`, stripped. The message names the file, never its content."""
    if not path:
        return ""
    try:
        value = read_text(path).strip()
    except OSError as exc:
        raise ImageError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if not value:
        raise ImageError(f"{what} file {path} is empty")
    return value


def run(argv: Sequence[str], timeout: float, what: str) -> proc.Result:
    """Run a back-end command; any failure becomes ImageError with the command's own words."""
    try:
        result = proc.run(list(argv), timeout=timeout)
    except proc.CommandError as exc:
        raise ImageError(f"{what}: {exc}") from None
    if not result.ok:
        raise ImageError(f"{what} failed (exit {result.returncode}): {result.brief()}")
    return result


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        snippet = text.strip().replace("\n", " ")[:80]
        raise ImageError(f"{what}: invalid JSON ({exc.msg} at char {exc.pos}): {snippet!r}") from None


class JsonHttp:
    """A small JSON-over-HTTP client: base URL, optional bearer token file, timeouts.

    Every failure (connection, timeout, HTTP status >= 400, a body that is not JSON) raises
    ImageError naming the service, the method and the path, plus the server's own message.
    """

    def __init__(self, service: str, base_url: str, *, token_file: str = "", timeout: float = 30.0,
                 verify: bool | str = True):
        import requests  # adapters only: the core never imports HTTP libraries

        self._requests = requests
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout
        self.verify = verify
        self.session = requests.Session()

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        token = read_secret(self.token_file, f"{self.service} token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                body: Any = None, expect_json: bool = True) -> Any:
        what = f"{self.service} {method} {path}"
        data = None if body is None else json.dumps(body)
        try:
            resp = self.session.request(method, self.base_url + path, params=params, data=data,
                                        headers=self._headers(body is not None),
                                        timeout=self.timeout, verify=self.verify)
        except self._requests.Timeout:
            raise ImageError(f"{what}: no answer within {self.timeout:g}s") from None
        except self._requests.RequestException as exc:
            # The exception text names the URL, never our headers: safe to show.
            raise ImageError(f"{what}: cannot connect: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise ImageError(f"{what}: HTTP {resp.status_code} {_server_message(resp)}")
        if not expect_json or not resp.content.strip():
            return None
        return parse_json(resp.text, what)


def _server_message(resp: Any) -> str:
    """The server's own words: RFC 7807 title/detail, a 'message'/'error' field, or the text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("title", "detail", "message", "error") if body.get(k)]
        if parts:
            return ": ".join(dict.fromkeys(parts))
    text = (resp.text or resp.reason or "").strip().replace("\n", " ")
    return text[:200]
