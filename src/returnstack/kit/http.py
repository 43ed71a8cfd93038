"""Small HTTP helpers shared by endpoints: If-Match versions, ETags, list limits."""

from typing import Annotated, Any

from fastapi import Depends, Header, Query
from starlette.convertors import Convertor, register_url_convertor

from returnstack.kit.errors import InvalidRequest
from returnstack.kit.responses import JSONResponse


class ClientIdConvertor(Convertor[str]):
    """A client id in a path: any non-empty text, "/" included (`{order_id:client_id}`)."""

    regex = r"[\s\S]+"  # any character, newlines included

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("client_id", ClientIdConvertor())


async def if_match_version(
    if_match: Annotated[
        str | None,
        Header(alias="If-Match", description='The version you last saw: "3". Stale: 412.'),
    ] = None,
) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > 18:  # not "²", nor "\uff11"
        raise InvalidRequest.at(
            "If-Match", 'must look like "3"', "If-Match must be a version, as the ETag gives it."
        )
    return int(value)


IfMatch = Annotated[int | None, Depends(if_match_version)]


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def versioned(payload: dict[str, Any]) -> JSONResponse:
    """A resource with its version as ETag (what If-Match sends back)."""
    return JSONResponse(payload, headers=etag(payload["version"]))


Limit = Annotated[int, Query(ge=1, le=200, description="Page size, 1-200.")]
