"""Routing and the OpenAPI document: plain Starlette routes serve, a FastAPI app documents them.

Routes: the demo's POST /sentiment; text-embeddings-inference's POST /predict (also POST / and
/invocations), /tokenize, /decode, GET /info, and its health routes GET /health, / and /ping;
GET /metrics and /openapi.json.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Security
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from .. import __version__
from ..engine import ResultCache
from ..engine.rediscache import RedisCache
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
from .responses import json_response, on_framework_error, on_http_error, on_unexpected
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


# A route's handler: called with the request (POST routes) or without (GET routes).
Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class _Spec:
    """One route: served by Starlette, documented on the FastAPI app from ``doc`` (None: not documented)."""

    path: str
    handler: Handler
    method: str
    secured: bool
    with_request: bool
    doc: dict[str, Any] | None


def create_app(
    settings: ServeSettings,
    load: Callable[[], Any],
    cache: ResultCache | RedisCache | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> ServeApp:
    """The ASGI application: plain Starlette routes inside the metrics middleware.

    Requests are served by Starlette routes; FastAPI only builds /openapi.json, from the same
    pydantic models the routes validate with (a documentation app that never serves a request).
    Serving through FastAPI cost ~30 % of the cache-hit path (dependency solving, its telemetry
    and exit-stack middleware per request: 3,500 → 2,300 hits/s in bench_serve), for nothing
    these routes use.
    """
    service = Service(settings, load, cache, on_fatal)
    specs, components = _specs(service, TeiRoutes(service), secured=bool(settings.token))
    docs = FastAPI(
        title="sentictl",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Financial-sentiment classification (ONNX Runtime) with dynamic batching; "
        "text-embeddings-inference's classification API.",
    )
    _document(docs, specs, components, settings.token)
    authorize = _authorizer(settings.token)

    def route(spec: _Spec) -> Route:
        handler, secured, with_request = spec.handler, spec.secured, spec.with_request

        async def endpoint(request: Request) -> Response:
            if secured:
                authorize(request)
            return await (handler(request) if with_request else handler())

        return Route(spec.path, endpoint, methods=[spec.method])

    schema: list[dict[str, Any]] = []

    async def openapi(request: Request) -> Response:
        if not schema:
            schema.append(docs.openapi())
        return json_response(schema[0])

    routes = [*(route(spec) for spec in specs), Route("/openapi.json", openapi, methods=["GET"])]
    app = Starlette(
        routes=routes,
        lifespan=service.lifespan,
        exception_handlers={HttpError: on_http_error, HTTPException: on_framework_error, Exception: on_unexpected},
    )
    # A trailing-slash redirect would echo the request's Host header into Location: 404 instead.
    app.router.redirect_slashes = False
    app.state.service = service
    return ServeApp(app, service, routes={r.path for r in routes})


class ServeApp(MetricsMiddleware):
    """The ASGI application create_app builds (the routes inside the metrics middleware) and the Service they share."""

    def __init__(self, app: ASGIApp, service: Service, routes: Collection[str]):
        super().__init__(app, service.metrics, routes)
        self.service = service


def _specs(service: Service, tei: TeiRoutes, secured: bool) -> tuple[list[_Spec], dict[str, Any]]:
    """Every route once: path, handler, whether it needs the token, and what documents it (with the
    request-body schemas the documentation needs beside FastAPI's own)."""
    refusals: tuple[type[HttpError], ...] = (Unauthorized,) if secured else ()
    # RequestTimeout and ConnectionsFull come from the connection guard (connections.py), before or beside the route.
    reading: tuple[type[HttpError], ...] = (
        BadRequest,
        EmptyInput,
        *refusals,
        RequestTimeout,
        PayloadTooLarge,
        InputTooLarge,
        ValidationFailed,
        Unhealthy,
        ConnectionsFull,
    )
    bodies, components = _request_bodies(service.models)
    specs = [
        *_classifying(service, tei, bodies, _errors(*reading, TooManyTokens, Overloaded, BackendError)),
        *_tokenizing(tei, bodies, reading),
        *_reporting(service, tei, refusals),
    ]
    return specs, components


def _request_bodies(requests: m.RequestModels) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The documented request body of each POST route by name, and the component schemas they refer to."""
    bodies: dict[str, dict[str, Any]] = {}
    bodies["sentiment"], components = m.request_body(
        {"text/plain": str, "application/json": requests.sentiment_text | requests.sentiment_texts}
    )
    for name, model in (("predict", requests.predict), ("tokenize", requests.tokenize), ("decode", requests.decode)):
        bodies[name], more = m.request_body({"application/json": model})
        components.update(more)
    return bodies, components


def _post(path: str, handler: Handler, **doc: Any) -> _Spec:
    """A POST route given the request, behind the token (documented unless doc is empty)."""
    return _Spec(path, handler, "POST", True, True, doc or None)


def _get(path: str, handler: Handler, secure: bool = True, **doc: Any) -> _Spec:
    """A documented GET route called without the request."""
    return _Spec(path, handler, "GET", secure, False, doc)


def _classifying(
    service: Service, tei: TeiRoutes, bodies: dict[str, dict[str, Any]], errors: dict[int | str, dict[str, Any]]
) -> list[_Spec]:
    """The demo's /sentiment and TEI's classification, which TEI serves at /predict, / and /invocations
    (SageMaker's name)."""
    predict = (
        ("/predict", "text-embeddings-inference's classification"),
        ("/", "text-embeddings-inference's classification (as /predict)"),
        ("/invocations", "text-embeddings-inference's classification (as /predict; SageMaker)"),
    )
    sentiment = _post(
        "/sentiment",
        service.sentiment,
        openapi_extra=bodies["sentiment"],
        response_model=m.SentimentResult | list[m.SentimentResult],
        responses=errors,
        summary="Classify raw text (the demo's call) or JSON {text} / {texts}",
    )
    return [
        sentiment,
        *(
            _post(
                path,
                tei.predict,
                openapi_extra=bodies["predict"],
                response_model=list[m.Prediction] | list[list[m.Prediction]],
                responses=errors,
                summary=summary,
                name=f"predict{path.replace('/', '_')}",
            )
            for path, summary in predict
        ),
    ]


def _tokenizing(tei: TeiRoutes, bodies: dict[str, dict[str, Any]], reading: tuple[type[HttpError], ...]) -> list[_Spec]:
    """TEI's /tokenize and /decode."""
    return [
        _post(
            "/tokenize",
            tei.tokenize,
            openapi_extra=bodies["tokenize"],
            response_model=list[list[m.SimpleToken]],
            responses=_errors(*reading),
            summary="text-embeddings-inference's tokenization: each text's tokens as the model sees them",
        ),
        _post(
            "/decode",
            tei.decode,
            openapi_extra=bodies["decode"],
            response_model=list[str],
            responses=_errors(*reading, TokenizerFailed),
            summary="text-embeddings-inference's decoding: the text of each id sequence",
        ),
    ]


def _reporting(service: Service, tei: TeiRoutes, refusals: tuple[type[HttpError], ...]) -> list[_Spec]:
    """TEI's health routes (/health, / and /ping: open to all; Starlette answers HEAD on GET routes
    too, for load balancers' probes), /info, /metrics and the reload trigger."""
    loading = {http_status(Unhealthy): {"model": m.Loading, "description": _doc(Unhealthy)}}
    return [
        *(
            _get(
                path,
                service.health,
                False,
                response_model=m.Health,
                responses=loading,
                name=f"health{path.replace('/', '_')}",
            )
            for path in ("/health", "/", "/ping")
        ),
        _get("/info", tei.info, response_model=m.Info, responses=_errors(*refusals, Unhealthy)),
        _get("/metrics", service.prometheus, response_class=PlainTextResponse, responses=_errors(*refusals)),
        # Without --api-key it answers 404 (anyone could make the server reload); SIGHUP works either way.
        _post("/admin/reload", service.admin_reload),
    ]


def _document(app: FastAPI, specs: list[_Spec], components: dict[str, Any], token: str | None) -> None:
    """Document the routes on the documentation app, each from its models and the error types it may raise."""
    guard = _guard(token)
    secured = [Security(guard)] if guard is not None else []
    for spec in specs:
        if spec.doc is not None:
            app.add_api_route(
                spec.path, spec.handler, methods=[spec.method], dependencies=secured if spec.secured else [], **spec.doc
            )
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # The bodies the POST routes read themselves are documented from their models, beside FastAPI's own.
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _authorizer(token: str | None) -> Callable[[Request], None]:
    """The bearer-token check every secured route runs (documented by _guard's security scheme)."""
    expected = token.encode() if token else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer TOKEN')")

    return authorize


def _guard(token: str | None) -> Callable[..., Awaitable[None]] | None:
    """The bearer scheme as a FastAPI security dependency, so /openapi.json documents it; or None.

    The documentation app never serves a request, so this never runs: _authorizer is the check."""
    if not token:
        return None
    bearer = HTTPBearer(auto_error=False, description="--token / SENTICTL_TOKEN")

    # A default, not Annotated[...]: the annotation is a string here and `bearer` a local name.
    async def authorize(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:  # noqa: B008
        """Documents the bearer scheme (see _authorizer)."""

    return authorize
