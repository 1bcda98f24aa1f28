"""The OpenAPI document, made to say what the API really does.

FastAPI, left alone, documents a 422 ``HTTPValidationError`` that Charter never
sends and none of the errors it does send. :func:`install` declares on every
route the error statuses it can really answer, each with :class:`ErrorBody`
(the one shape :mod:`services.gateway.errors` renders). The sources:

- every ``/v1`` route authenticates (401), checks its scope (403), is rate
  limited (429, ``Retry-After``) and needs the database (503, ``Retry-After``);
- a path parameter naming an object: 404, also for another project's object;
- any parameter or a body: 422 (path parameters too: a value the database
  refuses, such as a NUL character on PostgreSQL, is answered 422);
- every ``POST``: 409 (an ``Idempotency-Key`` whose first response held a
  secret, or a concurrent write caught at commit) and 422 (an
  ``Idempotency-Key`` reused for another request);
- a request body: 413 (:class:`~services.gateway.limits.BodySizeLimit`);
- what a service raises beyond that: :data:`RAISES`, and :data:`NO_404` where a
  path parameter names something the request creates.

Health routes take no key and answer none of these. A status a route declares
itself is kept as it is. Since FastAPI adds its own 422 only to operations that
declare no 422, ``4XX`` or ``default``, declaring ours removes it.

The generated document is then post-processed once per app (and cached): every
``limit`` query parameter's ``maximum`` is ``settings.page_limit_max`` (the value
the gateway enforces), the API-key security schemes are declared on ``/v1``, and
OpenAPI ``links`` (:data:`LINKS`) chain each create operation to the operations
on what it created, for clients and for schemathesis's stateful tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.utils import create_model_field
from pydantic import BaseModel, ConfigDict, Field

from charter.core.constitution import Constitution
from charter.settings import Settings


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(description="Where, e.g. body.rows.0.prompt or query.limit.")
    message: str
    type: str = Field(description="pydantic's error type, e.g. missing or string_too_long.")


class ErrorBody(BaseModel):
    """Every error response of the API."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(
        description="A stable code: unauthorized, forbidden, not_found, conflict, too_large, "
        "invalid, validation_error, rate_limited or unavailable."
    )
    detail: str = Field(description="What went wrong, for a person.")
    field: str | None = Field(
        default=None, description="The part of the request at fault, when one is."
    )
    errors: list[FieldError] | None = Field(
        default=None, description="validation_error only: every failing location."
    )


class Ready(BaseModel):
    status: str = Field(description="ready")


class NotReady(BaseModel):
    status: str = Field(description="unavailable")
    detail: str = Field(description="Which dependency failed.")


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
DESCRIPTIONS: dict[int, str] = {
    401: "No API key, or one that is unknown, revoked or expired.",
    403: "The API key lacks the scope this operation needs.",
    404: "Not found in the caller's project (another project's objects are not found either).",
    409: "A conflicting state: the object cannot make this transition, a concurrent request "
    "changed it, or the Idempotency-Key's first response held a secret and is not replayed.",
    413: "The request body is larger than the gateway accepts.",
    422: "The request is invalid (validation_error lists every failing location), holds a "
    "value the database cannot store, or reuses an Idempotency-Key for another request.",
    429: "Rate limited: this key's requests for the scope, or failed authentications from "
    "this address.",
    503: "The database is unavailable; retry.",
}

# Statuses a service raises beyond what the route's shape implies (see the module doc).
RAISES: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/v1/jobs"): {404: "The batch or constitution the body names does not exist."},
    ("POST", "/v1/runs"): {
        404: "The dataset, reward_run or run:<id> model the body names does not exist."
    },
    ("POST", "/v1/evals"): {
        404: "The gold set, or a constitution or feedback template a configuration names, "
        "does not exist."
    },
    ("POST", "/v1/policy-evals"): {
        404: "The batch, or a constitution or feedback template a judge names, does not exist."
    },
    ("POST", "/v1/pipelines"): {
        404: "A batch, the constitution, or a template or constitution a stage or judge "
        "names does not exist."
    },
    ("POST", "/v1/classifier-data/requests"): {
        404: "The constitution the body names does not exist."
    },
    ("POST", "/v1/classifier-data/responses"): {
        404: "The requests job does not exist.",
        409: "The requests job has not finished.",
    },
    ("POST", "/v1/classifier-data/datasets"): {
        404: "The responses job (or its requests job) does not exist.",
        409: "A job has not finished.",
    },
    ("POST", "/v1/classify"): {
        404: "The classifier (a training run) does not exist.",
        503: "No classifier server is configured, or it cannot be reached.",
    },
    ("POST", "/v1/classify/stream"): {
        404: "The classifier (a training run) does not exist.",
        503: "No classifier server is configured, or it cannot be reached.",
    },
    ("GET", "/v1/constitutions/{ref}"): {422: "The ref is not name or name@version."},
    ("GET", "/v1/datasets/{ref}/export"): {409: "The version is not ready: freezing or failed."},
}
# Success statuses a route answers besides its own: (method, path) -> (like, status, why).
ALSO_ANSWERS: dict[tuple[str, str], tuple[int, int, str]] = {
    ("POST", "/v1/constitutions"): (
        201,
        200,
        "The content is identical to an existing version: that version (created: false).",
    ),
}
# Routes whose path parameter names what the request creates, so it is never "not found".
NO_404: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/v1/datasets/{name}/upload"),
        ("POST", "/v1/gold-sets/{name}"),
        ("POST", "/v1/public-inputs/{name}"),
    }
)

# (source method, path, status) -> [(target method, path, link parameters)].
LINKS: dict[tuple[str, str, int], list[tuple[str, str, dict[str, str]]]] = {}


def _link(
    sources: list[tuple[str, str, int]], targets: list[tuple[str, str]], parameters: dict[str, str]
) -> None:
    for source in sources:
        LINKS.setdefault(source, []).extend((method, path, parameters) for method, path in targets)


_BATCH = "/v1/batches/{batch_id}"
_link(
    [("POST", "/v1/batches", 201), ("POST", "/v1/batches/upload", 201)],
    [("GET", _BATCH), ("GET", _BATCH + "/prompts")],
    {"batch_id": "$response.body#/id"},
)
_JOB = "/v1/jobs/{job_id}"
_link(
    [("POST", "/v1/jobs", 202)],
    [
        ("GET", _JOB),
        ("GET", _JOB + "/results"),
        ("GET", _JOB + "/items"),
        ("POST", _JOB + "/cancel"),
    ],
    {"job_id": "$response.body#/id"},
)
_PUSHED = [("POST", "/v1/constitutions", 201), ("POST", "/v1/constitutions", 200)]
_link(_PUSHED, [("GET", "/v1/constitutions/{ref}")], {"ref": "$response.body#/ref"})
_link(_PUSHED, [("GET", "/v1/constitutions/{name}/versions")], {"name": "$response.body#/name"})
_link(
    _PUSHED,
    [("GET", "/v1/constitutions/{name}/diff")],
    {
        "name": "$response.body#/name",
        "query.from": "$response.body#/version",
        "query.to": "$response.body#/version",
    },
)
_RUN = "/v1/runs/{run_id}"
_link(
    [("POST", "/v1/runs", 201), ("POST", "/v1/runs/claim", 200)],
    [("GET", _RUN), ("GET", _RUN + "/metrics"), ("POST", _RUN + "/cancel")],
    {"run_id": "$response.body#/id"},
)
_link(
    [("POST", _RUN + "/cancel", 200)],
    [("POST", _RUN + "/resume")],
    {"run_id": "$response.body#/id"},
)
_link(
    [("POST", "/v1/keys", 201)],
    [("POST", "/v1/keys/{key_id}/revoke")],
    {"key_id": "$response.body#/id"},
)
_DATASET_SOURCES = [("POST", "/v1/datasets", 202), ("POST", "/v1/datasets/{name}/upload", 201)]
_link(
    _DATASET_SOURCES,
    [("GET", "/v1/datasets/{ref}"), ("GET", "/v1/datasets/{ref}/export")],
    {"ref": "$response.body#/ref"},
)
_link(_DATASET_SOURCES, [("GET", "/v1/datasets/{name}/versions")], {"name": "$response.body#/name"})

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same key as a bearer token.",
    },
}


def error_statuses(method: str, path: str, route: Any) -> dict[int, str]:
    """The error statuses ``method path`` can answer, with their descriptions."""
    if not path.startswith("/v1/"):
        return {}
    codes = {401, 403, 429, 503}
    dependant = route.dependant
    has_body = route.body_field is not None or "requestBody" in (route.openapi_extra or {})
    if dependant.path_params and (method, path) not in NO_404:
        codes.add(404)
    if dependant.path_params or dependant.query_params or has_body:
        codes.add(422)
    if method == "POST":
        codes |= {409, 422}
        if has_body:
            codes.add(413)
    statuses = {code: DESCRIPTIONS[code] for code in codes}
    statuses.update(RAISES.get((method, path), {}))
    return dict(sorted(statuses.items()))


def _declare(route: Any, status: int | str, response: dict[str, Any], model: type) -> None:
    """Add ``status`` to the route's responses unless the route declares it itself."""
    if str(status) in {str(code) for code in route.responses}:
        return
    route.responses[status] = {"model": model, **response}
    route.response_fields[status] = create_model_field(
        name=f"Response_{status}_{route.unique_id}", type_=model, mode="serialization"
    )


def _declare_responses(app: FastAPI) -> None:
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        # The route as FastAPI's OpenAPI generator sees it (for an included router, the
        # route in its inclusion context; both hold their own responses).
        route: Any = context
        path = route.path_format
        if path == "/readyz":
            _declare(route, 200, {"description": "Ready."}, Ready)
            _declare(route, 503, {"description": "The database is unreachable."}, NotReady)
        for method in sorted(route.methods):
            for status, description in error_statuses(method, path, route).items():
                response: dict[str, Any] = {"description": description}
                if status in (429, 503):
                    response["headers"] = _RETRY_AFTER
                _declare(route, status, response, ErrorBody)


def _operation_ids(schema: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (method.upper(), path): operation["operationId"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }


def _document_constitution(schema: dict[str, Any]) -> None:
    """The constitution route reads its body itself (JSON or YAML): declare the JSON
    body's real shape, so clients (and generated requests) see what is accepted."""
    body = Constitution.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema["components"].setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components["Constitution"] = body
    content = schema["paths"]["/v1/constitutions"]["post"]["requestBody"]["content"]
    content["application/json"]["schema"] = {"$ref": "#/components/schemas/Constitution"}


def _post_process(schema: dict[str, Any], settings: Settings) -> None:
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    _document_constitution(schema)
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] == "limit":
                    limit = parameter["schema"]
                    limit["maximum"] = settings.page_limit_max
                    if isinstance(limit.get("default"), int):
                        limit["default"] = min(limit["default"], settings.page_limit_max)
    for (method, path), (like, status, description) in ALSO_ANSWERS.items():
        responses = schema["paths"][path][method.lower()]["responses"]
        responses.setdefault(str(status), {**responses[str(like)], "description": description})
    ids = _operation_ids(schema)
    for (method, path, status), targets in LINKS.items():
        response = schema["paths"][path][method.lower()]["responses"][str(status)]
        links = response.setdefault("links", {})
        for target_method, target_path, parameters in targets:
            operation_id = ids[(target_method, target_path)]
            links[operation_id] = {"operationId": operation_id, "parameters": parameters}


def install(app: FastAPI, settings: Settings) -> None:
    """Declare the honest responses; call it once the routers are included."""
    _declare_responses(app)
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's generator; it caches in app.openapi_schema
            _post_process(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
