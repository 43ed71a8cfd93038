from datetime import datetime

from sqlalchemy import BigInteger, Double, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, Currency, Money, UTCDateTime

# Product signals (API.md 6): derived from the facts (order lines, returns received, refunds)
# and from reported events, kept up to date in the transaction of every fact that changes
# them; `returnstack profiles rebuild` recomputes them. Units count verified and reported
# events; the `reported_*` columns hold the reported part. None of them names a person.


# PostgreSQL: every fact rewrites these rows. Pages left 30 % free let an update that
# changes no indexed column write its new version on the same page (a HOT update: no index
# entry added, half the WAL records; measured with EXPLAIN (ANALYZE, WAL) on 2,000 upserts).
UPDATED_IN_PLACE = {"fillfactor": 70}
# The category rollups: a few rows per tenant, every one rewritten by every transaction.
# Pages left 90 % free keep all those updates HOT (at 100 %, half were not, and each
# lookup walked the dead index entries the others left: ~10 ms for 57 rows a batch).
REWRITTEN_EVERY_TIME = {"fillfactor": 10}


class ProductSignal(Base):
    """One product's totals, its category (for the rollups) and its raw return rate."""

    __tablename__ = "product_signals"
    # No index on the figures: every fact rewrites them, and an index per sort order would
    # cost ingestion more than sorting a tenant's products costs a list (measured).
    __table_args__ = (
        Index("ix_product_signals_tenant_id_category", "tenant_id", "category", "product_id"),
        {"sqlite_with_rowid": False, "postgresql_with": UPDATED_IN_PLACE},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    # The category (normalised: `Apparel/Tops`) of the product's latest verified line that
    # names one (by the order's time; of two lines at one time, the greater path); null if
    # none did. Reported events never set it: a public key must not move products around.
    category: Mapped[str | None] = mapped_column(String(500))
    category_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The category before the row's last write by the upkeep on PostgreSQL (its upsert sets
    # it from the old row, and RETURNING reads it back: the category rollups need the old
    # category when it changes; on SQLite the upkeep reads the row first and leaves this
    # as it is). Bookkeeping only: nothing else reads it.
    previous_category: Mapped[str | None] = mapped_column(String(500))
    units_sold: Mapped[int] = mapped_column(BigInteger, default=0)
    units_returned: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_units_sold: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_units_returned: Mapped[int] = mapped_column(BigInteger, default=0)
    return_rate: Mapped[float] = mapped_column(Double, default=0.0)
    # Whether the units its verified lines sold are kept per variant, channel and store in
    # `product_breakdowns`: from the transaction that takes its units sold to
    # `upkeep.KEEP_SALES_FROM` on (that transaction copies them in from its lines). Before,
    # the stats read them from its lines (a few hundred at most). See ProductBreakdown.
    sales_kept: Mapped[bool] = mapped_column(default=False, server_default=false())


class ProductBreakdown(Base):
    """A product's figures per variant, channel, store and currency ('' for no variant or
    no store: key columns cannot be null, and a client id is never empty). `units_sold`
    counts its verified lines only once the product's sales are kept
    (`ProductSignal.sales_kept`); until then its stats group its lines
    (`ix_order_lines_sales_by_product`). Most products of a catalogue sell a few units, and
    a row per line they sell was a third of the upkeep's cost to ingestion; a product that
    sells often has its rows written again and again, and reading its lines would grow
    with its history."""

    __tablename__ = "product_breakdowns"
    __table_args__ = ({"sqlite_with_rowid": False, "postgresql_with": UPDATED_IN_PLACE},)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel: Mapped[str] = mapped_column(String(10), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    currency: Mapped[str] = mapped_column(Currency, primary_key=True)
    units_sold: Mapped[int] = mapped_column(BigInteger, default=0)
    units_returned: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(Money, default=0)
    reported_units_sold: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_units_returned: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_refunded: Mapped[int] = mapped_column(Money, default=0)


class ProductReason(Base):
    """Units returned per reason code."""

    __tablename__ = "product_reasons"
    __table_args__ = ({"sqlite_with_rowid": False},)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_units: Mapped[int] = mapped_column(BigInteger, default=0)


class CategorySignal(Base):
    """Units sold and returned of every product under a category path, at every level
    (`Apparel/Tops` counts in `Apparel/Tops`, `Apparel` and the tenant's root `''`)."""

    __tablename__ = "category_signals"
    __table_args__ = ({"sqlite_with_rowid": False, "postgresql_with": REWRITTEN_EVERY_TIME},)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    units_sold: Mapped[int] = mapped_column(BigInteger, default=0)
    units_returned: Mapped[int] = mapped_column(BigInteger, default=0)
