"""structlog set-up: human-readable on a terminal, JSON lines for journald/log shippers."""
from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(fmt: str = "console", level: str = "info", stream=None) -> None:
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Quiet the libraries that log through stdlib logging (APScheduler warns of every skipped run).
    logging.basicConfig(level=logging.WARNING, stream=stream or sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
