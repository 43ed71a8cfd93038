"""One working request per vendor adapter, as shell commands (printed by `returnstack demo`)."""

import json
import shlex
import time

from returnstack.compat.sailthru import signature


def vendor_requests(
    base: str, *, tenant_name: str, signing_secret: str, secret_key: str, publishable_key: str
) -> list[tuple[str, str]]:
    """(vendor, curl command) pairs that work against the demo server."""
    now = int(time.time()) - 60
    constructor = {
        "behavioral_actions": [
            {
                "action": "purchase",
                "data": {
                    "_dt": now,
                    "ui": "cust_00251",
                    "order_id": f"POS-{now}",
                    "store_id": "store-42",
                    "items": [
                        {"item_id": "A1", "item_name": "Mug", "price": 34.99, "count": 1},
                        {"item_id": "B2", "price": 17.99, "count": 2},
                    ],
                },
            }
        ]
    }
    sailthru = json.dumps(
        {
            "email": "user@example.com",
            "items": [{"qty": 1, "price": 100, "id": "1234", "url": "https://example.com/1234"}],
        }
    )
    form = {"api_key": publishable_key, "format": "json", "json": sailthru}
    form["sig"] = signature(list(form.values()), signing_secret)
    optimove = {
        "tenant": 567,
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S.000000 UTC", time.gmtime(now)),
        "event": "ootb_product_order_completed",
        "customer": "cust_00251",
        "context": {
            "ootb_order_id": f"o-{now}",
            "ootb_product_id": "SKU98765",
            "ootb_item_name": "Phone Case",
            "ootb_item_price": 25.00,
            "ootb_quantity": 1,
        },
    }
    q = shlex.quote
    return [
        (
            "Constructor",
            f"curl -s -u {q(secret_key + ':')} -H 'Content-Type: application/json' "
            f"{q(f'{base}/v1/offline_behavioral_actions?key={publishable_key}')} "
            f"-d {q(json.dumps(constructor))}",
        ),
        (
            "Sailthru",
            f"curl -s {base}/return "
            + " ".join(f"--data-urlencode {q(f'{name}={value}')}" for name, value in form.items()),
        ),
        (
            "Optimove",
            f"curl -s {base}/optimove/events -H {q(f'X-API-Key: {secret_key}')} "
            f"-H 'Content-Type: application/json' -d {q(json.dumps(optimove))}",
        ),
        (
            "Emporix",
            f"curl -s -i {q(f'{base}/return/{tenant_name}/returns?pageSize=5')} "
            f"-H {q(f'Authorization: Bearer {secret_key}')} -H 'X-Total-Count: true'",
        ),
    ]
