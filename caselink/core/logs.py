"""One log format for every caselink process: the worker (and Faust under it), its normaliser
processes, the consent gate and the ingest service (and uvicorn under it).

``log.format``: ``text`` (one line: time, level, logger, process, message) or ``json`` (one JSON
object a line, for a log shipper). ``log.level``: what caselink's own loggers say; Faust, mode,
aiokafka and uvicorn's access log speak from WARNING, since at INFO they describe every service
they start and every request, which buried caselink's own lines.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from caselink.core.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d%(role)s] %(message)s"
# Libraries that describe their own machinery at INFO.
QUIET_LIBRARIES = ("faust", "mode", "aiokafka", "kafka", "aiohttp.access", "uvicorn.access", "asyncio")


class TextFormatter(logging.Formatter):
    """``2026-11-30T15:16:18.804Z INFO caselink.streams.linker_loop [2481] message``."""

    def __init__(self, role: str = "") -> None:
        super().__init__(TEXT_FORMAT)
        self.role = f" {role}" if role else ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        record.role = self.role
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: at, level, logger, pid, role, message (and exception, when there is one)."""

    def __init__(self, role: str = "") -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {"at": _iso(record.created), "level": record.levelname, "logger": record.name,
                                "pid": record.process, "message": record.getMessage()}
        if self.role:
            body["role"] = self.role
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def logging_config(settings: Settings, level: str | None = None, role: str = "") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: one handler on stderr with caselink's formatter.
    ``level`` overrides ``log.level`` (a command's --loglevel); ``role`` names the process kind."""
    chosen = _level(level or settings.log.level)
    formatter = JsonFormatter if settings.log.format == "json" else TextFormatter
    quiet = max(chosen, logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"caselink": {"()": formatter, "role": role}},
        "handlers": {"caselink": {"class": "logging.StreamHandler", "formatter": "caselink",
                                  "stream": "ext://sys.stderr"}},
        "root": {"level": chosen, "handlers": ["caselink"]},
        "loggers": {name: {"level": quiet} for name in QUIET_LIBRARIES}
        | {"uvicorn": {"level": chosen, "handlers": ["caselink"], "propagate": False},
           "uvicorn.error": {"level": chosen}},
    }


def configure(settings: Settings, level: str | None = None, role: str = "") -> None:
    """Set up the process's logging by ``logging_config``."""
    logging.config.dictConfig(logging_config(settings, level, role))


def _level(name: str) -> int:
    """``warn``, ``WARNING``, ``crit`` ... as a logging level (Faust's names are accepted too)."""
    aliases = {"warn": "WARNING", "crit": "CRITICAL", "fatal": "CRITICAL"}
    value = logging.getLevelName(aliases.get(name.lower(), name.upper()))
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}: debug, info, warning, error")
    return value
