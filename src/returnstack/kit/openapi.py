"""Helpers to document request bodies that are parsed by hand (for per-item errors)."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from returnstack.kit.errors import ApiError, AuthenticationFailed, Forbidden, InvalidRequest

_EXTRA_SCHEMAS: dict[str, Any] = {}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "message": {"type": "string"},
                            "code": {"type": "string"},
                            "position": {
                                "type": "integer",
                                "description": "0-based character offset (errors in `where`)",
                            },
                        },
                    },
                },
            },
            "required": ["type", "message", "details"],
        }
    },
    "required": ["error"],
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for an endpoint whose JSON body is `model`, validated by hand."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _EXTRA_SCHEMAS.update(schema.pop("$defs", {}))
    _EXTRA_SCHEMAS[model.__name__] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


# What any secret-key endpoint may answer: no key or a bad one, a publishable key, bad input.
STAFF_ERRORS = (AuthenticationFailed, Forbidden, InvalidRequest)


def errors(*kinds: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the domain errors an endpoint may answer."""
    responses: dict[int | str, dict[str, Any]] = {}
    for kind in kinds:
        entry = responses.setdefault(kind.status_code, {"description": "", "content": {}})
        # A domain's single-fact error (RefundExceedsRefundable) is named after its type.
        name = (
            kind.type if kind.__module__ == ApiError.__module__ else f"{kind.type}: {kind.__name__}"
        )
        entry["description"] = " | ".join(filter(None, [entry["description"], name]))
        entry["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return responses


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(_EXTRA_SCHEMAS)
        components["Error"] = ERROR_SCHEMA
        # FastAPI documents its own 422 shape; every error here has the contract's shape.
        fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            response = operation.get("responses", {}).get("422")
            if (
                response
                and response.get("content", {}).get("application/json", {}).get("schema")
                == fastapi_422
            ):
                response["description"] = "validation_failed"
                response["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def raw_body(request: Request) -> bytes:
    return await request.body()
