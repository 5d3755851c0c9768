"""Logging set-up: structlog for our events, and the standard library's logging (kazoo logs
there) rendered the same way to the same stream, so a node writes one uniform log.

Our events pass at `level`; other libraries' records only from WARNING up (or `level`, if
higher), so kazoo's per-connection INFO chatter stays out of the log."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("auto", "json", "console")


def resolve_format(fmt: str, stream: TextIO) -> str:
    """`auto` is people's console format on a terminal and JSON lines for machines otherwise."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


class _LevelSplit(logging.Filter):
    """Passes structlog events from `ours` up and foreign records from `theirs` up."""

    def __init__(self, ours: int, theirs: int) -> None:
        super().__init__()
        self.ours = ours
        self.theirs = theirs

    def filter(self, record: logging.LogRecord) -> bool:
        from_structlog = isinstance(record.msg, dict)  # wrap_for_formatter passes the event dict
        return record.levelno >= (self.ours if from_structlog else self.theirs)


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    library_level: str = "warning",
) -> None:
    """Route structlog and stdlib logging to one handler on `stream` (stderr by default).
    Calling it again replaces the previous set-up instead of adding to it."""
    if level not in LEVELS or library_level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    out = sys.stderr if stream is None else stream
    fmt = resolve_format(fmt, out)
    ours = LEVELS[level]
    theirs = max(LEVELS[library_level], ours)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        render: list[Any] = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:  # colours only on a terminal; rich (a dependency) renders exceptions
        colors = bool(getattr(out, "isatty", None) and out.isatty())
        render = [structlog.dev.ConsoleRenderer(colors=colors)]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(ours),
        # Not cached, so that a later configure_logging() also applies to existing loggers.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    handler.addFilter(_LevelSplit(ours, theirs))
    handler.set_name("pulsegate")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "pulsegate"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(ours, theirs))
