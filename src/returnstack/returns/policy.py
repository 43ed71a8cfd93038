"""The tenant's return policy: window, fees, reasons, product and category rules."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator
from sqlalchemy.orm import Session

from returnstack.kit.schemas import Schema
from returnstack.kit.types import Amount, ClientId, Name, ShortText
from returnstack.returns import repository
from returnstack.returns.reasons import DEFAULT_REASONS

ReasonCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
Percent = Annotated[int | float, Field(ge=0, le=100, description="Up to 2 decimals.")]
WindowDays = Annotated[int, Field(ge=0, le=3650)]


def _two_decimals(value: int | float | None) -> int | float | None:
    if value is not None and Decimal(str(value)).as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("must have at most 2 decimals")
    return value


class Reason(Schema):
    code: ReasonCode
    label: Name
    merchant_fault: bool = Field(False, description="No fees are charged for these reasons.")


class RuleMatch(Schema):
    product_id: ClientId | None = None
    category_prefix: ShortText | None = Field(
        None,
        description="Matches the category and its subcategories (Apparel matches Apparel/Tops).",
    )

    @model_validator(mode="after")
    def _one_criterion(self) -> "RuleMatch":
        if (self.product_id is None) == (self.category_prefix is None):
            raise ValueError("give exactly one of product_id and category_prefix")
        return self


class Rule(Schema):
    match: RuleMatch
    returnable: bool | None = None
    return_window_days: WindowDays | None = None
    restocking_fee_percent: Percent | None = None

    _decimals = field_validator("restocking_fee_percent")(_two_decimals)


class SerialReturner(Schema):
    min_orders: int = Field(3, ge=1, le=1_000_000)
    return_rate_value: float = Field(0.5, ge=0, le=1)


def _default_reasons() -> list[Reason]:
    return [Reason(code=code, **attrs) for code, attrs in DEFAULT_REASONS.items()]


class PolicyDocument(Schema):
    return_window_days: WindowDays = Field(30, description="Counted from the order's timestamp.")
    refund_damaged_items: bool = False
    restocking_fee_percent: Percent = 0
    return_shipping_fee: Amount = Field(0, description="Minor units of the return's currency.")
    reasons: list[Reason] = Field(default_factory=_default_reasons, min_length=1, max_length=200)
    rules: list[Rule] = Field(default_factory=list, max_length=10_000)
    serial_returner: SerialReturner = Field(default_factory=SerialReturner)

    _decimals = field_validator("restocking_fee_percent")(_two_decimals)

    @field_validator("reasons")
    @classmethod
    def _unique_codes(cls, reasons: list[Reason]) -> list[Reason]:
        codes = [reason.code for reason in reasons]
        duplicates = sorted({code for code in codes if codes.count(code) > 1})
        if duplicates:
            raise ValueError(f"reason codes must be unique: {', '.join(duplicates)}")
        return reasons

    def reason(self, code: str) -> Reason | None:
        return next((reason for reason in self.reasons if reason.code == code), None)


@dataclass(frozen=True, slots=True)
class LineTerms:
    """What the policy says about one order line."""

    returnable: bool
    window_days: int
    fee_basis_points: int  # restocking fee in hundredths of a percent


def terms_for(policy: PolicyDocument, *, product_id: str, category: str | None) -> LineTerms:
    """Each setting comes from the most specific rule that sets it: the product's rule, then
    the rule with the longest matching category prefix, then the policy's defaults."""
    matching: list[tuple[int, Rule]] = []
    for rule in policy.rules:
        if rule.match.product_id is not None:
            if rule.match.product_id == product_id:
                matching.append((1_000_000, rule))
        elif category is not None and rule.match.category_prefix is not None:
            prefix = rule.match.category_prefix.rstrip("/")
            if category == prefix or category.startswith(prefix + "/"):
                matching.append((len(prefix), rule))
    matching.sort(key=lambda pair: pair[0], reverse=True)

    def pick(attribute: str, default: Any) -> Any:
        for _, rule in matching:
            value = getattr(rule, attribute)
            if value is not None:
                return value
        return default

    percent = pick("restocking_fee_percent", policy.restocking_fee_percent)
    return LineTerms(
        returnable=pick("returnable", True),
        window_days=pick("return_window_days", policy.return_window_days),
        fee_basis_points=int(Decimal(str(percent)) * 100),
    )


def get_policy(session: Session, *, tenant_id: str) -> PolicyDocument:
    document = repository.policy_document(session, tenant_id=tenant_id)
    return PolicyDocument() if document is None else PolicyDocument.model_validate(document)


# The serial-returner rule of each tenant, with the version of the policy it was read from:
# customer profiles need it with every fact, and reading and validating the whole document
# each time costs more than the rest of a one-event request's profile upkeep. A read of the
# version (by key) tells whether the stored policy changed since, in any process.
_RULES: dict[str, tuple[Any, SerialReturner]] = {}


def serial_returner_rule(session: Session, *, tenant_id: str) -> SerialReturner:
    version = repository.policy_version(session, tenant_id=tenant_id)
    cached = _RULES.get(tenant_id)
    if cached is not None and cached[0] == version:
        return cached[1]
    # Read after the version: at worst newer than it, and then read again next time.
    rule = get_policy(session, tenant_id=tenant_id).serial_returner
    _RULES[tenant_id] = (version, rule)
    return rule
