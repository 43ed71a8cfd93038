"""The dashboard's pages (API.md section 12). Each handler reads the form, calls the same
service function as the API, and renders a template; a domain error rolls the transaction
back and shows the API's messages next to the fields."""

import inspect
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar, get_args
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response, StreamingResponse

from returnstack.customers import segments
from returnstack.customers.expressions import compile_where
from returnstack.customers.render import customer_profile, email_profile
from returnstack.customers.repository import customer_orders, linked_emails
from returnstack.customers.schemas import SegmentCreate
from returnstack.customers.segment_endpoints import csv_response
from returnstack.customers.segments import list_customers, parse_sort
from returnstack.dashboard import insights, users
from returnstack.dashboard.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    Admin,
    AdminPage,
    Agent,
    AnyStaff,
    DashboardForbidden,
    SignInLimiters,
    SignInRequired,
    Staff,
    clear_cookie,
    current,
    login_redirect,
    posted_form,
    set_cookie,
)
from returnstack.dashboard.render import (
    ACTION_LABELS,
    OUTCOMES,
    REFUND_METHODS,
    describe_code,
    money,
    render,
)
from returnstack.dashboard.users import SignedIn
from returnstack.kit.deps import DbSession
from returnstack.kit.errors import (
    ApiError,
    InvalidRequest,
    NotFound,
    validation_details,
)
from returnstack.kit.money import CURRENCY_EXPONENTS, to_minor_units
from returnstack.kit.ratelimit import client_address
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.kit.types import normalize_email
from returnstack.models import Return, Tenant
from returnstack.models.returns import Channel, ReturnSource, ReturnStatus
from returnstack.orders.service import render_orders
from returnstack.outbox.service import resource_key
from returnstack.products import service as products_service
from returnstack.products.service import Smoothing
from returnstack.returns import attachments as attachment_files
from returnstack.returns import policy as policies
from returnstack.returns import repository
from returnstack.returns import service as returns_service
from returnstack.returns.attachments_endpoints import Storage, stream
from returnstack.returns.schemas import (
    CancelBody,
    DeclineBody,
    NoteBody,
    ReceiveBody,
    RefundBody,
    ReturnCreate,
)
from returnstack.returns.state import TRANSITIONS
from returnstack.tenants import repository as tenants_repository
from returnstack.tenants import service as tenants_service
from returnstack.webhooks import repository as webhooks_repository
from returnstack.webhooks import service as webhooks
from returnstack.webhooks.schemas import RecoverRequest, WebhookCreate, WebhookUpdate

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=RenderInThreadRoute)
T = TypeVar("T")
STATUSES = [status.value for status in ReturnStatus]
PAGE = 25
# The step a return in each status most likely needs next: its button comes first, as the
# primary one (it still leads to the form; nothing is done in one click).
NEXT_STEP = {
    "requested": "approve",
    "approved": "receive",
    "received": "refund",
    "refunded": "close",
    "declined": "close",
}
QUEUES = {
    "requested": ("Requested, waiting longest", {"status": "requested", "queue": "oldest"}),
    "to_refund": ("Received, not yet refunded", {"status": "received", "queue": "oldest"}),
    "approved": ("Approved, awaiting receipt", {"status": "approved", "queue": "oldest"}),
}


class FormErrors(Exception):
    """Errors to show next to the fields of a form (path -> message)."""

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        self.message = message
        self.fields = fields or {}


def _errors_of(error: ApiError) -> FormErrors:
    fields: dict[str, str] = {}
    for detail in error.details:
        path = str(detail.get("path") or "")
        text = str(detail.get("message") or "")
        code = detail.get("code")
        if code and code not in text:
            text = f"{describe_code(str(code), text)}"
        fields[path] = f"{fields[path]}; {text}" if path in fields else text
    return FormErrors(error.message, fields)


def attempt(session: Session, work: Callable[[], T]) -> T:
    """Run a service call; on a domain or validation error roll back what it wrote (a
    failed action leaves nothing behind) and raise FormErrors for the page to show."""
    try:
        return work()
    except ApiError as error:
        session.rollback()
        raise _errors_of(error) from None
    except ValidationError as error:
        session.rollback()
        raise _errors_of(InvalidRequest(details=validation_details(error.errors()))) from None


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _whole(text: str) -> int | str:
    """A form's whole number as an int, else the text itself for validation to name (only
    ASCII digits: str.isdigit() also takes '²', which int() refuses)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else text


def _optional(form: FormData, name: str) -> str | None:
    return _text(form, name) or None


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# --- sign-in ---------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a path of the dashboard (no other site, no scheme-relative //host)."""
    if value and value.startswith(PREFIX + "/") and not any(char in value for char in "\\\r\n"):
        return value
    return f"{PREFIX}/returns"


def _login_page(
    request: Request, *, next_path: str, email: str = "", error: str | None = None, status: int
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"csrf_token": token, "next": next_path, "email": email, "error": error},
        status_code=status,
    )
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if current(request) is not None:
        return _see_other(_safe_next(next))
    return _login_page(request, next_path=_safe_next(next), status=200)


@router.post("/login")
def login(
    request: Request, form: Annotated[FormData, Depends(posted_form)], session: DbSession
) -> Response:
    # The login form has no session yet: its CSRF token is a cookie and the same value in
    # the form (double submit); another site can set neither.
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    sent = form.get(CSRF_FIELD)
    if not cookie or not isinstance(sent, str) or not secrets.compare_digest(cookie, sent):
        raise DashboardForbidden("The sign-in form expired. Reload the page and sign in.")
    email = _text(form, "email")[:320]
    password = form.get("password")
    next_path = _safe_next(_text(form, "next"))
    client = client_address(request)
    limiters: SignInLimiters = request.app.state.dashboard_sign_ins
    wait = limiters.wait(client, email.lower())
    if wait:
        seconds = max(1, math.ceil(wait))
        response = _login_page(
            request,
            next_path=next_path,
            email=email,
            error=f"Too many failed sign-ins. Try again in {seconds} seconds.",
            status=429,
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    user = users.verify_password(
        session, email=email, password=password if isinstance(password, str) else ""
    )
    if user is None:
        limiters.failed(client, email.lower())
        return _login_page(
            request,
            next_path=next_path,
            email=email,
            error="The email or password is not right.",
            status=401,
        )
    opened = users.open_session(session, user=user)
    response = _see_other(next_path)
    set_cookie(response, request, SESSION_COOKIE, opened.token, max_age=users.SESSION_HOURS * 3600)
    clear_cookie(response, request, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, posted: AnyStaff, session: DbSession) -> Response:
    staff, _ = posted
    users.close_session(session, tenant_id=staff.user.tenant_id, token_hash=staff.token_hash)
    response = _see_other(f"{PREFIX}/login")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


@router.get("")
@router.get("/")
def home(staff: Staff) -> Response:
    return _see_other(f"{PREFIX}/returns")


# --- returns ---------------------------------------------------------------------------------


def _parse_date(value: str | None, name: str, problems: dict[str, str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems[name] = "must be a date (YYYY-MM-DD)"
        return None


def _parse_day(value: str | None, name: str, problems: dict[str, str]) -> datetime | None:
    day = _parse_date(value, name, problems)
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _summaries(session: Session, tenant_id: str, returns: list[Any]) -> list[dict[str, Any]]:
    """The returns as the lists show them: their units, value and products."""
    rows = repository.render_returns(session, tenant_id=tenant_id, returns=returns)
    for row in rows:
        row["units"] = sum(item["quantity"] for item in row["items"])
        row["value"] = sum((item["unit_price"] or 0) * item["quantity"] for item in row["items"])
        row["products"] = sorted({item["product_id"] for item in row["items"]})
    return rows


def _count(session: Session, tenant_id: str, status: str) -> int:
    return (
        session.scalar(
            select(func.count()).where(Return.tenant_id == tenant_id, Return.status == status)
        )
        or 0
    )


@router.get("/returns")
def returns_list(request: Request, staff: Staff, session: DbSession) -> Response:
    params = request.query_params
    problems: dict[str, str] = {}
    statuses = [value for value in params.getlist("status") if value]
    for value in statuses:
        if value not in STATUSES:
            problems["status"] = f"unknown status {value!r}"
    email = params.get("email") or None
    if email:
        try:
            email = normalize_email(email)
        except ValueError as exc:
            problems["email"] = str(exc)
    channel = params.get("channel") or None
    if channel not in (None, *get_args(Channel)):
        problems["channel"] = "must be online or offline"
    source = params.get("source") or None
    if source not in (None, *get_args(ReturnSource)):
        problems["source"] = "must be api, storefront, event or dashboard"
    created_after = _parse_day(params.get("created_after"), "created_after", problems)
    created_before = _parse_day(params.get("created_before"), "created_before", problems)
    oldest_first = params.get("queue") == "oldest"
    filters = repository.ReturnFilters(
        customer_id=(params.get("customer_id") or None),
        email=email if "email" not in problems else None,
        status=tuple(value for value in statuses if value in STATUSES),
        order_id=params.get("order_id") or None,
        product_id=params.get("product_id") or None,
        channel=channel if "channel" not in problems else None,
        store_id=params.get("store_id") or None,
        source=source if "source" not in problems else None,
        reason=params.get("reason") or None,
        created_after=created_after,
        created_before=created_before,
        q=(params.get("q") or "").strip()[:200] or None,
    )
    if filters.customer_id is not None and "\x00" not in filters.customer_id:
        # As GET /v1/returns: a customer's returns include those under a linked email alone.
        emails = linked_emails(
            session, tenant_id=staff.user.tenant_id, customer_id=filters.customer_id
        )
        filters = replace(filters, guest_emails=tuple(emails))
    rows: list[Any] = []
    next_cursor = None
    if not problems and not filters.matches_nothing:
        try:
            rows, next_cursor = repository.list_returns(
                session,
                tenant_id=staff.user.tenant_id,
                filters=filters,
                limit=PAGE,
                cursor=params.get("cursor") or None,
                oldest_first=oldest_first,
            )
        except ApiError as error:  # a cursor that is not one of ours
            problems.update(_errors_of(error).fields)
    rendered = _summaries(session, staff.user.tenant_id, rows)
    next_query = None
    if next_cursor:
        kept = [(key, value) for key, value in params.multi_items() if key != "cursor"]
        next_query = _query([*kept, ("cursor", next_cursor)])
    queues = [
        {
            "label": label,
            "query": _query(list(query.items())),
            "count": _count(session, staff.user.tenant_id, query["status"]),
        }
        for label, query in QUEUES.values()
    ]
    return render(
        request,
        "returns_list.html",
        {
            "staff": staff,
            "rows": rendered,
            "params": params,
            "statuses": STATUSES,
            "selected_statuses": statuses,
            "problems": problems,
            "next_query": next_query,
            "queues": queues,
            "reasons": policies.get_policy(session, tenant_id=staff.user.tenant_id).reasons,
            "oldest_first": oldest_first,
        },
        status_code=400 if problems else 200,
    )


def _quote(value: str) -> str:
    return quote(value, safe="")


def _query(pairs: list[tuple[str, str]]) -> str:
    """A query string of the pairs that have a value."""
    return "&".join(f"{key}={_quote(value)}" for key, value in pairs if value)


def _deliveries_of(session: Session, tenant_id: str, ret: dict[str, Any]) -> list[dict[str, Any]]:
    """The webhook messages about this return (since it was opened) and every delivery
    attempt of each, with the subscription's address."""
    opened = datetime.fromisoformat(ret["created_at"].replace("Z", "+00:00"))
    messages = webhooks.resource_deliveries(
        session,
        tenant_id=tenant_id,
        resource_key=resource_key("return.updated", {"id": ret["id"]}) or "",
        since=opened - timedelta(seconds=1),
    )
    if any(message["deliveries"] for message in messages):
        urls = {
            hook["id"]: hook["url"]
            for hook in webhooks.list_subscriptions(
                session, tenant_id=tenant_id, limit=webhooks.MAX_SUBSCRIPTIONS, cursor=None
            )["data"]
        }
        for message in messages:
            for delivery in message["deliveries"]:
                delivery["url"] = urls.get(delivery["webhook_id"], "(deleted webhook)")
    return messages


def _return_context(
    request: Request, session: Session, staff: SignedIn, number: str
) -> dict[str, Any]:
    tenant_id = staff.user.tenant_id
    ret = returns_service.get_return(session, tenant_id=tenant_id, reference=number)
    items = ret["items"]
    products = sorted({item["product_id"] for item in items})
    customer = ret["customer"] or {}
    profile = None
    if customer.get("id"):
        profile = customer_profile(session, tenant_id=tenant_id, customer_id=customer["id"])
    elif customer.get("email"):
        profile = email_profile(session, tenant_id=tenant_id, email=customer["email"])
    default_refund = (
        returns_service.default_refund(session, tenant_id=tenant_id, reference=ret["id"])
        if "refund" in ret["allowed_actions"]
        else 0
    )
    policy = policies.get_policy(session, tenant_id=tenant_id)
    return {
        "staff": staff,
        "ret": ret,
        "value": sum((item["unit_price"] or 0) * item["quantity"] for item in items),
        "profile": profile,
        # One call for every product of the return: the same stats as GET /v1/products/{id}/stats.
        "product_rates": products_service.stats_of_products(
            session,
            tenant_id=tenant_id,
            product_ids=products,
            smoothing=Smoothing.configured(request.app.state.settings),
        ),
        "default_refund": default_refund,
        "next_step": _next_step(ret),
        "reason_labels": {reason.code: reason.label for reason in policy.reasons},
        "messages": _deliveries_of(session, tenant_id, ret),
    }


def _next_step(ret: dict[str, Any]) -> str | None:
    step = NEXT_STEP.get(ret["status"])
    if ret["status"] == "received" and any(
        item["received_quantity"] < item["quantity"] for item in ret["items"]
    ):
        # Something is still expected: receiving it is as likely as refunding now.
        step = "refund"
    return step if step in ret["allowed_actions"] else None


@router.get("/returns/new")
def new_return_form(request: Request, staff: Staff, session: DbSession) -> Response:
    params = request.query_params
    context = _new_return_context(
        session, staff, customer_id=params.get("customer_id"), email=params.get("email")
    )
    return render(request, "return_new.html", context, status_code=context.pop("status", 200))


def _orders_of(
    session: Session, tenant_id: str, customer_id: str | None, email: str | None
) -> list[dict[str, Any]]:
    """A customer's orders (also those placed under a linked email alone), or a guest's."""
    if customer_id:
        emails = linked_emails(session, tenant_id=tenant_id, customer_id=customer_id)
    else:
        customer_id, emails = None, [email] if email else []
    orders, _ = customer_orders(
        session, tenant_id=tenant_id, customer_id=customer_id, emails=emails, limit=50, cursor=None
    )
    return render_orders(session, tenant_id=tenant_id, orders=orders)


def _new_return_context(
    session: Session, staff: SignedIn, *, customer_id: str | None, email: str | None
) -> dict[str, Any]:
    tenant_id = staff.user.tenant_id
    customer_id = (customer_id or "").strip()[:128] or None
    email = (email or "").strip() or None
    problems: dict[str, str] = {}
    if email and not customer_id:
        try:
            email = normalize_email(email)
        except ValueError as exc:
            problems["email"] = str(exc)
    orders: list[dict[str, Any]] = []
    looked_up = bool(customer_id or email)
    if looked_up and not problems and "\x00" not in (customer_id or ""):
        orders = _orders_of(session, tenant_id, customer_id, email)
        if not orders:
            problems["customer" if customer_id else "email"] = (
                "no orders found for this customer"
                if customer_id
                else "no guest orders with this email (a registered customer: use the id)"
            )
    policy = policies.get_policy(session, tenant_id=tenant_id)
    return {
        "staff": staff,
        "customer_id": customer_id,
        "email": email,
        "orders": orders,
        "looked_up": looked_up,
        "problems": problems,
        "reasons": policy.reasons,
        "preview": None,
        "values": {},
        "status": 400 if problems else 200,
    }


def _return_request(form: FormData) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The POST /v1/returns body the new-return form describes, and each item's form index."""
    items = []
    positions = []
    for key in form:
        if not key.startswith("qty:"):
            continue
        quantity = _text(form, key)
        if not quantity or quantity == "0":
            continue
        suffix = key.removeprefix("qty:")
        quoted_order, _, quoted_line = suffix.partition(":")
        order_id, line_id = unquote(quoted_order), unquote(quoted_line)
        item: dict[str, Any] = {
            "order_id": order_id,
            "line_id": line_id,
            "quantity": _whole(quantity),
            "reason": _text(form, f"reason:{suffix}"),
            "resolution": _text(form, f"resolution:{suffix}") or "refund",
        }
        note = _optional(form, f"note:{suffix}")
        if note:
            item["note"] = note
        items.append(item)
        positions.append({"key": suffix})
    customer: dict[str, Any] = {}
    if _text(form, "customer_id"):
        customer["id"] = _text(form, "customer_id")
    elif _text(form, "email"):
        customer["email"] = _text(form, "email")
    body: dict[str, Any] = {"customer": customer or None, "items": items}
    if _text(form, "channel") in ("online", "offline"):
        body["channel"] = _text(form, "channel")
    if _optional(form, "note"):
        body["note"] = _text(form, "note")
    return body, positions


@router.post("/returns/new")
def new_return(request: Request, posted: Agent, session: DbSession) -> Response:
    staff, form = posted
    tenant_id = staff.user.tenant_id
    context = _new_return_context(
        session, staff, customer_id=_text(form, "customer_id"), email=_text(form, "email")
    )
    body, positions = _return_request(form)
    context["values"] = {key: _text(form, key) for key in form if key != CSRF_FIELD}
    if not body["items"]:
        context["problems"]["items"] = "enter a quantity for at least one line"
        return render(request, "return_new.html", context, status_code=422)
    try:
        data = attempt(session, lambda: ReturnCreate.model_validate(body))
        if _text(form, "intent") == "create":
            created = attempt(
                session,
                lambda: returns_service.open_return(
                    session,
                    tenant_id=tenant_id,
                    requester=None,
                    data=data,
                    source="dashboard",
                    actor=staff.user.actor,
                ),
            )
            return _see_other(f"{PREFIX}/returns/{created['number']}")
        preview = attempt(
            session,
            lambda: returns_service.preview_return(
                session, tenant_id=tenant_id, requester=None, data=data
            ),
        )
    except FormErrors as errors:
        context["problems"].update(_item_problems(errors, positions))
        context["problems"].setdefault("form", errors.message)
        return render(request, "return_new.html", context, status_code=422)
    for item, position in zip(preview["items"], positions, strict=True):
        item["key"] = position["key"]
        for error in item["errors"]:
            error["words"] = describe_code(error["code"], error["message"])
    context["preview"] = preview
    return render(request, "return_new.html", context)


def _item_problems(errors: FormErrors, positions: list[dict[str, Any]]) -> dict[str, str]:
    """items[2].quantity -> the form key of the third entered line."""
    problems: dict[str, str] = {}
    for path, message in errors.fields.items():
        if path.startswith("items[") and "]" in path:
            index = path[6 : path.index("]")]
            if index.isdigit() and int(index) < len(positions):
                problems[positions[int(index)]["key"]] = message
                continue
        problems[path or "form"] = message
    return problems


@router.get("/returns/{number}")
def return_page(request: Request, number: str, staff: Staff, session: DbSession) -> Response:
    context = _return_context(request, session, staff, number)
    return render(request, "return_detail.html", context)


@router.get("/returns/{number}/attachments/{attachment_id}")
def attachment(
    number: str, attachment_id: str, staff: Staff, session: DbSession, storage: Storage
) -> StreamingResponse:
    ret = repository.find_return(session, tenant_id=staff.user.tenant_id, reference=number)
    row = attachment_files.find_attachment(session, ret=ret, attachment_id=attachment_id)
    return stream(storage, row)


@router.get("/returns/{number}/{action}")
def action_form(
    request: Request, number: str, action: str, staff: Staff, session: DbSession
) -> Response:
    if action not in TRANSITIONS:
        raise NotFound(f"No action {action!r}.")
    context = _return_context(request, session, staff, number)
    context["action"] = action
    return render(request, "return_action.html", context)


def _action_body(action: str, form: FormData, ret: dict[str, Any]) -> Any:
    note = _optional(form, "note")
    if action == "decline":
        return DeclineBody.model_validate({"reason": _text(form, "reason"), "note": note})
    if action == "cancel":
        return CancelBody.model_validate({"reason": _optional(form, "reason"), "note": note})
    if action == "receive":
        receipts = []
        for index, item in enumerate(ret["items"]):
            quantity = _text(form, f"quantity_{index}")
            if not quantity or quantity == "0":
                continue
            receipt: dict[str, Any] = {
                "order_id": item["order_id"],
                "line_id": item["line_id"],
                "quantity": _whole(quantity),
                "outcome": _text(form, f"outcome_{index}") or "received",
            }
            if _optional(form, f"disposition_{index}"):
                receipt["disposition"] = _text(form, f"disposition_{index}")
            receipts.append(receipt)
        if not receipts:
            raise FormErrors(
                "Enter how many units came back.", {"items": "enter at least one quantity"}
            )
        return ReceiveBody.model_validate({"items": receipts, "note": note})
    if action == "refund":
        amount_text = _text(form, "amount")
        amount = None
        if amount_text:
            try:
                amount = to_minor_units(amount_text, ret["currency"])
            except ValueError as exc:
                raise FormErrors("The amount is not valid.", {"amount": str(exc)}) from None
        return RefundBody.model_validate(
            {"amount": amount, "method": _text(form, "method"), "note": note}
        )
    return NoteBody.model_validate({"note": note})


@router.post("/returns/{number}/{action}")
def act(request: Request, number: str, action: str, posted: Agent, session: DbSession) -> Response:
    staff, form = posted
    if action not in TRANSITIONS:
        raise NotFound(f"No action {action!r}.")
    tenant_id = staff.user.tenant_id
    ret = returns_service.get_return(session, tenant_id=tenant_id, reference=number)
    version = _text(form, "version")
    try:
        attempt(
            session,
            lambda: returns_service.apply_action(
                session,
                tenant_id=tenant_id,
                reference=ret["id"],
                action=action,
                body=_action_body(action, form, ret),
                actor=staff.user.actor,
                # The version the form was made from: a change made meanwhile by someone
                # else is not overwritten (412, shown on the page).
                if_match=version_number
                if isinstance(version_number := _whole(version), int)
                else None,
            ),
        )
    except FormErrors as errors:
        context = _return_context(request, session, staff, number)
        context["action"] = action
        context["form_errors"] = errors
        context["values"] = {key: _text(form, key) for key in form if key != CSRF_FIELD}
        return render(request, "return_action.html", context, status_code=422)
    return _see_other(f"{PREFIX}/returns/{ret['number']}#status")


# --- customers -------------------------------------------------------------------------------


@router.get("/customers")
def customers(request: Request, staff: Staff, session: DbSession) -> Response:
    params = request.query_params
    return _customers(
        request,
        session,
        staff,
        search=(params.get("search") or "").strip(),
        where=params.get("where"),
        sort=params.get("sort") or None,
        cursor=params.get("cursor") or None,
    )


def _customers(
    request: Request,
    session: Session,
    staff: SignedIn,
    *,
    where: str | None,
    search: str = "",
    sort: str | None = None,
    cursor: str | None = None,
    segment_problems: dict[str, str] | None = None,
    segment_name: str = "",
) -> Response:
    """The customers page: a search by id or email, or the customers a segment expression
    selects (with the segment form's errors next to its fields, after a failed save)."""
    tenant_id = staff.user.tenant_id
    context: dict[str, Any] = {
        "staff": staff,
        "search": search,
        "where": where or "",
        "rows": None,
        "problems": dict(segment_problems or {}),
        "segment_name": segment_name,
        "next_query": None,
        "segments": segments.list_segments(session, tenant_id=tenant_id, limit=50, cursor=None)[
            "data"
        ],
    }
    if search:
        if "@" in search:
            try:
                profile = email_profile(session, tenant_id=tenant_id, email=normalize_email(search))
            except ValueError as exc:
                context["problems"]["search"] = str(exc)
                profile = None
            if profile is not None:
                return _see_other(_profile_url(profile))
        elif "\x00" not in search and customer_profile(
            session, tenant_id=tenant_id, customer_id=search[:128]
        ):
            return _see_other(f"{PREFIX}/customers/profile?id={_quote(search[:128])}")
        context["problems"].setdefault("search", "no customer with this id or email")
        return render(request, "customers.html", context, status_code=404)
    if where is not None:
        try:
            condition = compile_where(where)
            page = list_customers(
                session,
                tenant_id=tenant_id,
                condition=condition,
                sort=parse_sort(sort),
                limit=PAGE,
                cursor=cursor,
            )
        except ApiError as error:
            for detail in error.details:
                context["problems"]["where"] = str(detail.get("message"))
                if "position" in detail:
                    context["position"] = detail["position"]
            context["problems"].setdefault("where", error.message)
            return render(request, "customers.html", context, status_code=400)
        context["rows"] = page["data"]
        if page["next_cursor"]:
            context["next_query"] = _query(
                [("where", where), ("sort", sort or ""), ("cursor", page["next_cursor"])]
            )
    return render(request, "customers.html", context, status_code=422 if segment_problems else 200)


@router.post("/segments")
def save_segment(request: Request, posted: Agent, session: DbSession) -> Response:
    """Save the segment shown (POST /v1/segments's checks and service)."""
    staff, form = posted
    where = _text(form, "where")

    def create() -> dict[str, Any]:
        data = SegmentCreate.model_validate({"name": _text(form, "name"), "where": where})
        return segments.create_segment(
            session, tenant_id=staff.user.tenant_id, name=data.name, where=data.where
        )

    try:
        attempt(session, create)
    except FormErrors as errors:
        # The API's messages next to the fields: the name, or the expression itself.
        problems = {
            "segment_name" if path == "name" else "where" if path == "where" else "segment": text
            for path, text in errors.fields.items()
        } or {"segment": errors.message}
        return _customers(
            request,
            session,
            staff,
            where=where,
            segment_problems=problems,
            segment_name=_text(form, "name"),
        )
    return _see_other(f"{PREFIX}/customers?where={_quote(where)}&saved=1")


@router.post("/segments/{segment_id}/delete")
def delete_segment(
    request: Request, segment_id: str, posted: Agent, session: DbSession
) -> Response:
    staff, _ = posted
    segments.delete_segment(session, tenant_id=staff.user.tenant_id, segment_id=segment_id)
    return _see_other(f"{PREFIX}/customers#segments")


@router.get("/customers.csv")
def customers_csv(
    request: Request,
    staff: Staff,
    where: Annotated[str | None, Query()] = None,
    sort: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """The segment's rows as CSV: the same export as GET /v1/customers with Accept: text/csv."""
    try:
        condition = compile_where(where)
        order = parse_sort(sort or None)
    except ApiError as error:
        return _error_page(request, 400, error.message, title="Cannot export", staff=staff)
    return csv_response(
        request,
        tenant_id=staff.user.tenant_id,
        condition=condition,
        sort=order,
        filename="customers",
    )


def _customer_page(
    request: Request,
    session: Session,
    staff: SignedIn,
    profile: dict[str, Any] | None,
    filters: repository.ReturnFilters,
) -> Response:
    if profile is None:
        raise NotFound("No such customer.")
    tenant_id = staff.user.tenant_id
    rows, _ = repository.list_returns(
        session, tenant_id=tenant_id, filters=filters, limit=PAGE, cursor=None
    )
    customer = profile["customer"]
    orders = _orders_of(session, tenant_id, customer["id"], customer["email"])[:PAGE]
    return render(
        request,
        "customer.html",
        {
            "staff": staff,
            "profile": profile,
            "returns": _summaries(session, tenant_id, rows),
            "orders": orders,
        },
    )


@router.get("/customers/profile")
def customer_page(
    request: Request,
    staff: Staff,
    session: DbSession,
    id: Annotated[str | None, Query(max_length=128)] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> Response:
    """A customer's page (?id=), or a guest's (?email=). Ids and emails travel in the query
    string: the request log records the path only, so they stay out of the logs."""
    tenant_id = staff.user.tenant_id
    if id and "\x00" not in id:
        profile = customer_profile(session, tenant_id=tenant_id, customer_id=id)
        emails = tuple(profile["customer"]["emails"]) if profile else ()
        filters = repository.ReturnFilters(customer_id=id, guest_emails=emails)
        return _customer_page(request, session, staff, profile, filters)
    try:
        normalized = normalize_email(email or "")
    except ValueError:
        raise NotFound("No such customer.") from None
    profile = email_profile(session, tenant_id=tenant_id, email=normalized)
    if profile is not None and profile["customer"]["id"]:
        return _see_other(_profile_url(profile))
    filters = repository.ReturnFilters(email=normalized)
    return _customer_page(request, session, staff, profile, filters)


def _profile_url(profile: dict[str, Any]) -> str:
    customer = profile["customer"]
    if customer["id"]:
        return f"{PREFIX}/customers/profile?id={_quote(customer['id'])}"
    return f"{PREFIX}/customers/profile?email={_quote(customer['email'])}"


# --- insights --------------------------------------------------------------------------------


@router.get("/insights")
def insights_page(request: Request, staff: Staff, session: DbSession) -> Response:
    params = request.query_params
    tenant_id = staff.user.tenant_id
    problems: dict[str, str] = {}
    today = datetime.now(UTC).date()
    start = _parse_date(params.get("from"), "from", problems) or today - timedelta(days=90)
    end = _parse_date(params.get("to"), "to", problems) or today + timedelta(days=1)
    if end <= start or (end - start).days > 3660:
        problems["to"] = "must be after 'from', within 10 years"
        start, end = today - timedelta(days=90), today + timedelta(days=1)
    period = params.get("period") or "week"
    if period not in insights.PERIODS:
        problems["period"] = "must be day, week or month"
        period = "week"
    tenant = session.get(Tenant, tenant_id)
    currency = (params.get("currency") or (tenant.default_currency if tenant else "USD")).upper()
    if currency not in CURRENCY_EXPONENTS:
        problems["currency"] = "is not an ISO 4217 currency"
        currency = tenant.default_currency if tenant else "USD"
    cache: insights.FigureCache = request.app.state.dashboard_figures
    figures = cache.figures(
        session, tenant_id=tenant_id, currency=currency, start=start, end=end, period=period
    )
    if currency not in figures.currencies and figures.currencies and "currency" not in params:
        currency = figures.currencies[0]
        figures = cache.figures(
            session, tenant_id=tenant_id, currency=currency, start=start, end=end, period=period
        )
    return render(
        request,
        "insights.html",
        {"staff": staff, "figures": figures, "problems": problems},
        status_code=400 if problems else 200,
    )


# --- settings (admins) -----------------------------------------------------------------------


def _settings_page(
    request: Request,
    session: Session,
    staff: SignedIn,
    *,
    status: int = 200,
    refused: FormErrors | None = None,
    **extra: Any,
) -> Response:
    """The settings page; after a `refused` form, 422 with its message (`errors` places the
    API's messages next to the fields)."""
    tenant_id = staff.user.tenant_id
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    policy = policies.get_policy(session, tenant_id=tenant_id)
    context = {
        "staff": staff,
        "policy": policy,
        "rules_json": json.dumps(
            [rule.model_dump(mode="json", exclude_none=True) for rule in policy.rules], indent=2
        ),
        "keys": tenants_repository.keys_of(session, tenant_id=tenant_id),
        "users": users.list_users(session, tenant_id=tenant_id),
        "roles": users.ROLES,
        "currency": tenant.default_currency,
        "errors": {},
        "message": None,
        "created_key": None,
        "created_user": None,
        "created_webhook": None,
        "webhooks": _webhooks(session, tenant_id),
    }
    if refused is not None:
        status, context["message"] = 422, refused.message
    context.update(extra)
    return render(request, "settings.html", context, status_code=status)


def _webhooks(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's webhooks, each with its attempts counted by status (two queries)."""
    subscriptions: list[dict[str, Any]] = webhooks.list_subscriptions(
        session, tenant_id=tenant_id, limit=webhooks.MAX_SUBSCRIPTIONS, cursor=None
    )["data"]
    counts = webhooks_repository.delivery_summaries(
        session, tenant_id=tenant_id, subscription_ids=[hook["id"] for hook in subscriptions]
    )
    for subscription in subscriptions:
        subscription["counts"] = counts.get(subscription["id"], {})
    return subscriptions


def _webhook_url(webhook_id: str, anchor: str = "") -> str:
    return f"{PREFIX}/settings/webhooks/{_quote(webhook_id)}{anchor}"


def _webhook_errors(errors: FormErrors) -> dict[str, str]:
    """The API's paths (url, events[2], since) to the form's fields."""
    mapped: dict[str, str] = {}
    for path, message in errors.fields.items():
        key = "events" if path.startswith("events") else path or "form"
        mapped[key] = f"{mapped[key]}; {path}: {message}" if key in mapped else message
    return mapped


def _webhook_fields(form: FormData, *, no_events: list[str]) -> dict[str, Any]:
    """The webhook form as the API's request body has it (`no_events`: an empty list's)."""
    return {
        "url": _text(form, "url"),
        "events": webhooks.event_list(_text(form, "events")) or no_events,
        "description": _optional(form, "description"),
    }


DELIVERY_STATUSES = ("pending", "succeeded", "failed")
DELIVERIES_PAGE = 50


def _webhook_page(
    request: Request,
    session: Session,
    staff: SignedIn,
    webhook_id: str,
    *,
    status: int = 200,
    refused: FormErrors | None = None,
    **extra: Any,
) -> Response:
    """A webhook's page: edit, enable or disable, rotate its secret, recover, delete, and
    its delivery attempts grouped by message, with a retry for each failed one. After a
    `refused` form: 422, the API's messages next to the fields."""
    tenant_id = staff.user.tenant_id
    hook = webhooks.get_subscription(session, tenant_id=tenant_id, subscription_id=webhook_id)
    params = request.query_params
    problems: dict[str, str] = {}
    only = params.get("status") or None
    if only not in (None, *DELIVERY_STATUSES):
        problems["status"] = "must be pending, succeeded or failed"
        only = None
    page: dict[str, Any] = {"data": [], "next_cursor": None}
    try:
        page = webhooks.list_deliveries(
            session,
            tenant_id=tenant_id,
            subscription_id=webhook_id,
            limit=DELIVERIES_PAGE,
            cursor=params.get("cursor") or None,
            status=only,
        )
    except ApiError as error:  # a cursor that is not one of ours
        problems.update(_errors_of(error).fields)
    # Attempts newest first, grouped by message; the newest attempt of a failed message
    # carries its Retry button.
    messages: dict[str, dict[str, Any]] = {}
    for delivery in page["data"]:
        group = messages.setdefault(
            delivery["event_id"],
            {"id": delivery["event_id"], "type": delivery["event_type"], "attempts": []},
        )
        group["attempts"].append(delivery)
    next_query = None
    if page["next_cursor"]:
        next_query = _query([("status", only or ""), ("cursor", page["next_cursor"])])
    context: dict[str, Any] = {
        "staff": staff,
        "hook": hook,
        "messages": list(messages.values()),
        "only": only,
        "statuses": DELIVERY_STATUSES,
        "next_query": next_query,
        "problems": problems,
        "errors": {},
        "message": None,
        "secret": None,
        "values": {},
        "since": (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    }
    if refused is not None:
        status = 422
        context.update(errors=_webhook_errors(refused), message=refused.message)
    context.update(extra)
    return render(request, "webhook.html", context, status_code=status)


@router.get("/settings/webhooks/{webhook_id}")
def webhook_page(
    request: Request, webhook_id: str, staff: AdminPage, session: DbSession
) -> Response:
    return _webhook_page(request, session, staff, webhook_id)


@router.post("/settings/webhooks/{webhook_id}")
def update_webhook(
    request: Request, webhook_id: str, posted: Admin, session: DbSession
) -> Response:
    """URL, event types and description: PATCH /v1/webhooks/{id}'s checks and service."""
    staff, form = posted
    try:
        attempt(
            session,
            lambda: webhooks.update_subscription(
                session,
                tenant_id=staff.user.tenant_id,
                subscription_id=webhook_id,
                changes=WebhookUpdate.model_validate(
                    _webhook_fields(form, no_events=[])
                ).model_dump(exclude={"enabled"}),
                allow_private=request.app.state.settings.webhooks_allow_private,
            ),
        )
    except FormErrors as errors:
        values = {name: _text(form, name) for name in ("url", "events", "description")}
        return _webhook_page(request, session, staff, webhook_id, refused=errors, values=values)
    return _see_other(_webhook_url(webhook_id, "?saved=1"))


@router.post("/settings/webhooks/{webhook_id}/enabled")
def enable_webhook(
    request: Request, webhook_id: str, posted: Admin, session: DbSession
) -> Response:
    """Enable (deliveries resume) or disable (queued attempts end as failed)."""
    staff, form = posted
    wanted = _text(form, "enabled")
    if wanted not in ("yes", "no"):
        refused = FormErrors("Nothing was changed.", {"enabled": "must be yes or no"})
        return _webhook_page(request, session, staff, webhook_id, refused=refused)
    webhooks.update_subscription(
        session,
        tenant_id=staff.user.tenant_id,
        subscription_id=webhook_id,
        changes={"enabled": wanted == "yes"},
        allow_private=request.app.state.settings.webhooks_allow_private,
    )
    return _see_other(_webhook_url(webhook_id))


@router.post("/settings/webhooks/{webhook_id}/rotate-secret")
def rotate_webhook_secret(
    request: Request, webhook_id: str, posted: Admin, session: DbSession
) -> Response:
    staff, _ = posted
    rotated = webhooks.rotate_secret(
        session, tenant_id=staff.user.tenant_id, subscription_id=webhook_id
    )
    # The new secret is shown once, on this response only (never in a URL or a redirect).
    return _webhook_page(request, session, staff, webhook_id, secret=rotated["secret"])


@router.post("/settings/webhooks/{webhook_id}/recover")
def recover_webhook(
    request: Request, webhook_id: str, posted: Admin, session: DbSession
) -> Response:
    """Send again every message since a moment that this webhook has not received."""
    staff, form = posted
    since = _text(form, "since")
    # The field is a UTC date and time without an offset (datetime-local): add it.
    if since and not since.endswith("Z") and "+" not in since[10:]:
        since += ":00Z" if since.count(":") == 1 else "Z"
    retention = timedelta(days=request.app.state.settings.webhooks_retention_days)
    try:
        queued = attempt(
            session,
            lambda: webhooks.recover(
                session,
                tenant_id=staff.user.tenant_id,
                subscription_id=webhook_id,
                since=RecoverRequest.model_validate({"since": since}).since,
                retention=retention,
            ),
        )
    except FormErrors as errors:
        return _webhook_page(
            request, session, staff, webhook_id, refused=errors, since=_text(form, "since")
        )
    return _webhook_page(
        request,
        session,
        staff,
        webhook_id,
        message=f"{queued} message(s) queued again.",
        since=_text(form, "since"),
    )


@router.post("/settings/webhooks/{webhook_id}/delete")
def delete_webhook(
    request: Request, webhook_id: str, posted: Admin, session: DbSession
) -> Response:
    staff, form = posted
    if form.get("confirm") != "yes":
        refused = FormErrors("The webhook was not deleted.", {"confirm": "tick the box to confirm"})
        return _webhook_page(request, session, staff, webhook_id, refused=refused)
    webhooks.delete_subscription(
        session, tenant_id=staff.user.tenant_id, subscription_id=webhook_id
    )
    return _see_other(f"{PREFIX}/settings?deleted=webhook#webhooks")


@router.post("/settings/webhooks")
def create_webhook(request: Request, posted: Admin, session: DbSession) -> Response:
    staff, form = posted

    def create() -> dict[str, Any]:
        data = WebhookCreate.model_validate(_webhook_fields(form, no_events=["*"]))
        return webhooks.create_subscription(
            session,
            tenant_id=staff.user.tenant_id,
            url=data.url,
            events=data.events,
            description=data.description,
            enabled=True,
            allow_private=request.app.state.settings.webhooks_allow_private,
        )

    try:
        created = attempt(session, create)
    except FormErrors as errors:
        fields = {f"webhook_{k}": v for k, v in _webhook_errors(errors).items()}
        return _settings_page(request, session, staff, refused=errors, errors=fields)
    # The signing secret is shown once, on this response only.
    return _settings_page(request, session, staff, created_webhook=created)


@router.post("/settings/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
def retry_webhook_delivery(
    request: Request, webhook_id: str, delivery_id: str, posted: Admin, session: DbSession
) -> Response:
    staff, _ = posted
    try:
        attempt(
            session,
            lambda: webhooks.retry_delivery(
                session,
                tenant_id=staff.user.tenant_id,
                subscription_id=webhook_id,
                delivery_id=delivery_id,
            ),
        )
    except FormErrors as errors:
        return _webhook_page(
            request, session, staff, webhook_id, status=409, message=errors.message
        )
    return _see_other(_webhook_url(webhook_id, "?retried=1#deliveries"))


@router.get("/settings")
def settings_page(request: Request, staff: AdminPage, session: DbSession) -> Response:
    return _settings_page(request, session, staff)


def _policy_from_form(
    form: FormData, current_policy: policies.PolicyDocument, currency: str
) -> policies.PolicyDocument:
    document = current_policy.model_dump(mode="json")
    problems: dict[str, str] = {}
    document["return_window_days"] = _text(form, "return_window_days")
    percent = _text(form, "restocking_fee_percent") or "0"
    try:
        document["restocking_fee_percent"] = (
            number if isinstance(number := _whole(percent), int) else float(Decimal(percent))
        )
    except ArithmeticError:
        problems["restocking_fee_percent"] = "must be a number"
    try:
        document["return_shipping_fee"] = to_minor_units(
            _text(form, "return_shipping_fee") or "0", currency
        )
    except ValueError as exc:
        problems["return_shipping_fee"] = str(exc)
    document["refund_damaged_items"] = form.get("refund_damaged_items") == "on"
    document["serial_returner"] = {
        "min_orders": _text(form, "serial_min_orders"),
        "return_rate_value": _text(form, "serial_return_rate_value"),
    }
    try:
        document["rules"] = json.loads(_text(form, "rules") or "[]")
    except ValueError as exc:
        problems["rules"] = f"is not valid JSON: {exc}"
    reasons = []
    # The rows the form has, whatever reason_count says (a bad or huge one is no 500).
    indexes = sorted(
        int(key.removeprefix("reason_code_"))
        for key in form
        if key.startswith("reason_code_")
        and key.removeprefix("reason_code_").isdecimal()
        and key.removeprefix("reason_code_").isascii()
        and len(key) < 20
    )
    for index in indexes:
        code = _text(form, f"reason_code_{index}")
        if not code or form.get(f"reason_remove_{index}") == "on":
            continue
        reasons.append(
            {
                "code": code,
                "label": _text(form, f"reason_label_{index}"),
                "merchant_fault": form.get(f"reason_fault_{index}") == "on",
            }
        )
    document["reasons"] = reasons
    if problems:
        raise FormErrors("Some fields are not valid; nothing was saved.", problems)
    return policies.PolicyDocument.model_validate(document)


@router.post("/settings/policy")
def save_policy(request: Request, posted: Admin, session: DbSession) -> Response:
    staff, form = posted
    tenant_id = staff.user.tenant_id
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    current_policy = policies.get_policy(session, tenant_id=tenant_id)
    try:
        attempt(
            session,
            lambda: returns_service.put_policy(
                session,
                tenant_id=tenant_id,
                policy=_policy_from_form(form, current_policy, tenant.default_currency),
            ),
        )
    except FormErrors as errors:
        fields = _policy_paths(errors.fields)
        return _settings_page(request, session, staff, refused=errors, errors=fields)
    return _see_other(f"{PREFIX}/settings?saved=policy#policy")


def _policy_paths(fields: dict[str, str]) -> dict[str, str]:
    """Pydantic paths of the policy (reasons.2.label, serial_returner.min_orders) to the
    form's field names."""
    mapped: dict[str, str] = {}
    for path, message in fields.items():
        key = path
        if path.startswith("reasons"):
            key = "reasons"
            message = f"{path}: {message}"
        elif path.startswith("rules"):
            key = "rules"
            message = f"{path}: {message}"
        elif path.startswith("serial_returner."):
            key = "serial_" + path.split(".", 1)[1]
        mapped[key] = f"{mapped[key]}; {message}" if key in mapped else message
    return mapped


@router.post("/settings/keys")
def create_key(request: Request, posted: Admin, session: DbSession) -> Response:
    staff, form = posted
    tenant = session.get(Tenant, staff.user.tenant_id)
    assert tenant is not None
    try:
        created = attempt(
            session,
            lambda: tenants_service.create_key(session, tenant=tenant, kind=_text(form, "kind")),
        )
    except FormErrors as errors:
        return _settings_page(
            request, session, staff, status=422, errors={"kind": errors.fields.get("kind", "")}
        )
    # Shown once, on this response only (never in a URL or a redirect).
    return _settings_page(request, session, staff, created_key=created)


@router.post("/settings/keys/{key_id}/revoke")
def revoke_key(request: Request, key_id: str, posted: Admin, session: DbSession) -> Response:
    staff, _ = posted
    tenants_service.revoke_key(session, key_id=key_id, tenant_id=staff.user.tenant_id)
    return _see_other(f"{PREFIX}/settings#keys")


@router.post("/settings/users")
def create_user(request: Request, posted: Admin, session: DbSession) -> Response:
    staff, form = posted
    try:
        created = attempt(
            session,
            lambda: users.create_user(
                session,
                tenant_id=staff.user.tenant_id,
                email=_text(form, "email"),
                role=_text(form, "role"),
            ),
        )
    except FormErrors as errors:
        fields = {f"user_{k}": v for k, v in errors.fields.items()}
        return _settings_page(request, session, staff, refused=errors, errors=fields)
    return _settings_page(request, session, staff, created_user=created)


@router.post("/settings/users/{user_id}")
def update_user(request: Request, user_id: str, posted: Admin, session: DbSession) -> Response:
    staff, form = posted
    try:
        attempt(
            session,
            lambda: users.update_user(
                session,
                tenant_id=staff.user.tenant_id,
                user_id=user_id,
                role=_text(form, "role"),
                enabled=_text(form, "enabled") != "no",
            ),
        )
    except FormErrors as errors:
        return _settings_page(request, session, staff, status=409, message=errors.message)
    return _see_other(f"{PREFIX}/settings#users")


# --- wiring ----------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Mount the dashboard on the app: its pages, static files, and its error pages."""
    from importlib.resources import files

    app.state.dashboard_sign_ins = SignInLimiters()
    app.state.dashboard_figures = insights.FigureCache()
    app.include_router(router)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(directory=str(files("returnstack.dashboard") / "static")),
        name="dashboard-static",
    )

    async def on_sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return _see_other(login_redirect(exc.next_path))

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DashboardForbidden)
        return _error_page(request, 403, exc.message, title="Not allowed")

    api_error = app.exception_handlers[ApiError]
    http_error = app.exception_handlers[StarletteHTTPException]

    async def on_api_error(request: Request, exc: Exception) -> Response:
        # The API's errors (a return that does not exist, ...) as a page on the dashboard;
        # elsewhere as the API renders them.
        if not is_dashboard(request):
            return await _delegate(api_error, request, exc)
        assert isinstance(exc, ApiError)
        return _error_page(request, exc.status_code, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        if not is_dashboard(request):
            return await _delegate(http_error, request, exc)
        assert isinstance(exc, StarletteHTTPException)
        static = request.url.path.startswith(f"{PREFIX}/static/")
        if exc.status_code == 404 and not static and not hasattr(request.state, "dashboard_user"):
            # No route matched, so nobody looked at the session: a page that does not exist
            # is the login page when signed out, and has Sign out when signed in (API.md 12).
            staff = await run_in_threadpool(current, request)
            if staff is None:
                return _see_other(login_redirect(request.url.path))
            request.state.dashboard_user = staff
        return _error_page(request, exc.status_code, str(exc.detail))

    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(DashboardForbidden, on_forbidden)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


async def _delegate(handler: Any, request: Request, exc: Exception) -> Response:
    result = handler(request, exc)
    response: Response = await result if inspect.isawaitable(result) else result
    return response


def _error_page(
    request: Request,
    status_code: int,
    message: str,
    *,
    title: str | None = None,
    staff: SignedIn | None = None,
) -> Response:
    """The error page; `staff` (else whoever signed in, if anyone) gets the navigation."""
    if title is None:
        title = "Not found" if status_code == 404 else "Something is not right"
    staff = staff or getattr(request.state, "dashboard_user", None)
    context = {"staff": staff, "title": title, "message": message}
    return render(request, "error.html", context, status_code=status_code)


def is_dashboard(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


__all__ = ["ACTION_LABELS", "OUTCOMES", "REFUND_METHODS", "install", "is_dashboard", "money"]
