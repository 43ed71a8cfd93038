"""Realistic sample data for `returnstack demo`: a shop that sells online and in two stores.

Deterministic (seeded) event ids, so running the demo again adds nothing twice.
"""

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

STORES = [
    {"id": "nyc-01", "name": "New York SoHo", "city": "New York", "region": "NY", "country": "US"},
    {
        "id": "sfo-01",
        "name": "San Francisco Union Square",
        "city": "San Francisco",
        "region": "CA",
        "country": "US",
    },
]

CATALOG = [
    # product_id, name, category, price (cents), variants, return propensity
    ("TEE-001", "Organic Cotton Tee", "Apparel/Tops", 2499, ["S", "M", "L", "XL"], 0.18),
    ("TEE-002", "Linen Shirt", "Apparel/Tops", 5900, ["S", "M", "L"], 0.22),
    ("HOOD-01", "Heavyweight Hoodie", "Apparel/Tops", 7900, ["S", "M", "L", "XL"], 0.15),
    ("JEAN-01", "Slim Jeans", "Apparel/Bottoms", 8900, ["28", "30", "32", "34", "36"], 0.35),
    ("JEAN-02", "Relaxed Jeans", "Apparel/Bottoms", 8400, ["28", "30", "32", "34"], 0.30),
    ("CHINO-1", "Stretch Chinos", "Apparel/Bottoms", 6900, ["30", "32", "34"], 0.25),
    ("DRESS-1", "Wrap Dress", "Apparel/Dresses", 11900, ["XS", "S", "M", "L"], 0.42),
    ("DRESS-2", "Slip Dress", "Apparel/Dresses", 9900, ["XS", "S", "M"], 0.38),
    ("JACK-01", "Rain Jacket", "Apparel/Outerwear", 14900, ["S", "M", "L"], 0.20),
    ("COAT-01", "Wool Coat", "Apparel/Outerwear", 29900, ["S", "M", "L"], 0.28),
    ("SOCK-01", "Merino Socks 3-pack", "Apparel/Underwear", 1900, ["M", "L"], 0.02),
    ("SNKR-01", "Court Sneaker", "Shoes/Sneakers", 10900, ["40", "41", "42", "43", "44"], 0.33),
    ("SNKR-02", "Runner", "Shoes/Sneakers", 12900, ["40", "41", "42", "43"], 0.29),
    ("BOOT-01", "Chelsea Boot", "Shoes/Boots", 18900, ["40", "41", "42", "43"], 0.31),
    ("BAG-001", "Canvas Tote", "Accessories/Bags", 3900, [], 0.06),
    ("BAG-002", "Leather Backpack", "Accessories/Bags", 21900, [], 0.12),
    ("BELT-01", "Leather Belt", "Accessories/Belts", 4900, ["85", "90", "95"], 0.14),
    ("CAP-001", "Wool Cap", "Accessories/Hats", 2900, [], 0.05),
    ("MUG-001", "Stoneware Mug", "Home/Kitchen", 1800, [], 0.04),
    ("LAMP-01", "Desk Lamp", "Home/Lighting", 8900, [], 0.16),
]

REASONS_BY_CATEGORY = {
    "Apparel": [
        "size_too_small",
        "size_too_large",
        "size_too_large",
        "color",
        "style",
        "unwanted",
        "defective",
        "not_as_described",
    ],
    "Shoes": [
        "size_too_small",
        "size_too_large",
        "size_too_small",
        "defective",
        "style",
        "unwanted",
    ],
    "Accessories": ["unwanted", "color", "defective", "damaged_in_transit"],
    "Home": ["damaged_in_transit", "defective", "unwanted", "not_as_described"],
}
FREE_TEXT_REASONS = ["too tight around the shoulders", "arrived late", "changed my mind"]

FIRST_NAMES = [
    "ann",
    "ben",
    "cara",
    "dev",
    "eli",
    "fay",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kai",
    "lea",
    "max",
    "nia",
    "omar",
    "pia",
    "quinn",
    "rosa",
    "sam",
    "tara",
    "uma",
    "vic",
    "wes",
    "xena",
    "yuri",
    "zoe",
]


def generate(
    *, orders: int = 3000, customers: int = 600, seed: int = 7, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Purchase events, then the return events for some of them, in time order per order."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    people = [
        (f"cust_{index:05d}", f"{rng.choice(FIRST_NAMES)}.{index}@example.com")
        for index in range(customers)
    ]
    # A few customers return almost everything: the serial returners staff should see.
    serial = set(rng.sample(range(customers), k=max(1, customers // 40)))
    for number in range(orders):
        placed = now - timedelta(days=rng.uniform(0.5, 120), minutes=rng.randint(0, 600))
        roll = rng.random()
        channel = "online" if roll < 0.6 else "offline"
        store = None if channel == "online" else STORES[0 if roll < 0.82 else 1]
        person_index = rng.randrange(customers)
        customer_id, email = people[person_index]
        customer: dict[str, Any] | None
        if channel == "offline" and rng.random() < 0.35:
            customer = None  # anonymous in-store sale
        elif channel == "online" and rng.random() < 0.15:
            customer = {"email": email}  # guest checkout
        else:
            customer = {"id": customer_id, "email": email}
        order_id = f"{'W' if channel == 'online' else 'P'}-{100000 + number}"
        items: list[dict[str, Any]] = []
        for line, product in enumerate(rng.sample(CATALOG, k=rng.choice([1, 1, 2, 2, 3, 4])), 1):
            product_id, name, category, price, variants, _ = product
            items.append(
                {
                    "line_id": str(line),
                    "product_id": product_id,
                    "variant_id": f"{product_id}-{rng.choice(variants)}" if variants else None,
                    "quantity": rng.choice([1, 1, 1, 1, 2, 2, 3]),
                    "unit_price": price,
                    "name": name,
                    "category": category,
                    "url": f"https://shop.example.com/p/{product_id.lower()}",
                }
            )
        purchase: dict[str, Any] = {
            "type": "purchase",
            "id": f"demo-purchase-{number}",
            "timestamp": placed.isoformat(),
            "channel": channel,
            "order_id": order_id,
            "currency": "USD",
            "items": items,
        }
        if store:
            purchase["store"] = store
        if customer:
            purchase["customer"] = customer
        yield purchase

        if customer is None:
            continue
        propensity = 0.9 if person_index in serial else 1.0
        returned: list[dict[str, Any]] = []
        for item in items:
            product = next(p for p in CATALOG if p[0] == item["product_id"])
            chance = propensity if person_index in serial else product[5]
            if rng.random() < chance:
                reasons = REASONS_BY_CATEGORY[product[2].split("/")[0]]
                reason = (
                    rng.choice(reasons) if rng.random() > 0.05 else rng.choice(FREE_TEXT_REASONS)
                )
                returned.append(
                    {
                        "line_id": item["line_id"],
                        "product_id": item["product_id"],
                        "variant_id": item["variant_id"],
                        "quantity": rng.randint(1, item["quantity"]),
                        "reason": reason,
                        "unit_price": item["unit_price"],
                    }
                )
        returned_at = placed + timedelta(days=rng.uniform(2, 25))
        if not returned or returned_at > now:
            continue
        amount = sum(item["unit_price"] * item["quantity"] for item in returned)
        return_event: dict[str, Any] = {
            "type": "return",
            "id": f"demo-return-{number}",
            "timestamp": returned_at.isoformat(),
            "channel": "offline" if store and rng.random() < 0.7 else "online",
            "order_id": order_id,
            "currency": "USD",
            "customer": customer,
            "items": returned,
            "refund": {"amount": amount, "method": "original_payment"},
        }
        if return_event["channel"] == "offline":
            return_event["store"] = store or STORES[0]
        yield return_event


def generate_reported(
    *, count: int = 150, seed: int = 13, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """What a storefront pixel sends with the publishable key: anonymous purchases and a few
    returns, recorded as *reported* product signals (never orders or returns)."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    for number in range(count):
        at = now - timedelta(days=rng.uniform(0.5, 60), minutes=rng.randint(0, 600))
        product_id, _, category, price, variants, return_chance = rng.choice(CATALOG)
        item = {
            "line_id": "1",
            "product_id": product_id,
            "variant_id": f"{product_id}-{rng.choice(variants)}" if variants else None,
            "quantity": 1,
            "unit_price": price,
            "category": category,
        }
        order_id = f"PIXEL-{200000 + number}"
        yield {
            "type": "purchase",
            "id": f"demo-pixel-purchase-{number}",
            "timestamp": at.isoformat(),
            "order_id": order_id,
            "currency": "USD",
            "items": [item],
        }
        returned_at = at + timedelta(days=rng.uniform(2, 20))
        if rng.random() < return_chance and returned_at < now:
            reason = rng.choice(REASONS_BY_CATEGORY[category.split("/")[0]])
            yield {
                "type": "return",
                "id": f"demo-pixel-return-{number}",
                "timestamp": returned_at.isoformat(),
                "order_id": order_id,
                "currency": "USD",
                # A return event names someone; a reported one keeps none of it.
                "customer": {"email": f"pixel.{number}@example.com"},
                "items": [{"product_id": product_id, "quantity": 1, "reason": reason}],
            }


def open_lifecycle_returns(session: Any, *, tenant_id: str, count: int = 60, seed: int = 11) -> int:
    """Returns opened by staff and moved through the lifecycle, so every status shows up.

    Each has an external id `demo-rma-N`: running the demo again opens none twice.
    """
    from sqlalchemy import select

    from returnstack.kit.errors import ApiError
    from returnstack.models import Order, Return
    from returnstack.orders.service import render_orders
    from returnstack.returns.schemas import (
        CancelBody,
        DeclineBody,
        NoteBody,
        ReceiveBody,
        ReceiveItem,
        RefundBody,
        ReturnCreate,
        ReturnItemCreate,
    )
    from returnstack.returns.service import apply_action, open_return

    rng = random.Random(seed)
    existing = set(
        session.scalars(
            select(Return.external_id).where(
                Return.tenant_id == tenant_id, Return.external_id.like("demo-rma-%")
            )
        )
    )
    recent = list(
        session.scalars(
            select(Order)
            .where(Order.tenant_id == tenant_id, Order.customer_id.is_not(None))
            .order_by(Order.placed_at.desc())
            .limit(count * 3)
        )
    )
    opened = 0
    plans = ["requested", "approved", "received", "refunded", "closed", "declined", "cancelled"]
    for number, order in enumerate(recent[:count]):
        external_id = f"demo-rma-{number}"
        if external_id in existing:
            continue
        lines = [
            line
            for line in render_orders(session, tenant_id=tenant_id, orders=[order])[0]["lines"]
            if line["returnable_quantity"] > 0
        ]
        if not lines:
            continue
        line = rng.choice(lines)
        reasons = REASONS_BY_CATEGORY[(line["category"] or "Apparel").split("/")[0]]
        actor = "dashboard:demo-agent"
        try:
            ret = open_return(
                session,
                tenant_id=tenant_id,
                requester=None,
                data=ReturnCreate(
                    items=[
                        ReturnItemCreate(
                            order_id=order.id,
                            line_id=line["line_id"],
                            quantity=1,
                            reason=rng.choice(reasons),
                        )
                    ],
                    external_id=external_id,
                ),
                source="api",
                actor=actor,
            )
        except ApiError:
            continue  # outside the window, or claimed meanwhile: pick another order next time
        opened += 1
        plan = plans[number % len(plans)]
        first_steps: dict[str, list[tuple[str, Any]]] = {
            "requested": [],
            "approved": [("approve", NoteBody())],
            "received": [("approve", NoteBody())],
            "refunded": [("approve", NoteBody())],
            "closed": [("approve", NoteBody())],
            "declined": [("decline", DeclineBody(reason="return_period_ended"))],
            "cancelled": [("cancel", CancelBody(reason="customer kept the item"))],
        }
        steps = first_steps[plan]
        if plan in ("received", "refunded", "closed"):
            receipt = ReceiveItem(order_id=order.id, line_id=line["line_id"], quantity=1)
            steps.append(("receive", ReceiveBody(items=[receipt])))
        if plan in ("refunded", "closed"):
            steps.append(("refund", RefundBody(method="original_payment")))
        if plan == "closed":
            steps.append(("close", NoteBody()))
        for action, body in steps:
            apply_action(
                session,
                tenant_id=tenant_id,
                reference=ret["id"],
                action=action,
                body=body,
                actor=actor,
            )
    return opened


def catalog_ranking(session: Any, *, tenant_id: str) -> list[dict[str, Any]]:
    """The whole catalogue ranked as a search engine would ask (every base score 1.0, in
    catalogue order): the most-returned products sink, each row explaining why."""
    from returnstack.config import get_settings
    from returnstack.products.service import Smoothing, rank

    names = {product_id: name for product_id, name, *_ in CATALOG}
    rows = rank(
        session,
        tenant_id=tenant_id,
        product_ids=[product_id for product_id, *_ in CATALOG],
        scores=None,
        return_weight=1.0,
        smoothing=Smoothing.configured(get_settings()),
    )
    return [{"name": names[row["product_id"]], **row} for row in rows]
