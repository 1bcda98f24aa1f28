"""Structured logs for every service: one line per record, JSON or text.

``configure`` installs one root handler whose formatter is structlog's, so the
standard ``logging.getLogger(__name__)`` calls everywhere keep working and every
record carries the context bound with :func:`bound` in the current thread or task
(``request_id`` in the gateway; ``job_id``, ``chunk`` and ``item_ids`` in a worker
running a chunk; ``run_id`` in the trainer). JSON lines have ``timestamp`` (UTC,
ISO 8601), ``level``, ``logger``, ``event`` (the message) and the bound fields.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars, get_contextvars

__all__ = ["bound", "configure", "context", "dict_config", "formatter"]

bound = bound_contextvars
"""``with bound(job_id=..., chunk=...):`` adds the fields to every record logged inside."""
context = get_contextvars
"""The fields bound now."""

_HANDLER_NAME = "charter"


def formatter(json: bool) -> logging.Formatter:
    """The formatter of every Charter log line (usable as a dictConfig ``()`` factory)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


def configure(json: bool, level: int | str = logging.INFO) -> None:
    """Log to stderr as JSON lines (``json``) or readable text; idempotent (a second
    call replaces the handler the first installed, and keeps any other)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(json))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def dict_config(json: bool, level: str = "INFO") -> dict[str, Any]:
    """The same set-up as a ``logging.config.dictConfig`` dict, for uvicorn's
    ``log_config`` (applied in each of its worker processes); uvicorn's own loggers,
    the access log included, go through the root handler."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"charter": {"()": "charter.log_format.formatter", "json": json}},
        "handlers": {
            "charter": {
                "class": "logging.StreamHandler",
                "formatter": "charter",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["charter"], "level": level},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
