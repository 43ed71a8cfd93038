"""Settings, read from RETURNSTACK_* environment variables or a .env file."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RETURNSTACK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        "sqlite:///./returnstack.db",
        description="SQLAlchemy URL: sqlite:///path.db (default) or postgresql+psycopg://...",
    )
    data_dir: Path = Field(Path("./returnstack-data"), description="Attachments and other files.")
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        "NORMAL",
        description=(
            "SQLite WAL synchronous mode. NORMAL survives a crash of the process (what a 2xx "
            "promises); FULL also survives power loss, at one fsync per commit."
        ),
    )
    db_pool_size: int = Field(10, ge=1, le=40, description="Connections kept open per process.")
    auto_migrate: bool = Field(
        True, description="Apply pending migrations when a command or the server starts."
    )
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="Request body limit.")
    rate_limit_per_second: float = Field(
        1000.0, ge=0, description="Requests per second per API key and process; 0 disables."
    )
    rate_limit_burst: int = Field(2000, ge=1)
    # 2 s: a burst, or a stall of the machine, is not overload (0.5 s refused most of a burst
    # of 24 on a busy CI machine); sustained overload is still shed well inside clients'
    # timeouts (5 s for httpx's default, more for SDKs).
    admission_max_wait: float = Field(
        2.0,
        ge=0,
        le=300,
        description=(
            "Seconds a request may wait for a thread before its work starts; past it, 503 "
            "`overloaded` with Retry-After, nothing written, so that the requests admitted keep "
            "their latency under overload. Every route but POST /v1/events (bounded by "
            "RETURNSTACK_INGEST_MAX_WAIT) and the health and metrics routes. 0: no limit."
        ),
    )
    ingest_max_wait: float = Field(
        10.0,
        gt=0,
        le=300,
        description=(
            "Seconds an event request (POST /v1/events, the vendor event paths) may wait for "
            "the process's writer; past it, 503 `overloaded` with Retry-After, nothing written."
        ),
    )
    ingest_queue_limit: int = Field(
        512,
        ge=1,
        description=(
            "Event requests waiting for the writer per process; past it, 503 `overloaded` at once."
        ),
    )
    attachment_quota_bytes: int = Field(
        10 * 1024**3,
        ge=0,
        description="Attachment storage per tenant (bytes, default 10 GiB); 0 means no quota.",
    )
    log_level: str = "INFO"
    log_requests: bool = Field(True, description="One JSON log line per request.")
    webhooks_allow_private: bool = Field(
        False,
        description="Deliver webhooks to loopback, private and link-local addresses (tests, "
        "intranets). Off: such URLs are refused when subscribing and at every delivery.",
    )
    sqlite_analyze_interval: float = Field(
        3600.0,
        ge=0,
        description="SQLite: seconds between the server's checks of the planner statistics "
        "(ANALYZE of tables never analyzed, or grown or shrunk tenfold since; also soon "
        "after start). 0: never (run `ANALYZE` yourself).",
    )
    webhooks_dispatcher: bool = Field(
        True,
        description="Run the webhook dispatcher inside `serve` (off: run `returnstack worker`).",
    )
    webhooks_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the sending threads of the dispatcher process that "
        "`serve` starts, so that deliveries use what request handling leaves idle (0: the same "
        "priority). Its database work runs at the server's priority (see "
        "RETURNSTACK_WEBHOOKS_YIELD_INTERVAL).",
    )
    webhooks_yield_interval: float | None = Field(
        None,
        ge=0,
        le=10,
        description="While the server process that started it is busy (it used more than "
        "half a core over the last quarter of a second, or a tenth of one while every core "
        "was busy), `serve`'s dispatcher writes to the database at most once per this many "
        "seconds, publishing and claiming at most 8 x its concurrency each time, and "
        "catches up once the server is quieter (0: never yield). Default: 1 on SQLite, "
        "where each of its write transactions holds the server's writes back, 0.5 on "
        "PostgreSQL, where they do not.",
    )
    webhooks_poll_interval: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds between checks for new work when no wake-up arrives "
        "(PostgreSQL wakes dispatchers with LISTEN/NOTIFY; other SQLite processes poll).",
    )
    webhooks_connect_timeout: float = Field(5.0, gt=0, le=60, description="Seconds to connect.")
    webhooks_timeout: float = Field(
        15.0, gt=0, le=120, description="Seconds for a whole delivery attempt."
    )
    webhooks_concurrency: int = Field(
        16, ge=1, le=256, description="Deliveries in flight per dispatcher."
    )
    webhooks_retention_days: int = Field(
        30, ge=1, le=3650, description="Days messages and delivery rows are kept."
    )
    cors_origins: list[str] = Field(
        ["*"],
        description="Origins whose browsers may call the public routes (/v1/storefront/*, "
        'POST /v1/events and the event compatibility paths): a JSON list; "*" allows any.',
    )
    cors_staff_origins: list[str] = Field(
        [],
        description="Origins whose browsers may call the rest of the API (default none: "
        "secret keys belong on servers).",
    )

    products_prior_strength: float = Field(
        20.0,
        ge=0,
        le=1_000_000,
        description=(
            "Smoothing of product return rates: how many units sold the prior (the category's "
            "or the tenant's return rate) weighs, as if that many units had been seen at it."
        ),
    )
    products_prior_min_units: int = Field(
        100,
        ge=1,
        description=(
            "A category is the prior of its products once this many units of it were sold; "
            "below that, its parent is tried, then the tenant's rate."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be a sqlite:// or postgresql+psycopg:// URL")
        if value.startswith(("postgresql://", "postgres://")):
            # Plain postgresql:// would pick psycopg2, which we do not ship.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @property
    def yield_interval(self) -> float:
        """RETURNSTACK_WEBHOOKS_YIELD_INTERVAL, or its default for the database."""
        if self.webhooks_yield_interval is not None:
            return self.webhooks_yield_interval
        return 1.0 if self.is_sqlite else 0.5

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
