"""The `where` language of customer segmentation (API.md sections 5 and 11).

    net_revenue >= 10000 and return_rate_value < 0.25 and currency = "EUR"
    not "serial_returner" in flags or last_return_at >= "2026-01-01"
    currency in ["EUR", "USD"] and (orders > 3 or email = "ann@example.com")

`parse` turns the text into a small tree of comparisons (checking field names and value
types, with the 0-based character position of every error), `to_sql` into a SQLAlchemy
condition over `customer_profiles` outer-joined to `customers` (values are bound
parameters). Every error is a 400 whose detail is
`{"path": "where", "message": "...", "position": <offset>}`.

Comparisons are two-valued: a comparison with a missing value (a null timestamp or
email) is false, so `not` and `!=` include such rows (`last_return_at != "2026-01-01"`
matches customers who never returned anything); `= null` and `!= null` test for it.
"""

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from sqlalchemy import ColumnElement, String, and_, func, not_, or_, true
from sqlalchemy.orm import QueryableAttribute

from returnstack.customers.fields import COLUMNS, FLAGS, TIMESTAMPS
from returnstack.kit.errors import InvalidRequest
from returnstack.models import Customer, CustomerProfile

MAX_LENGTH = 4000  # the length of Segment.expression
MAX_DEPTH = 32  # nested and / or / not
MAX_INTEGER = 2**63 - 1  # BIGINT

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr            -> negation
         | atom
?atom: comparison
     | "(" or_expr ")"
comparison: NAME OP value           -> compare
          | NAME _IN list           -> in_list
          | NAME _NOT _IN list      -> not_in_list
          | STRING _IN NAME         -> has_flag
          | STRING _NOT _IN NAME    -> lacks_flag
list: "[" [value ("," value)*] "]"
?value: STRING | NUMBER | NULL

_OR: "or"i
_AND: "and"i
_NOT: "not"i
_IN: "in"i
NULL: "null"i
NAME: /[a-z_][a-z0-9_]*/i
OP: "!=" | "<=" | ">=" | "=" | "<" | ">"
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
NUMBER: /-?[0-9]+(?:\.[0-9]+)?/
%ignore /[ \t\r\n]+/
"""

# The basic lexer: and, or, not, in and null are always keywords, never field names.
_PARSER = Lark(
    GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True
)

_TERMINALS = {
    "_OR": "'or'",
    "_AND": "'and'",
    "_NOT": "'not'",
    "_IN": "'in'",
    "NULL": "null",
    "NAME": "a field",
    "OP": "an operator (= != < <= > >=)",
    "STRING": "a string",
    "NUMBER": "a number",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "$END": "the end of the expression",
}

Kind = Literal["text", "integer", "rate", "timestamp", "flags"]
Value = str | int | float | datetime | None


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    column: "ColumnElement[Any] | QueryableAttribute[Any]"
    nullable: bool = False


EMAIL = func.coalesce(Customer.email, CustomerProfile.guest_email, type_=String())


def _profile_field(name: str) -> Field:
    if name == "email":
        return Field(name, "text", EMAIL, nullable=True)
    if name == "flags":
        return Field(name, "flags", CustomerProfile.serial_returner)
    column = getattr(CustomerProfile, name)
    if name in TIMESTAMPS:
        return Field(name, "timestamp", column, nullable=True)
    if name in ("customer_id", "currency"):
        return Field(name, "text", column, nullable=name == "customer_id")
    return Field(name, "rate" if name.startswith("return_rate_") else "integer", column)


FIELDS: dict[str, Field] = {name: _profile_field(name) for name in COLUMNS}


@dataclass(frozen=True)
class Sort:
    """The order of segmentation rows: one field, then the row's key (owner, currency)."""

    field: Field
    descending: bool = False

    @property
    def spec(self) -> str:
        return f"-{self.field.name}" if self.descending else self.field.name

    @property
    def by_key(self) -> bool:
        """customer_id ascending, nulls (guests) last, is the order of the table's key
        (owner: "c:<customer id>" before "g:<email>"), which its index reads as it is."""
        return self.field.name == "customer_id" and not self.descending


# The parsed expression: what the SQL is made from (and what the tests look at).


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str  # = != < <= > >=
    value: Value  # None only with = and !=


@dataclass(frozen=True)
class InList:
    field: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class HasFlag:
    flag: str


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class And:
    operands: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    operands: tuple["Node", ...]


Node = Comparison | InList | HasFlag | Not | And | Or


def invalid(message: str, position: int) -> InvalidRequest:
    return InvalidRequest(
        f"The where expression is not valid: {message} (at position {position}).",
        details=[{"path": "where", "message": message, "position": position}],
    )


def parse(text: str | None) -> Node | None:
    """The expression's tree; None for an empty expression (every row)."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise invalid(f"is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    _check_depth(tree)
    return _build(tree)


def compile_where(text: str | None) -> ColumnElement[bool]:
    """The SQL condition of a `where` text (true for an empty one); 400 when malformed."""
    node = parse(text)
    return true() if node is None else to_sql(node)


def rewrite_literals(text: str, names: Callable[[str, str], bool]) -> str:
    """The expression with every quoted literal compared to `customer_id` or `email` for
    which `names(field, value)` holds replaced by `""` (which no id or email equals); the
    rest of the text unchanged. Text that does not parse is returned as it is."""
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput:
        return text
    spans = []
    for node in tree.iter_subtrees():
        if node.data not in ("compare", "in_list", "not_in_list"):
            continue
        field = str(node.children[0])
        if field not in ("customer_id", "email"):
            continue
        literals = node.children[2:] if node.data == "compare" else _tree(node.children[1]).children
        for token in literals:
            if isinstance(token, Token) and token.type == "STRING":
                try:
                    value = _string(token)
                except InvalidRequest:
                    continue
                if names(field, value):
                    spans.append((_at(token), token.end_pos or 0))
    for start, end in sorted(spans, reverse=True):
        text = f'{text[:start]}""{text[end:]}'
    return text


def _syntax_error(exc: UnexpectedInput, text: str) -> InvalidRequest:
    if isinstance(exc, UnexpectedCharacters):
        position = exc.pos_in_stream or 0
        char = text[position]
        if char in "\"'":
            return invalid("unterminated string", position)
        return invalid(f"unexpected character {char!r}", position)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        at_end = token.type == "$END"
        position = len(text) if at_end else (token.start_pos or 0)
        found = "end of the expression" if at_end else repr(str(token.value))
        names = sorted({_TERMINALS.get(name, name) for name in exc.accepts or exc.expected})
        expected = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return invalid(f"unexpected {found}; expected {expected}", position)
    return invalid("syntax error", exc.pos_in_stream or 0)  # pragma: no cover (Earley only)


def _check_depth(tree: Tree[Token]) -> None:
    """Refuse deeply nested expressions before anything recurses over them."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise invalid(f"is nested more than {MAX_DEPTH} levels deep", node.meta.start_pos)
        for child in node.children:
            if isinstance(child, Tree) and child.data != "list":
                stack.append((child, depth + 1))


def _build(tree: Tree[Token]) -> Node:
    kind = tree.data
    children = tree.children
    if kind in ("or_expr", "and_expr"):
        operands = tuple(_build(child) for child in children if isinstance(child, Tree))
        return Or(operands) if kind == "or_expr" else And(operands)
    if kind == "negation":
        return Not(_build(_tree(children[0])))
    if kind == "compare":
        name, op, value = (_token(child) for child in children)
        field = _field(name)
        if value.type == "NULL":
            if op not in ("=", "!="):
                raise invalid(f"null can only be compared with = or !=, not {op}", _at(op))
            return Comparison(field.name, str(op), None)
        return Comparison(field.name, str(op), _value(field, value))
    if kind in ("in_list", "not_in_list"):
        name, values = _token(children[0]), _tree(children[1])
        field = _field(name)
        items = []
        for child in values.children:
            if child is None:  # `[]`
                continue
            value = _token(child)
            if value.type == "NULL":
                raise invalid("null cannot be in a list: use = null or != null", _at(value))
            items.append(_value(field, value))
        node: Node = InList(field.name, tuple(items))
        return node if kind == "in_list" else Not(node)
    if kind in ("has_flag", "lacks_flag"):
        flag, name = _token(children[0]), _token(children[1])
        if name != "flags":
            known = name in FIELDS
            message = f"a string can only be tested with in flags, not in {name}"
            raise invalid(message if known else f"unknown field {str(name)!r}", _at(name))
        flag_name = _string(flag)
        if flag_name not in FLAGS:
            raise invalid(
                f"unknown flag {flag_name!r}; known flags: {', '.join(sorted(FLAGS))}",
                _at(flag),
            )
        has = HasFlag(flag_name)
        return has if kind == "has_flag" else Not(has)
    raise AssertionError(f"unexpected rule {kind}")  # pragma: no cover


def _token(child: object) -> Token:
    assert isinstance(child, Token)
    return child


def _tree(child: object) -> Tree[Token]:
    assert isinstance(child, Tree)
    return child


def _at(token: Token) -> int:
    return token.start_pos or 0


def _field(name: Token) -> Field:
    field = FIELDS.get(str(name))
    if field is None:
        raise invalid(f"unknown field {str(name)!r}", _at(name))
    if field.kind == "flags":
        raise invalid('flags can only be tested with "serial_returner" in flags', _at(name))
    return field


def _value(field: Field, token: Token) -> Value:
    """The literal as the field's type; a 400 at the literal when it is not one."""
    if field.kind == "text":
        if token.type != "STRING":
            raise invalid(f"{field.name} is text: quote the value", _at(token))
        text = _string(token)
        if field.name == "email":
            return text.strip().lower()  # stored normalised
        if field.name == "currency":
            return text.upper()
        return text
    if field.kind == "timestamp":
        if token.type != "STRING":
            raise invalid(f"{field.name} is a timestamp: write it as a string", _at(token))
        moment = parse_timestamp(_string(token))
        if moment is None:
            raise invalid(
                f"{field.name} needs an RFC 3339 timestamp with an offset "
                '("2026-11-02T14:03:00Z") or a date ("2026-11-02")',
                _at(token),
            )
        return moment
    if token.type != "NUMBER":
        raise invalid(f"{field.name} is a number: write it without quotes", _at(token))
    if field.kind == "integer" and "." in token:
        raise invalid(f"{field.name} is a whole number", _at(token))
    out_of_range = invalid(f"{token[:30]} is out of range", _at(token))
    if len(token) > 40:  # before converting: far beyond any value either way
        raise out_of_range
    if field.kind == "integer":
        number = int(token)
        if abs(number) > MAX_INTEGER:
            raise out_of_range
        return number
    return float(token)  # a rate; 40 characters stay finite


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _string(token: Token) -> str:
    """A quoted literal's text, its backslash escapes resolved."""
    start = _at(token) + 1  # the first character after the quote

    def resolve(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        if code not in _ESCAPES:
            raise invalid(f"unknown escape \\{code}", start + match.start())
        return _ESCAPES[code]

    text = _ESCAPE.sub(resolve, str(token)[1:-1])
    if not text.isascii():
        # As in JSON, \ud83d\ude00 is one character (a pair); half of a pair is none.
        try:
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise invalid(
                "a string must be valid Unicode: a lone surrogate escape is not a character",
                _at(token),
            ) from None
    if "\x00" in text:
        raise invalid("a string must not contain the NUL character", _at(token))
    return text


_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2}))?$"
)


def parse_timestamp(text: str) -> datetime | None:
    """RFC 3339 with an offset, or YYYY-MM-DD (that day, 00:00 UTC); None otherwise."""
    match = _TIMESTAMP.match(text)
    if match is None:
        return None
    day, clock, fraction, offset = match.groups()
    try:
        if clock is None:
            return datetime.fromisoformat(day).replace(tzinfo=UTC)
        micro = f".{(fraction + '00000')[:6]}" if fraction else ""
        zone = "+00:00" if offset in ("Z", "z") else offset
        return datetime.fromisoformat(f"{day}T{clock}{micro}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# SQL


_OPERATORS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def to_sql(node: Node) -> ColumnElement[bool]:
    """A condition over customer_profiles outer-joined to customers (see segments.py)."""
    if isinstance(node, Or):
        return or_(*(to_sql(operand) for operand in node.operands))
    if isinstance(node, And):
        return and_(*(to_sql(operand) for operand in node.operands))
    if isinstance(node, Not):
        return not_(to_sql(node.operand))
    if isinstance(node, HasFlag):
        return FIELDS["flags"].column.is_(True)
    field = FIELDS[node.field]
    column = field.column
    if isinstance(node, InList):
        condition: ColumnElement[bool] = column.in_(node.values)
    elif node.value is None:
        return column.is_(None) if node.op == "=" else column.is_not(None)
    else:
        condition = _OPERATORS[node.op](column, node.value)
    # Two-valued logic: a comparison with a null is false, never unknown, so that `not`
    # and `!=` include the rows without a value.
    if not field.nullable:
        return condition
    if isinstance(node, Comparison) and node.op == "!=":
        return or_(column.is_(None), condition)
    return and_(column.is_not(None), condition)
