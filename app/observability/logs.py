"""Log setup for every process: readable text by default, one JSON object a line with
LOG_FORMAT=json. Each record carries the context fields (request id, job id, business, miner)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from app.observability import context

NOISY = ("alembic", "httpx", "httpcore")


class ContextFilter(logging.Filter):
    """Puts the context fields on every record (also records of libraries: uvicorn's access log
    runs in the request's task, so it gets the request id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context.current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(), "pid": record.process}
        for name in context.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{name}={getattr(record, name)}" for name in context.FIELDS
                         if getattr(record, name, None) is not None)
        return f"{line} [{extra}]" if extra else line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record is emitted, as logging's own last-resort
    handler does. A handler holding the stream of setup time writes into a closed file once
    sys.stderr is swapped (pytest's capture of each test, a redirect), and every record then
    prints "--- Logging error ---" instead."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's: it would store a stream

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def setup(log_format: str = "text", level: str = "INFO") -> None:
    """The root logger writes to stderr in the chosen format; uvicorn's loggers go through it
    (their own handlers removed) so that its access and error lines are formatted alike."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config(log_format: str, level: str) -> dict[str, Any]:
    """uvicorn's log_config for `mia serve`: its workers are new processes that configure
    logging from this dict before importing the app, so the formatter is named here."""
    return {
        "version": 1, "disable_existing_loggers": False,
        # classes, not dotted names: dictConfig would import the app under logging's lock
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"main": {"()": JsonFormatter if log_format == "json" else TextFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "main", "filters": ["context"]}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level.upper()}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
                   | {name: {"level": "WARNING"} for name in NOISY},
    }
