"""The return object of the API (API.md section 4), from rows or from rows about to be written."""

from collections.abc import Mapping, Sequence
from typing import Any

from returnstack.kit.timefmt import rfc3339
from returnstack.returns.state import allowed_actions

ITEM_FIELDS = (
    "order_id",
    "line_id",
    "product_id",
    "variant_id",
    "quantity",
    "received_quantity",
    "reason",
    "note",
    "resolution",
    "unit_price",
    "outcome",
    "disposition",
)


def format_number(number: int) -> str:
    return f"R-{number:06d}"


def render_return(
    ret: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    *,
    store: dict[str, Any] | None,
    attachments: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:

    refund = None
    if ret["refund_amount"] is not None:
        refund = {
            "amount": ret["refund_amount"],
            "currency": ret["currency"],
            "method": ret["refund_method"],
            "refunded_at": rfc3339(ret["refunded_at"]),
        }
    customer_id, email = ret["customer_id"], ret["email"]
    return {
        "id": ret["id"],
        "number": format_number(ret["number"]),
        "external_id": ret["external_id"],
        "status": ret["status"],
        "source": ret["source"],
        "channel": ret["channel"],
        "store": store,
        "customer": {"id": customer_id, "email": email} if customer_id or email else None,
        "currency": ret["currency"],
        "items": [{key: item[key] for key in ITEM_FIELDS} for item in items],
        "refund": refund,
        "fees": {"restocking": ret["fee_restocking"], "shipping": ret["fee_shipping"]},
        "attachments": list(attachments),
        "metadata": ret["metadata"] or {},
        "note": ret["note"],
        "created_at": rfc3339(ret["created_at"]),
        "updated_at": rfc3339(ret["updated_at"]),
        "closed_at": rfc3339(ret["closed_at"]),
        "version": ret["version"],
        "allowed_actions": allowed_actions(
            status=ret["status"],
            source=ret["source"],
            received_anything=any(item["received_quantity"] for item in items),
        ),
        "history": [
            {
                "at": rfc3339(entry["at"]),
                "from": entry["from_status"],
                "to": entry["to_status"],
                "action": entry["action"],
                "actor": entry["actor"],
                "note": entry["note"],
            }
            for entry in history
        ],
    }
