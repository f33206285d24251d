"""Routing and the OpenAPI document: plain Starlette routes serve, a FastAPI app documents them.

Routes: the demo's POST /sentiment; text-embeddings-inference's POST /predict (also POST / and
/invocations), /tokenize, /decode, GET /info, and its health routes GET /health, / and /ping;
GET /metrics and /openapi.json.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from fastapi import FastAPI, Security
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..engine import ResultCache
from ..errors import (
    BackendError,
    BadRequest,
    ConnectionsFull,
    EmptyInput,
    HttpError,
    InputTooLarge,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    TokenizerFailed,
    TooManyTokens,
    Unauthorized,
    Unhealthy,
    ValidationFailed,
    http_status,
)
from . import models as m
from .app import Service
from .metrics import MetricsMiddleware
from .responses import (
    json_response,
    on_framework_error,
    on_http_error,
    on_unexpected,
)
from .settings import ServeSettings
from .tei import TeiRoutes


def _errors(*kinds: type[HttpError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these error types, with their statuses from the one table."""
    out: dict[int | str, dict[str, Any]] = {}
    for kind in kinds:
        entry = out.setdefault(http_status(kind), {"model": m.ErrorResponse, "description": ""})
        entry["description"] = " / ".join(filter(None, [entry["description"], _doc(kind)]))
    return out


def _doc(kind: type) -> str:
    return " ".join((kind.__doc__ or "").split())


def create_app(settings: ServeSettings, load: Callable[[], Any], cache: ResultCache | None = None,
               on_fatal: Callable[[str], None] | None = None) -> Any:
    """The ASGI application: plain Starlette routes inside the metrics middleware.

    Requests are served by Starlette routes; FastAPI only builds /openapi.json, from the same
    pydantic models the routes validate with (a documentation app that never serves a request).
    Serving through FastAPI cost ~30 % of the cache-hit path (dependency solving, its telemetry
    and exit-stack middleware per request: 3,500 → 2,300 hits/s in bench_serve), for nothing
    these routes use.
    """
    service = Service(settings, load, cache, on_fatal)
    tei = TeiRoutes(service)
    docs = FastAPI(title="sentictl", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                   description="Financial-sentiment classification (ONNX Runtime) with dynamic batching; "
                               "text-embeddings-inference's classification API.")
    _add_routes(docs, service, tei, _guard(settings.token))
    authorize = _authorizer(settings.token)

    def route(path: str, handler: Callable, methods: list[str], *, secured: bool, with_request: bool) -> Route:
        async def endpoint(request: Request) -> Response:
            if secured:
                authorize(request)
            return await (handler(request) if with_request else handler())

        return Route(path, endpoint, methods=methods)

    schema: list[dict[str, Any]] = []

    async def openapi(request: Request) -> Response:
        if not schema:
            schema.append(docs.openapi())
        return json_response(schema[0])

    routes = [
        route("/sentiment", service.sentiment, ["POST"], secured=True, with_request=True),
        # TEI serves a classifier's predictions at /predict, / and /invocations (SageMaker's name).
        *(route(path, tei.predict, ["POST"], secured=True, with_request=True)
          for path in ("/predict", "/", "/invocations")),
        route("/tokenize", tei.tokenize, ["POST"], secured=True, with_request=True),
        route("/decode", tei.decode, ["POST"], secured=True, with_request=True),
        # Starlette answers HEAD on GET routes too; load balancers' probes may rely on it. TEI's health
        # answers at /, /health and /ping (SageMaker's name).
        *(route(path, service.health, ["GET"], secured=False, with_request=False)
          for path in ("/health", "/", "/ping")),
        route("/info", tei.info, ["GET"], secured=True, with_request=False),
        route("/metrics", service.prometheus, ["GET"], secured=True, with_request=False),
        # Without --api-key it answers 404 (anyone could make the server reload); SIGHUP works either way.
        route("/admin/reload", service.admin_reload, ["POST"], secured=True, with_request=True),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=service.lifespan,
                    exception_handlers={HttpError: on_http_error, HTTPException: on_framework_error,
                                        Exception: on_unexpected})
    # A trailing-slash redirect would echo the request's Host header into Location: 404 instead.
    app.router.redirect_slashes = False
    app.state.service = service
    wrapped = MetricsMiddleware(app, service.metrics, routes={r.path for r in routes})
    wrapped.service = service  # type: ignore[attr-defined]
    return wrapped


def _authorizer(token: str | None) -> Callable[[Request], None]:
    """The bearer-token check the routes run (documented by _guard's security scheme)."""
    expected = token.encode() if token else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer TOKEN')")

    return authorize


def _add_routes(app: FastAPI, service: Service, tei: TeiRoutes, guard: Callable | None) -> None:
    """Document the routes on the documentation app, each from its models and the error types it may raise."""
    secured = [Security(guard)] if guard is not None else []
    refusals = (Unauthorized,) if guard is not None else ()
    # RequestTimeout and ConnectionsFull come from the connection guard (connections.py), before or beside the route.
    reading = (BadRequest, EmptyInput, *refusals, RequestTimeout, PayloadTooLarge, InputTooLarge, ValidationFailed,
               Unhealthy, ConnectionsFull)
    classifying = _errors(*reading, TooManyTokens, Overloaded, BackendError)
    requests = service.models
    sentiment_body, components = m.request_body(
        {"text/plain": str, "application/json": requests.sentiment_text | requests.sentiment_texts})
    bodies = {}
    for name, model in (("predict", requests.predict), ("tokenize", requests.tokenize), ("decode", requests.decode)):
        bodies[name], more = m.request_body({"application/json": model})
        components.update(more)

    app.add_api_route(
        "/sentiment", service.sentiment, methods=["POST"], dependencies=secured, openapi_extra=sentiment_body,
        response_model=m.SentimentResult | list[m.SentimentResult], responses=classifying,
        summary="Classify raw text (the demo's call) or JSON {text} / {texts}",
    )
    for path, summary in (("/predict", "text-embeddings-inference's classification"),
                          ("/", "text-embeddings-inference's classification (as /predict)"),
                          ("/invocations", "text-embeddings-inference's classification (as /predict; SageMaker)")):
        app.add_api_route(
            path, tei.predict, methods=["POST"], dependencies=secured, openapi_extra=bodies["predict"],
            response_model=list[m.Prediction] | list[list[m.Prediction]], responses=classifying, summary=summary,
            name=f"predict{path.replace('/', '_')}",
        )
    app.add_api_route(
        "/tokenize", tei.tokenize, methods=["POST"], dependencies=secured, openapi_extra=bodies["tokenize"],
        response_model=list[list[m.SimpleToken]], responses=_errors(*reading),
        summary="text-embeddings-inference's tokenization: each text's tokens as the model sees them",
    )
    app.add_api_route(
        "/decode", tei.decode, methods=["POST"], dependencies=secured, openapi_extra=bodies["decode"],
        response_model=list[str], responses=_errors(*reading, TokenizerFailed),
        summary="text-embeddings-inference's decoding: the text of each id sequence",
    )
    loading = {http_status(Unhealthy): {"model": m.Loading, "description": _doc(Unhealthy)}}
    gets: list[tuple[str, Callable, list, dict[str, Any]]] = [
        *((path, service.health, [], {"response_model": m.Health, "responses": loading,
                                      "name": f"health{path.replace('/', '_')}"})
          for path in ("/health", "/", "/ping")),
        ("/info", tei.info, secured, {"response_model": m.Info, "responses": _errors(*refusals, Unhealthy)}),
        ("/metrics", service.prometheus, secured,
         {"response_class": PlainTextResponse, "responses": _errors(*refusals)}),
    ]
    for path, endpoint, dependencies, documented in gets:
        app.add_api_route(path, endpoint, methods=["GET"], dependencies=dependencies, **documented)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # The bodies the POST routes read themselves are documented from their models, beside FastAPI's own.
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _guard(token: str | None) -> Callable | None:
    """The bearer-token check as a FastAPI security dependency, so /openapi.json documents it; or None."""
    if not token:
        return None
    expected = token.encode()
    bearer = HTTPBearer(auto_error=False, description="--token / SENTICTL_TOKEN")

    # A default, not Annotated[...]: the annotation is a string here and `bearer` a local name.
    async def authorize(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:  # noqa: B008
        given = credentials.credentials.strip().encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer TOKEN')")

    return authorize
