"""The `where` language of segmentation (API.md 5, 11): grammar, types, errors and positions.

Pure parser tests; what the SQL selects is tested through the API in test_segments.py."""

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from returnstack.customers.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    Comparison,
    HasFlag,
    InList,
    Node,
    Not,
    Or,
    compile_where,
    parse,
    parse_timestamp,
)
from returnstack.kit.errors import InvalidRequest

A = Comparison("orders", "=", 1)
B = Comparison("returns", "=", 2)
C = Comparison("refunded", "=", 3)


def tree(text: str) -> Node:
    node = parse(text)
    assert node is not None
    return node


def error(text: str) -> dict[str, Any]:
    with pytest.raises(InvalidRequest) as caught:
        parse(text)
    assert caught.value.status_code == 400
    (detail,) = caught.value.details
    assert detail["path"] == "where"
    assert str(detail["position"]) in caught.value.message
    return detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("orders = 1 or returns = 2 and refunded = 3", Or((A, And((B, C))))),
        ("orders = 1 and returns = 2 or refunded = 3", Or((And((A, B)), C))),
        ("(orders = 1 or returns = 2) and refunded = 3", And((Or((A, B)), C))),
        ("orders = 1 or returns = 2 or refunded = 3", Or((A, B, C))),
        ("orders = 1 and returns = 2 and refunded = 3", And((A, B, C))),
        ("not orders = 1 and returns = 2", And((Not(A), B))),
        ("not (orders = 1 and returns = 2)", Not(And((A, B)))),
        ("not not orders = 1", Not(Not(A))),
        ("((orders = 1))", A),
        ("orders = 1 OR returns = 2 AnD NOT refunded = 3", Or((A, And((B, Not(C)))))),
        ("orders=1 or(returns=2)", Or((A, B))),
        ("  orders\n=\t1  ", A),
    ],
)
def test_precedence_and_grouping(text: str, expected: Node) -> None:
    assert tree(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("orders != 1", Comparison("orders", "!=", 1)),
        ("orders < 1", Comparison("orders", "<", 1)),
        ("orders <= 1", Comparison("orders", "<=", 1)),
        ("orders > 1", Comparison("orders", ">", 1)),
        ("orders >= 1", Comparison("orders", ">=", 1)),
        ("net_revenue < -500", Comparison("net_revenue", "<", -500)),
        ("return_rate_value < 0.25", Comparison("return_rate_value", "<", 0.25)),
        ("return_rate_items >= 1", Comparison("return_rate_items", ">=", 1.0)),
        ('currency = "eur"', Comparison("currency", "=", "EUR")),
        ('email = " Ann@Example.COM"', Comparison("email", "=", "ann@example.com")),
        ("customer_id = 'c-1'", Comparison("customer_id", "=", "c-1")),
        ('customer_id < "m"', Comparison("customer_id", "<", "m")),
        ("customer_id = null", Comparison("customer_id", "=", None)),
        ("last_return_at != NULL", Comparison("last_return_at", "!=", None)),
        (
            'first_order_at >= "2026-11-02"',
            Comparison("first_order_at", ">=", datetime(2026, 11, 2, tzinfo=UTC)),
        ),
        (
            'last_order_at < "2026-11-02T14:03:00+02:00"',
            Comparison("last_order_at", "<", datetime(2026, 11, 2, 12, 3, tzinfo=UTC)),
        ),
        ('currency in ["EUR", "usd"]', InList("currency", ("EUR", "USD"))),
        ("orders in [1, 2,3]", InList("orders", (1, 2, 3))),
        ("orders in []", InList("orders", ())),
        ("orders not in [1]", Not(InList("orders", (1,)))),
        ("orders NOT IN [1]", Not(InList("orders", (1,)))),
        ('"serial_returner" in flags', HasFlag("serial_returner")),
        ("'serial_returner' IN flags", HasFlag("serial_returner")),
        ('not "serial_returner" in flags', Not(HasFlag("serial_returner"))),
        ('"serial_returner" not in flags', Not(HasFlag("serial_returner"))),
    ],
)
def test_comparisons(text: str, expected: Node) -> None:
    assert tree(text) == expected


@pytest.mark.parametrize(
    ("literal", "text"),
    [
        (r'"a\"b"', 'a"b'),
        (r"'it\'s'", "it's"),
        (r'"back\\slash"', "back\\slash"),
        (r'"tab\there"', "tab\there"),
        (r'"caf\u00e9"', "café"),
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ('""', ""),
        ('"or and not in null"', "or and not in null"),
    ],
)
def test_string_literals(literal: str, text: str) -> None:
    assert tree(f"customer_id = {literal}") == Comparison("customer_id", "=", text)


def test_keywords_are_case_insensitive_but_fields_are_exact() -> None:
    assert tree("orders = 1 AND returns = 2") == And((A, B))
    assert error("Orders = 1") == {
        "path": "where",
        "message": "unknown field 'Orders'",
        "position": 0,
    }


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_an_empty_expression_selects_everything(text: str | None) -> None:
    assert parse(text) is None
    assert str(compile_where(text)) == "true"


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        # unknown fields: named, at their position
        ("nope = 1", 0, "unknown field 'nope'"),
        ('orders = 1 and colour = "red"', 15, "unknown field 'colour'"),
        ("orders = 1 or not (returns > 0 and vip in [1])", 35, "unknown field 'vip'"),
        ('"serial_returner" in badges', 21, "unknown field 'badges'"),
        # syntax: the offending token, or the end of the input
        ("orders = 1 2", 11, "unexpected '2'"),
        ("orders >", 8, "unexpected end of the expression"),
        ("orders", 6, "unexpected end of the expression"),
        ("orders = 1 and", 14, "unexpected end of the expression"),
        ("(orders = 1", 11, "expected ')'"),
        ("orders = 1)", 10, "unexpected ')'"),
        ("orders = = 1", 9, "unexpected '='"),
        ("orders == 1", 8, "unexpected '='"),
        ("and orders = 1", 0, "unexpected 'and'"),
        ("orders = 1 and or returns = 1", 15, "unexpected 'or'"),
        ("()", 1, "unexpected ')'"),
        ("orders @ 1", 7, "unexpected character '@'"),
        ("orders = 1 && returns = 1", 11, "unexpected character '&'"),
        ('email = "abc', 8, "unterminated string"),
        ("email = 'abc", 8, "unterminated string"),
        ("orders in [1 2]", 13, "expected ',' or ']'"),
        ("orders in [1,]", 13, "unexpected ']'"),
        ("orders in 1", 10, "expected '['"),
        ("orders > 1.", 10, "unexpected character '.'"),
        ("orders not 1", 11, "expected 'in'"),
        # types: at the literal
        ('orders = "1"', 9, "orders is a number"),
        ("orders = 1.5", 9, "orders is a whole number"),
        ("gross_revenue in [1, 2.5]", 21, "gross_revenue is a whole number"),
        ("email = 5", 8, "email is text"),
        ("currency in ['EUR', 3]", 20, "currency is text"),
        ("first_order_at > 5", 17, "first_order_at is a timestamp"),
        ('first_order_at > "yesterday"', 17, "RFC 3339"),
        ('first_order_at > "2026-13-01"', 17, "RFC 3339"),
        ('last_order_at < "2026-11-02T14:03:00"', 16, "RFC 3339"),
        ('last_order_at < "2026-11-02 14:03:00Z"', 16, "RFC 3339"),
        ('"vip" in flags', 0, "unknown flag 'vip'"),
        ('orders = 1 or "vip" not in flags', 14, "unknown flag 'vip'"),
        ('"serial_returner" in orders', 21, "only be tested with in flags"),
        ("flags = 1", 0, "flags can only be tested"),
        ('flags in ["serial_returner"]', 0, "flags can only be tested"),
        ("orders < null", 7, "null can only be compared with = or !="),
        ('customer_id in ["a", null]', 21, "null cannot be in a list"),
        (r'email = "a\qb"', 10, r"unknown escape \q"),
        ('customer_id = "a\\u0000b"', 14, "NUL"),
        ("orders > 99999999999999999999", 9, "out of range"),
    ],
)
def test_errors_name_the_position(text: str, position: int, message: str) -> None:
    detail = error(text)
    assert detail["position"] == position, detail
    assert message in detail["message"], detail


def test_the_error_body_carries_the_position() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse("orders >")
    assert caught.value.body() == {
        "error": {
            "type": "invalid_request",
            "message": caught.value.message,
            "details": [
                {
                    "path": "where",
                    "message": "unexpected end of the expression; "
                    "expected a number, a string or null",
                    "position": 8,
                }
            ],
        }
    }


def test_length_is_limited() -> None:
    longest = "orders in [" + ",".join(["1"] * ((MAX_LENGTH - 12) // 2)) + "]"
    assert len(longest) <= MAX_LENGTH
    parse(longest)
    detail = error("orders = 1 " + " " * MAX_LENGTH)
    assert detail["position"] == MAX_LENGTH
    assert "longer than" in detail["message"]


def test_nesting_is_limited() -> None:
    parse("not " * (MAX_DEPTH - 1) + "orders = 1")
    detail = error("not " * 200 + "orders = 1")
    assert "nested" in detail["message"]
    assert 0 < detail["position"] < 800
    deep = "(orders = 1 and " * 100 + "orders = 1" + ")" * 100
    assert "nested" in error(deep)["message"]
    # Redundant parentheses do not nest anything.
    assert tree("(" * 500 + "orders = 1" + ")" * 500) == A


def test_compiled_sql_binds_every_value() -> None:
    condition = compile_where(
        'email = "x\' OR 1=1 --" and orders in [7, 8] and last_return_at < "2026-01-01"'
    )
    compiled = condition.compile(compile_kwargs={})
    sql = str(compiled)
    assert "OR 1=1" not in sql
    assert "2026" not in sql
    assert "x' or 1=1 --" in compiled.params.values()
    assert datetime(2026, 1, 1, tzinfo=UTC) in compiled.params.values()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-02", datetime(2026, 11, 2, tzinfo=UTC)),
        ("2026-11-02T14:03:00Z", datetime(2026, 11, 2, 14, 3, tzinfo=UTC)),
        ("2026-11-02t14:03:00z", datetime(2026, 11, 2, 14, 3, tzinfo=UTC)),
        ("2026-11-02T14:03:00-05:30", datetime(2026, 11, 2, 19, 33, tzinfo=UTC)),
        ("2026-11-02T14:03:00.5Z", datetime(2026, 11, 2, 14, 3, 0, 500000, tzinfo=UTC)),
        ("2026-11-02T14:03:00.123456789Z", datetime(2026, 11, 2, 14, 3, 0, 123456, tzinfo=UTC)),
        ("2026-11-02T14:03:00", None),
        ("2026-02-30", None),
        ("2026-11-02T25:00:00Z", None),
        ("02/11/2026", None),
        ("", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_numbers_out_of_range() -> None:
    assert tree(f"orders <= {2**63 - 1}") == Comparison("orders", "<=", 2**63 - 1)
    assert error(f"orders <= {2**63}")["message"].endswith("is out of range")
    assert error("return_rate_value < " + "9" * 500)["position"] == 20
    assert tree("return_rate_value < 0.000001") == Comparison("return_rate_value", "<", 1e-06)


_TOKENS = [
    "orders", "email", "flags", "last_return_at", "currency", "nope", "and", "or", "not",
    "in", "null", "(", ")", "[", "]", ",", "=", "!=", "<", ">=", '"EUR"', "'x'",
    '"2026-01-01"', '"serial_returner"', "1", "-2", "0.5", '"', "\\", "@", " ",
]  # fmt: skip


@given(st.lists(st.sampled_from(_TOKENS), max_size=12).map(" ".join) | st.text(max_size=60))
@settings(max_examples=400, deadline=None)
def test_anything_parses_or_is_a_400_with_a_position(text: str) -> None:
    try:
        node = parse(text)
    except InvalidRequest as exc:
        (detail,) = exc.details
        assert 0 <= detail["position"] <= len(text)
        assert detail["message"]
        return
    if node is not None:
        compile_where(text)
