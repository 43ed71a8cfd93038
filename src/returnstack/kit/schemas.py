"""The base of every request body: unknown fields are refused, and no string holds NUL."""

from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import core_schema

from returnstack.kit.types import no_nul

_OWN_PARSER = "returnstack.nul_reported_by_its_parser"


class _ReportsNulItself:
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = dict(handler(source))
        schema["metadata"] = {**schema.get("metadata", {}), _OWN_PARSER: True}
        return cast(core_schema.CoreSchema, schema)


# A string whose own parser answers a NUL as the contract says (an expression: 400 with the
# position; a signed token: 401), so Schema leaves it alone.
ParsedText = Annotated[str, _ReportsNulItself()]


def _refuse_nul(schema: Any) -> Any:
    """Wrap every `str` schema inside `schema` (list items and dict keys too) in `no_nul`,
    so an error names the exact path (`items[0].note`, `metadata.<key>`)."""
    if isinstance(schema, list):
        return [_refuse_nul(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    walked = {
        key: part if key in ("metadata", "serialization") else _refuse_nul(part)
        for key, part in schema.items()
    }
    if schema.get("type") == "str" and not schema.get("metadata", {}).get(_OWN_PARSER):
        return core_schema.no_info_after_validator_function(no_nul, walked)
    return walked


class Schema(BaseModel):
    """Request bodies: `extra="forbid"` and, since PostgreSQL text cannot hold U+0000, every
    string refuses the NUL character (checked once here, after the field's own length rules)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _refuse_nul(handler(source))
