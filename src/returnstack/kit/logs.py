"""Structured JSON logs: one object per line, with dotted event names as the message.

Logs never carry personal data (API.md 5). Requests are logged by route template; errors by
type, frames and, for a database error, the kind of statement and the database's error code,
never by message: SQLAlchemy's messages quote the bound parameters, PostgreSQL's the
offending values, Pydantic's the input.
"""

import logging
import logging.config
import re
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return safe_traceback(ei[1]) if ei[1] is not None else ""


_STATEMENT = re.compile(
    r"^\s*(?P<verb>INSERT INTO|UPDATE|DELETE FROM|SELECT|WITH|BEGIN|COMMIT|ROLLBACK|\w+)"
    r"(?:\s+(?P<target>[\w.\"]+))?",
    re.IGNORECASE,
)
_FROM = re.compile(r"\bFROM\s+(?P<table>[\w.\"]+)", re.IGNORECASE)


def statement_kind(statement: str | None) -> str | None:
    """`INSERT INTO orders`, `SELECT FROM returns`: what a statement did, without values."""
    if not statement:
        return None
    match = _STATEMENT.match(statement)
    if match is None:
        return None
    verb = " ".join(match.group("verb").upper().split())
    if verb in ("SELECT", "WITH"):
        table = _FROM.search(statement)
        return f"SELECT FROM {table.group('table')}" if table else "SELECT"
    if verb in ("INSERT INTO", "UPDATE", "DELETE FROM") and match.group("target"):
        return f"{verb} {match.group('target')}"
    return verb


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during, innermost last."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain


def _name(exc: BaseException) -> str:
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _database_fields(exc: BaseException) -> dict[str, Any]:
    """A database error's kind of statement and codes: names and numbers, no values."""
    from sqlalchemy.exc import StatementError

    if not isinstance(exc, StatementError):
        return {}
    fields: dict[str, Any] = {"statement": statement_kind(exc.statement)}
    origin = exc.orig
    code = getattr(origin, "sqlstate", None) or getattr(origin, "sqlite_errorname", None)
    if code:
        fields["db_error_code"] = str(code)
    constraint = getattr(getattr(origin, "diag", None), "constraint_name", None)
    if constraint:
        fields["db_constraint"] = str(constraint)
    return fields


def safe_traceback(exc: BaseException) -> str:
    """A traceback with every frame but no exception message."""
    parts: list[str] = []
    for link in reversed(_chain(exc)):
        if parts:
            parts.append("\nDuring or because of the above, another exception occurred:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_list(traceback.extract_tb(link.__traceback__)))
        parts.append(f"{_name(link)} (message withheld: it may quote personal data)\n")
    return "".join(parts)


def error_fields(exc: BaseException | None = None) -> dict[str, Any]:
    """What a log line may say about an error (the one being handled by default): its type,
    the types it was raised from, a database error's kind of statement and codes, and the
    traceback without messages."""
    if exc is None:
        exc = sys.exc_info()[1]
        if exc is None:
            return {}
    fields: dict[str, Any] = {
        "error_type": _name(exc),
        "error_chain": [_name(link) for link in _chain(exc)[1:]],
    }
    for link in _chain(exc):
        fields.update({key: value for key, value in _database_fields(link).items() if value})
    fields["traceback"] = safe_traceback(exc)
    return fields


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for the server: JSON lines on stderr. Uvicorn applies it in every worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "returnstack.kit.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # The request middleware logs each request; uvicorn's access log would repeat it.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            # httpx logs every request it sends at INFO: a line per webhook attempt, which
            # the deliveries' own rows record already (and which cost the dispatcher CPU).
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
