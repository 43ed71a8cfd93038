"""What the customer modules share about a profile: whose row it is (its owner), its flag
and its fields, named once. Imports nothing, so any module of the domain may import it."""

SERIAL_RETURNER = "serial_returner"
FLAGS = frozenset({SERIAL_RETURNER})
CHANNELS = ("online", "offline")

# Added up from the facts (orders, lines, returns, refunds) ...
COUNTED = ("orders", "items_purchased", "gross_revenue", "returns", "items_returned", "refunded")
COUNTERS = (
    *COUNTED,
    *(f"{channel}_{fact}" for fact in ("orders", "returns") for channel in CHANNELS),
)
SUMS = (*COUNTERS, "net_revenue")  # every stored sum, each within +-(2^53 - 1)
# ... and shown per currency (with the two rates derived from them).
TOTALS = (*COUNTED, "net_revenue", "return_rate_items", "return_rate_value")
TIMESTAMPS = ("first_order_at", "last_order_at", "last_return_at")
# One row of segmentation: a (customer, currency).
COLUMNS = ("customer_id", "email", "currency", *TOTALS, *TIMESTAMPS, "flags")


def customer_owner(customer_id: str) -> str:
    return f"c:{customer_id}"


def guest_owner(email: str) -> str:
    return f"g:{email}"
