"""What the OpenAPI document adds to the models: the error responses every route lists
(``{"error": {"code", "message"}}``) and the request bodies of routes that read the raw request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["ERROR_RESPONSES", "ErrorBody", "ErrorResponse", "request_body"]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad input"},
    401: {"model": ErrorResponse, "description": "missing or wrong x-api-key (when API_KEY is set)"},
    413: {"model": ErrorResponse, "description": "image or body over the size limit"},
    415: {"model": ErrorResponse, "description": "unsupported content type"},
    503: {"model": ErrorResponse, "description": "model or index not available"},
}


def request_body(*content: tuple[str, type[BaseModel]]) -> dict[str, Any]:
    """An ``openapi_extra`` requestBody listing each media type with the model's JSON schema (nested models
    inlined: a schema's own ``#/$defs/...`` references would not resolve inside the OpenAPI document)."""
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": _inlined(model.model_json_schema())} for media, model in content},
        }
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(
                    {**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
                )
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined
