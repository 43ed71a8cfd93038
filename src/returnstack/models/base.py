"""Declarative base: stable constraint names on every backend, UTC timestamps, money types."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, MetaData, String
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no time zones) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every timestamp must carry its offset")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Money = BigInteger  # minor units of the row's currency
Currency = String(3)
ClientId = String(128)  # ids chosen by the client (order_id, product_id, event id)
Json = JSON


# Foreign keys: configuration tables (keys, counters, policies, sessions, attachments) carry
# them. The high-volume fact tables (events, orders and lines, customers, returns and their
# items and history, outbox) do not: their parents are written by the same service function
# in the same transaction, and on PostgreSQL each row's check would cost a lookup (about 40 %
# of an order line's insert, and far worse on a fresh table, whose cached check plan scans).


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
