"""The `returnstack` command: the server, migrations, tenants and keys, import and the demo."""

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from returnstack.config import get_settings
from returnstack.kit import migrate
from returnstack.kit.db import Database
from returnstack.kit.errors import ApiError, ServiceUnavailable
from returnstack.kit.timefmt import rfc3339
from returnstack.models import Tenant
from returnstack.tenants import repository as tenants_repository

app = typer.Typer(help="returnstack: a self-hostable returns platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (one per retailer).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
profiles_app = typer.Typer(help="Customer profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
users_app = typer.Typer(help="Dashboard users.", no_args_is_help=True)
app.add_typer(users_app, name="users")

console = Console(stderr=True)
out = Console()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object, for scripts.")]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id or name.")]


class KeyKind(StrEnum):
    secret = "secret"
    publishable = "publishable"


class Role(StrEnum):
    admin = "admin"
    agent = "agent"
    viewer = "viewer"


class ImportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _database(*, migrate_schema: bool = True, long_running: bool = False) -> Database:
    settings = get_settings()
    db = Database(settings, background_checkpoints=long_running)
    if migrate_schema and settings.auto_migrate and not migrate.is_current(db.engine):
        migrate.upgrade(db.engine)
    return db


def _emit(as_json: bool, payload: dict[str, Any], human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        human()


@contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    """Domain errors become a message and exit code 1 (a JSON object with --json)."""
    try:
        yield
    except ApiError as error:
        _fail(as_json, error)
    except OperationalError as error:
        # Unreachable or unusable database: its message may carry the URL, so it goes to the
        # log, not to stdout.
        logging.getLogger("returnstack.cli").error("database unavailable: %s", error.orig)
        _fail(as_json, ServiceUnavailable("The database is unreachable."))


@contextmanager
def _session(as_json: bool, *, write: bool = True) -> Iterator[Session]:
    """One transaction of the database; errors as `_errors` reports them."""
    with _errors(as_json):
        db = _database()
        with db.transaction(write=write) as session:
            yield session


def _print_table(headers: tuple[str, ...], rows: Iterable[tuple[str | None, ...]]) -> None:
    table = Table(*headers)
    for row in rows:
        table.add_row(*(value or "" for value in row))
    out.print(table)


def _emit_rows(as_json: bool, headers: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """A list: {"data": rows} with --json, else a table of each row's values in order."""
    table = (tuple(row.values()) for row in rows)
    _emit(as_json, {"data": rows}, lambda: _print_table(headers, table))


def _fail(as_json: bool, error: ApiError) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps(error.body()) + "\n")
    else:
        console.print(f"[red]error:[/red] {error.message}")
        for detail in error.details:
            console.print(f"  {detail.get('path')}: {detail.get('message')}")
    raise typer.Exit(1) from None


# --- server -------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
) -> None:
    """Run the HTTP API and the dashboard (at /dashboard)."""
    import uvicorn

    from returnstack.kit.logs import logging_config

    _database().dispose()  # migrate once, before any worker starts
    metrics_dir = None
    if (workers > 1 or get_settings().webhooks_dispatcher) and not os.environ.get(
        "PROMETHEUS_MULTIPROC_DIR"
    ):
        # Metrics summed over the workers and their dispatcher processes (prometheus_client's
        # multiprocess mode): each, a fresh interpreter, reads this before it imports
        # prometheus_client (so does this process: uvicorn imports the app after this).
        metrics_dir = tempfile.mkdtemp(prefix="returnstack-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "returnstack.app:serve_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=logging_config(get_settings().log_level),
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def worker() -> None:
    """Run the webhook dispatcher alone (scale-out: any number on PostgreSQL; on SQLite one
    runs at a time, the others wait). Stops cleanly on SIGINT or SIGTERM."""
    import logging.config
    import signal
    import threading

    from returnstack.kit.logs import logging_config
    from returnstack.webhooks.dispatcher import Dispatcher

    settings = get_settings()
    logging.config.dictConfig(logging_config(settings.log_level))
    db = _database(long_running=True)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    dispatcher = Dispatcher(db, settings)
    console.print("webhook dispatcher running (Ctrl-C to stop)")
    try:
        dispatcher.run(stop)
    finally:
        dispatcher.close()
        db.dispose()


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Apply pending migrations."""
    with _errors(as_json):
        db = _database(migrate_schema=False)
        try:
            migrate.upgrade(db.engine)
            revision = migrate.current_revision(db.engine)
        finally:
            db.dispose()
    _emit(
        as_json,
        {"status": "up_to_date", "revision": revision},
        lambda: console.print(f"database is up to date (revision {revision})"),
    )


# --- tenants and keys ---------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    name: str,
    currency: Annotated[str, typer.Option(help="Default ISO 4217 currency.")] = "USD",
    as_json: JsonFlag = False,
) -> None:
    """Create a tenant; prints its id and signing secret (shown once)."""
    from returnstack.tenants.service import create_tenant

    with _session(as_json) as session:
        tenant = create_tenant(session, name=name, default_currency=currency)
        payload = {
            "id": tenant.id,
            "name": tenant.name,
            "default_currency": tenant.default_currency,
            "signing_secret": tenant.signing_secret,
        }

    def human() -> None:
        out.print(f"tenant {tenant.id} ({tenant.name}, {tenant.default_currency})")
        out.print(f"signing secret (shown once): {tenant.signing_secret}")

    _emit(as_json, payload, human)


@tenants_app.command("list")
def tenants_list(as_json: JsonFlag = False) -> None:
    """List tenants."""
    with _session(as_json, write=False) as session:
        tenants = tenants_repository.list_tenants(session)
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "default_currency": t.default_currency,
            "created_at": rfc3339(t.created_at),
        }
        for t in tenants
    ]
    _emit_rows(as_json, ("id", "name", "currency", "created"), rows)


@tenants_app.command("rotate-secret")
def tenants_rotate_secret(
    tenant: Annotated[str, typer.Argument(help="Tenant id or name.")],
    as_json: JsonFlag = False,
) -> None:
    """Replace the tenant's signing secret; prints the new one (shown once). The old one
    still verifies customer tokens and Sailthru signatures for 24 hours."""
    from returnstack.tenants.service import find_tenant, rotate_signing_secret

    with _session(as_json) as session:
        rotated = rotate_signing_secret(session, tenant=find_tenant(session, tenant))
        payload = {
            "id": rotated.id,
            "name": rotated.name,
            "signing_secret": rotated.signing_secret,
            "previous_secret_expires_at": rfc3339(rotated.previous_secret_expires_at),
        }

    def human() -> None:
        out.print(f"tenant {payload['id']} ({payload['name']})")
        out.print("new signing secret (shown once):")
        out.print(payload["signing_secret"], soft_wrap=True)
        out.print(f"the previous secret is accepted until {payload['previous_secret_expires_at']}")

    _emit(as_json, payload, human)


@keys_app.command("create")
def keys_create(
    tenant: TenantOption,
    kind: Annotated[KeyKind, typer.Option(help="secret (sk_) or publishable (pk_).")],
    as_json: JsonFlag = False,
) -> None:
    """Create an API key; prints it once (only its hash is stored)."""
    from returnstack.tenants.service import create_key, find_tenant

    with _session(as_json) as session:
        created = create_key(session, tenant=find_tenant(session, tenant), kind=kind.value)

    def human() -> None:
        out.print(f"{created.kind} key {created.id} (shown once):")
        out.print(created.key, soft_wrap=True)

    _emit(as_json, {"id": created.id, "kind": created.kind, "key": created.key}, human)


@keys_app.command("list")
def keys_list(tenant: TenantOption, as_json: JsonFlag = False) -> None:
    """List a tenant's keys (prefixes only)."""
    from returnstack.tenants.service import find_tenant

    with _session(as_json, write=False) as session:
        keys = tenants_repository.keys_of(session, tenant_id=find_tenant(session, tenant).id)
    rows: list[dict[str, Any]] = [
        {
            "id": k.id,
            "kind": k.kind,
            "prefix": k.prefix,
            "created_at": rfc3339(k.created_at),
            "revoked_at": rfc3339(k.revoked_at),
        }
        for k in keys
    ]

    def human() -> None:
        _print_table(
            ("id", "kind", "prefix", "created", "revoked"),
            (
                (r["id"], r["kind"], r["prefix"] + "…", r["created_at"], r["revoked_at"])
                for r in rows
            ),
        )

    _emit(as_json, {"data": rows}, human)


@keys_app.command("revoke")
def keys_revoke(key_id: str, as_json: JsonFlag = False) -> None:
    """Revoke a key; it is refused at once."""
    from returnstack.tenants.service import revoke_key

    with _session(as_json) as session:
        key = revoke_key(session, key_id=key_id)
    payload = {
        "id": key.id,
        "kind": key.kind,
        "prefix": key.prefix,
        "revoked_at": rfc3339(key.revoked_at),
    }
    _emit(as_json, payload, lambda: out.print(f"revoked {key.id} ({key.prefix}…)"))


# --- dashboard users ----------------------------------------------------------------------


@users_app.command("create")
def users_create(
    tenant: TenantOption,
    email: Annotated[str, typer.Option("--email", help="The sign-in email.")],
    role: Annotated[Role, typer.Option("--role", help="admin, agent or viewer.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from standard input (else generated)."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a dashboard user. Without --password-stdin a password is generated and
    printed once; only its argon2 hash is stored."""
    from returnstack.dashboard.users import create_user
    from returnstack.tenants.service import find_tenant

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    with _session(as_json) as session:
        found = find_tenant(session, tenant)
        created = create_user(
            session, tenant_id=found.id, email=email, role=role.value, password=password
        )
    user = created.user
    payload: dict[str, Any] = {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "tenant_id": user.tenant_id,
    }
    if created.password is not None:
        payload["password"] = created.password

    def human() -> None:
        out.print(f"dashboard user {user.id} ({user.email}, {user.role})")
        if created.password is not None:
            out.print(f"password (shown once): {created.password}", soft_wrap=True)

    _emit(as_json, payload, human)


@users_app.command("list")
def users_list(tenant: TenantOption, as_json: JsonFlag = False) -> None:
    """List a tenant's dashboard users."""
    from returnstack.dashboard.users import list_users
    from returnstack.tenants.service import find_tenant

    with _session(as_json, write=False) as session:
        users = list_users(session, tenant_id=find_tenant(session, tenant).id)
    rows = [
        {
            "id": u.id,
            "email": u.email,
            "role": u.role,
            "created_at": rfc3339(u.created_at),
            "disabled_at": rfc3339(u.disabled_at),
        }
        for u in users
    ]
    _emit_rows(as_json, ("id", "email", "role", "created", "disabled"), rows)


# --- import and demo ----------------------------------------------------------------------


def _resolve_tenant(db: Database, tenant: str | None) -> Tenant:
    from returnstack.kit.errors import InvalidRequest
    from returnstack.tenants.service import find_tenant

    with db.transaction(write=False) as session:
        if tenant is not None:
            return find_tenant(session, tenant)
        tenants = tenants_repository.list_tenants(session, limit=2)
    if len(tenants) != 1:
        raise InvalidRequest("More than one tenant (or none): choose one with --tenant.")
    return tenants[0]


@profiles_app.command("rebuild")
def profiles_rebuild(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant id or name (default: every tenant).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only report differences (exit 1 if any).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Recompute customer profiles and product signals from the facts (orders, lines,
    returns, refunds, reported events) and report where the incrementally kept ones
    differ; then store the recomputed ones."""
    from returnstack.customers.profiles import rebuild
    from returnstack.products.rebuild import rebuild as rebuild_products
    from returnstack.tenants.service import find_tenant

    with _errors(as_json):
        db = _database()
    reports = []
    with _errors(as_json):
        with db.transaction(write=False) as session:
            if tenant is not None:
                found = find_tenant(session, tenant)
                tenants = [(found.id, found.name)]
            else:
                every = sorted(tenants_repository.list_tenants(session), key=lambda t: t.id)
                tenants = [(t.id, t.name) for t in every]
        for tenant_id, name in tenants:
            with db.transaction() as session:  # one tenant at a time: short write locks
                report = rebuild(session, tenant_id=tenant_id, write=not check)
                products = rebuild_products(session, tenant_id=tenant_id, write=not check)
            reports.append(
                {
                    "tenant_id": tenant_id,
                    "name": name,
                    **asdict(report),
                    "products": asdict(products),
                }
            )
    if not check:
        with _errors(as_json):
            db.optimize()  # SQLite: the statistics of tables rewritten (see import)
    db.dispose()
    total = sum(report["differences"] + report["products"]["differences"] for report in reports)

    def state(report: dict[str, Any]) -> str:
        return "rewritten" if report["written"] else ("checked" if check else "unchanged")

    def human() -> None:
        for report in reports:
            out.print(
                f"{report['name']} ({report['tenant_id']}): {report['profiles']:,} profiles, "
                f"{report['differences']:,} differences, {state(report)}"
            )
            for example in report["examples"]:
                out.print(f"  {example['owner']} {example['currency']}: {example['fields']}")
            products = report["products"]
            out.print(
                f"  product signals: {products['products']:,} products, "
                f"{products['differences']:,} differences, {state(products)}"
            )
            for example in products["examples"]:
                out.print(
                    f"    {example['table']} {example['key']}: "
                    f"kept {example['kept']}, rebuilt {example['rebuilt']}"
                )

    _emit(as_json, {"tenants": reports, "differences": total}, human)
    if check and total:
        raise typer.Exit(1)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    fmt: Annotated[
        ImportFormat | None, typer.Option("--format", help="Default: from the file extension.")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id or name.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import native events from JSONL (one event per line) or CSV (one item per row).

    Streams the file in batches; a bad line is reported with its number and the rest goes
    on. Re-running the same file imports nothing twice (event ids are idempotency keys).
    """
    from returnstack.events.importer import LineError, import_events, open_counted

    chosen = fmt.value if fmt else ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    with _errors(as_json):
        db = _database(long_running=True)
    with _errors(as_json):
        target = _resolve_tenant(db, tenant)
    size = file.stat().st_size
    stream, counter = open_counted(str(file))

    def report_error(error: LineError) -> None:
        if as_json:
            return
        for detail in error.errors:
            path = detail.get("path") or "(event)"
            console.print(f"[yellow]line {error.line}[/yellow]: {path}: {detail.get('message')}")

    with (
        stream,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=as_json or not console.is_terminal,
        ) as progress,
    ):
        task = progress.add_task(f"importing {file.name}", total=size)
        report = import_events(
            db,
            stream,
            tenant_id=target.id,
            default_currency=target.default_currency,
            fmt=chosen,
            on_progress=lambda: progress.update(task, completed=counter.count),
            on_error=report_error,
        )
        progress.update(task, completed=size)
    with _errors(as_json):
        # SQLite gathers no planner statistics by itself: those of the tables this import
        # filled or grew tenfold (Database.optimize).
        db.optimize()
    db.dispose()
    payload = {
        "tenant_id": target.id,
        "events": report.events,
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "errors": [{"line": e.line, "errors": e.errors} for e in report.first_errors],
    }
    _emit(
        as_json,
        payload,
        lambda: console.print(
            f"{report.accepted} events imported, {report.duplicates} duplicates, "
            f"{report.rejected} rejected"
        ),
    )
    if report.rejected and report.accepted == 0 and report.duplicates == 0:
        raise typer.Exit(1)


DEMO_ADMIN = "admin@demo.example"


def _demo_dashboard_user(session: Any, tenant_id: str) -> str | None:
    """The demo's dashboard admin; its password (generated) when it was just created."""
    from returnstack.dashboard.users import create_user
    from returnstack.kit.errors import Conflict

    try:
        return create_user(session, tenant_id=tenant_id, email=DEMO_ADMIN, role="admin").password
    except Conflict:  # made by an earlier run
        return None


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    orders: Annotated[int, typer.Option(help="Orders to generate.", min=1)] = 3000,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Start the server afterwards.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Set up a database with a demo tenant and realistic data, print keys, start the server."""
    from returnstack import demo as demo_data
    from returnstack.compat.examples import vendor_requests
    from returnstack.events.schemas import Trust
    from returnstack.events.service import record_events
    from returnstack.events.validation import check_event
    from returnstack.tenants.service import create_key, create_tenant

    with _errors(as_json):
        db = _database()
    with db.transaction() as session:
        tenant = tenants_repository.tenant_named(session, "demo")
        signing_secret = None
        if tenant is None:
            tenant = create_tenant(session, name="demo", default_currency="USD")
            signing_secret = tenant.signing_secret
        secret = create_key(session, tenant=tenant, kind="secret")
        publishable = create_key(session, tenant=tenant, kind="publishable")
        dashboard_password = _demo_dashboard_user(session, tenant.id)
    accepted = {Trust.verified: 0, Trust.reported: 0}
    batch: list[Any] = []

    def flush(trust: Trust) -> None:
        with db.transaction() as session:
            accepted[trust] += record_events(
                session,
                tenant_id=tenant.id,
                default_currency=tenant.default_currency,
                events=batch,
                source="demo",
                actor="cli:demo",
                trust=trust,
            ).accepted
        batch.clear()

    def load(events: Iterable[dict[str, Any]], trust: Trust) -> None:
        for raw in events:
            checked = check_event(raw)
            if isinstance(checked, list):
                raise RuntimeError(f"demo generator made an invalid event: {checked}")
            batch.append(checked)
            if len(batch) >= 500:
                flush(trust)
        if batch:
            flush(trust)

    with console.status("loading demo data…", spinner="dots"):
        # The operator's data is verified; a storefront pixel's (publishable key) reported.
        load(demo_data.generate(orders=orders), Trust.verified)
        load(demo_data.generate_reported(count=max(1, orders // 20)), Trust.reported)
        with db.transaction() as session:
            opened = demo_data.open_lifecycle_returns(session, tenant_id=tenant.id)
        with db.transaction(write=False) as session:
            ranking = demo_data.catalog_ranking(session, tenant_id=tenant.id)
        # Statistics for the planner now, not when autovacuum gets to them: without them a
        # freshly loaded database plans nested loops over every order (Insights took 13 s).
        db.analyze()
    db.dispose()
    base = f"http://{host}:{port}"
    payload = {
        "tenant_id": tenant.id,
        "secret_key": secret.key,
        "publishable_key": publishable.key,
        "events_loaded": accepted[Trust.verified],
        "reported_events_loaded": accepted[Trust.reported],
        "returns_opened": opened,
        "ranking": [
            {key: row[key] for key in ("product_id", "score", "return_rate", "units_sold")}
            for row in ranking
        ],
        "url": base,
    }
    if signing_secret:
        payload["signing_secret"] = signing_secret
    dashboard = {"url": f"{base}/dashboard", "email": DEMO_ADMIN}
    if dashboard_password:
        dashboard["password"] = dashboard_password
    payload["dashboard"] = dashboard

    def human() -> None:
        out.print(
            f"[bold]returnstack demo[/bold]: tenant {tenant.id}, "
            f"{accepted[Trust.verified]} new events loaded "
            f"(and {accepted[Trust.reported]} reported by a storefront pixel)"
        )
        out.print(f"  secret key:      {secret.key}")
        out.print(f"  publishable key: {publishable.key}")
        out.print("the catalogue ranked by POST /v1/rankings (equal base scores; returns demote):")
        out.print("     product  name                          sold  back   rate  smoothed  score")
        for place, row in enumerate(ranking, start=1):
            out.print(
                f"  {place:>2} {row['product_id']:<8} {row['name'][:28]:<28} "
                f"{row['units_sold']:>5} {row['units_returned']:>5} {row['return_rate']:>6.1%} "
                f"{row['smoothed_return_rate']:>8.1%} {row['score']:>6.3f}"
            )
        out.print("try:")
        auth = f"-H 'Authorization: Bearer {secret.key}'"
        out.print(f"  curl -s {base}/v1/returns?limit=5 {auth}")
        out.print(f"  curl -s {base}/v1/orders/W-100000 {auth}")
        out.print(f"  curl -s {base}/v1/customers/cust_00251 {auth}")
        out.print(f"  curl -s -G {base}/v1/customers {auth} --data-urlencode 'where=returns > 2'")
        out.print(f"  curl -s {base}/v1/products/DRESS-1/stats {auth}")
        out.print(
            f"  curl -s {base}/v1/rankings {auth} -H 'Content-Type: application/json' "
            """-d '{"product_ids": ["DRESS-1", "SOCK-01", "TEE-001"]}'"""
        )
        out.print(f"  curl -s '{base}/v1/reports/returns?group_by=category' {auth}")
        out.print(f"  open {base}/docs")
        out.print("vendor integrations (change only the host):")
        for vendor, command in vendor_requests(
            base,
            tenant_name=tenant.name,
            signing_secret=tenant.signing_secret,
            secret_key=secret.key,
            publishable_key=publishable.key,
        ):
            out.print(f"  # {vendor}", markup=False)
            out.print(f"  {command}", markup=False, soft_wrap=True)
        out.print(f"dashboard: {base}/dashboard  (sign in as {DEMO_ADMIN}", end="")
        if dashboard_password:
            out.print(f", password {dashboard_password}, shown once)")
        else:
            out.print(", with the password printed when it was created)")

    _emit(as_json, payload, human)
    if serve_after:
        sys.stdout.flush()
        serve(host=host, port=port, workers=1)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
