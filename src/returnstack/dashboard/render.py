"""Templates: one Jinja2 environment (autoescaped), money and time formatting, the words
for the API's codes, and the SVG bar charts of the Insights page."""

from datetime import datetime
from decimal import Decimal
from typing import Any, get_args

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from returnstack.kit.money import CURRENCY_EXPONENTS
from returnstack.models.returns import DeclineReason, Outcome, RefundMethod
from returnstack.returns.errors import ReturnErrorCode as Code

ACTION_LABELS = {
    "approve": "Approve",
    "decline": "Decline",
    "receive": "Receive",
    "refund": "Refund",
    "close": "Close",
    "cancel": "Cancel",
    "reopen": "Reopen",
}
OUTCOMES = list(get_args(Outcome))
REFUND_METHODS = list(get_args(RefundMethod))
DECLINE_REASONS = list(get_args(DeclineReason))

CODE_WORDS: dict[str, str] = {
    Code.order_not_found: "The order is not known.",
    Code.order_not_owned: "The order belongs to another customer.",
    Code.line_not_found: "The order has no such line.",
    Code.ambiguous_line: "The product appears on several lines; pick the line.",
    Code.quantity_exceeds_returnable: "More units than can still be returned.",
    Code.outside_return_window: "The return window has passed.",
    Code.final_sale: "Final sale: this product cannot be returned.",
    Code.unknown_reason: "The reason is not one of the policy's reasons.",
    Code.note_required: "This reason needs a note.",
    Code.currency_mismatch: "Orders in different currencies cannot share a return.",
    Code.refund_exceeds_refundable: "More than can be refunded.",
    Code.quantity_exceeds_requested: "More units than the return expects.",
    Code.item_not_in_return: "This line is not in the return.",
    Code.invalid_transition: "Not possible in the return's current status.",
}


def describe_code(code: str, message: str = "") -> str:
    words = CODE_WORDS.get(code)
    if words is None:
        return message or code.replace("_", " ")
    return f"{words} ({message})" if message and message.lower() not in words.lower() else words


def money(amount: int | None, currency: str | None) -> str:
    if amount is None or currency is None:
        return "—"
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    value = Decimal(amount).scaleb(-exponent)
    return f"{value:,.{exponent}f} {currency}"


def money_input(amount: int | None, currency: str) -> str:
    """An amount as a form field shows it: 17.99 (no grouping, no currency)."""
    if amount is None:
        return ""
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f}"


def when(value: str | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M UTC")


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def humanize(value: str | None) -> str:
    return "" if value is None else value.replace("_", " ").capitalize()


def bar(value: float | None, top: float | None) -> str:
    """One bar of a horizontal bar chart, drawn in its table row beside its numbers."""
    share = 0.0 if not value or not top else max(0.02, float(value) / float(top))
    return (
        '<svg class="bar" viewBox="0 0 100 12" preserveAspectRatio="none" width="100%" '
        f'height="12" aria-hidden="true" focusable="false"><rect width="{share * 100:.1f}" '
        'height="12" rx="1"></rect></svg>'
    )


def columns(rows: list[Any], attribute: str, *, width: int = 640, height: int = 160) -> str:
    """A column chart over time as inline SVG."""
    values = [max(0.0, float(getattr(row, attribute) or 0)) for row in rows]
    top = max(values, default=0.0) or 1.0
    count = max(1, len(values))
    step = width / count
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="none" role="img" aria-hidden="true" focusable="false">'
    ]
    for index, value in enumerate(values):
        size = 0 if not value else max(2, value / top * (height - 2))
        x = index * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{height - size:.1f}" width="{step * 0.7:.1f}" '
            f'height="{size:.1f}"></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


environment = Environment(
    loader=PackageLoader("returnstack.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(
    money=money, money_input=money_input, when=when, percent=percent, humanize=humanize
)
environment.globals.update(
    ACTION_LABELS=ACTION_LABELS,
    OUTCOMES=OUTCOMES,
    REFUND_METHODS=REFUND_METHODS,
    DECLINE_REASONS=DECLINE_REASONS,
    bar=bar,
    columns=columns,
    describe_code=describe_code,
    zip=zip,
)

SECURITY_HEADERS = {
    # Every asset is ours: no other origin is ever needed.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    staff = context.get("staff")
    page = environment.get_template(name).render(
        request=request,
        path=request.url.path,
        csrf_token=context.pop("csrf_token", None) or (staff.csrf_token if staff else ""),
        **context,
    )
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)
