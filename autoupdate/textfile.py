"""Reading a text file a human wrote (configuration, credentials): bytes that are not UTF-8 are
one more reason it cannot be read, an OSError like the others, not a UnicodeDecodeError that
every caller forgets (a traceback, whose message quotes a byte of what may be a secret)."""
from __future__ import annotations

from pathlib import Path


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OSError(None, f"not UTF-8 text (byte {exc.start + 1})") from None
