"""The state the HTTP routes share, and the demo's routes; ``create_app`` (routes.py) builds the ASGI app.

The text-embeddings-inference routes (/predict, /tokenize, /decode, /info) are in tei.py.

Request path: auth → a slot among --max-concurrent-requests (429 when none) → model ready? → body
(bounded) → shape (pydantic models) → each text through the engine's record rules (in a worker
thread for a large body) → ``Engine.lookup`` (shared by the requests of one event-loop iteration)
→ ``Engine.prepare``: the misses de-duplicated and encoded once (in a worker thread for a large
body) → the batcher gathers the misses of concurrent requests and one worker thread runs
``Engine.infer`` on them (length groups; the engine stores the results) → each caller's
``Pending.finish`` puts its results in order. For a large body only C-speed passes (hashing,
encoding the answer) stay on the event loop. What a connection may hold before and around a route (read
timeouts, the connection cap) is connections.py's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..engine import BadRecord, Engine, ResultCache, ResultDict, Verdict
from ..engine.memory import release_when_freed
from ..engine.records import Input
from ..engine.rediscache import RedisCache
from ..errors import (
    BackendError,
    BadRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    SentictlError,
    Unhealthy,
    http_status,
)
from . import models as m
from .batcher import Batcher, CacheReader
from .metrics import Metrics
from .publisher import Publisher
from .responses import demo_shape, invalid, json_response, refused, timed
from .settings import DEFAULT_CONCURRENT_REQUESTS, ServeSettings

log = logging.getLogger("sentictl.serve")

_SENTIMENT_HINT = ' (expected {"text": "..."} or {"texts": ["...", ...]})'
# Bodies up to this size are parsed and checked on the event loop; larger ones in a worker thread,
# since decoding, JSON parsing and the record rules (a blank check walks every character of an
# all-blank text) grow with the body and would stall every other request meanwhile.
_INLINE_BODY_BYTES = 16 * 1024


class Service:
    """State shared by the routes: the engine (once loaded), cache, batcher, publisher and metrics."""

    def __init__(
        self,
        settings: ServeSettings,
        load: Callable[[], Any],
        cache: ResultCache | RedisCache | None,
        on_fatal: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.load = load
        self.cache = cache
        self.models = m.request_models(settings.max_client_batch_size)
        self.on_fatal = on_fatal or (lambda message: None)
        self.metrics = Metrics()
        if cache is not None:
            cache.on_failure = lambda op: self.metrics.cache_failures.labels(op).inc()
        self.engine: Engine | None = None
        self.reader: CacheReader | None = None
        self.batcher: Batcher | None = None
        self.publisher: Publisher | None = None
        self.started = time.time()
        self._loader: asyncio.Task[None] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._reload_lock = asyncio.Lock()  # one reload at a time
        self.max_concurrent_requests = settings.max_concurrent_requests or DEFAULT_CONCURRENT_REQUESTS
        self._in_progress = 0
        # Read when scraped: a set() on every request and answer cost ~4 % of the cache-hit path.
        self.metrics.in_progress.set_function(lambda: self._in_progress)

    # -------------------------------------------------------------- lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Load the model in the background; on shutdown drain the batcher and the publisher."""
        # In the background so the port opens at once and /health can say "not yet".
        loop = asyncio.get_running_loop()
        self._loader = loop.create_task(self._load())
        hup = _on_signal(loop, "SIGHUP", lambda: self.request_reload("SIGHUP"))
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            if self._reloading is not None and not self._reloading.done():
                self._reloading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reloading
            if not self._loader.done():
                self._loader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._loader
            if self.batcher is not None:
                await self.batcher.stop()
            if self.publisher is not None:
                await asyncio.to_thread(self.publisher.close)
            if self.cache is not None:
                self.cache.close()
            log.info("stopped")

    async def _load(self) -> None:
        try:
            model = await asyncio.to_thread(self.load)
            engine = Engine(model, self.cache, max_chars=self.settings.max_chars)
            if self.settings.publish:
                if self.settings.kafka is None:
                    raise SentictlError("--publish needs the Kafka settings (ServeSettings.kafka)")
                publisher = Publisher(self.settings.publish, self.settings.kafka, self.metrics)
                await asyncio.to_thread(publisher.start, engine.labels)
                self.publisher = publisher
        except SentictlError as exc:
            self.on_fatal(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - report anything that stops start-up as one line
            self.on_fatal(f"cannot start: {type(exc).__name__}: {exc}")
            return
        self.reader = CacheReader(engine) if self.cache is not None else None
        self.batcher = Batcher(
            engine,
            self.metrics,
            max_batch_tokens=self.settings.max_batch_tokens,
            max_wait_ms=self.settings.max_wait_ms,
            max_batch_size=engine.max_batch_size,
        )
        self.batcher.start()
        self.engine = engine
        self.metrics.ready.set(1)
        self.metrics.show_model(engine)
        info = engine.info()
        log.info(
            "model %s ready (%s on %s); serving on http://%s:%d",
            engine.name,
            info["variant"],
            info["provider"],
            self.settings.host,
            self.settings.port,
        )

    # -------------------------------------------------------------- reloading the model
    def request_reload(self, why: str) -> None:
        """Reload the model in the background (SIGHUP); one asked for during a reload runs after it."""
        if self.engine is None:
            log.info("%s: the model is still loading; nothing to reload yet", why)
            return
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload_loop(why))

    async def _reload_loop(self, why: str) -> None:
        while True:
            self._reload_again = False
            await self.reload(why)
            if not self._reload_again:
                return

    async def reload(self, why: str) -> dict[str, Any]:
        """Load and verify the model folder again beside the running model, then switch to it between batches.

        Requests already admitted finish on the model they started on (their batcher jobs carry it);
        the old model is freed once the last of them is answered. A folder that fails to load or
        verify leaves the running model serving: one log line, sentictl_reload_failures_total.
        Returns what /admin/reload answers.
        """
        async with self._reload_lock:
            return await self._reload(why)

    async def _reload(self, why: str) -> dict[str, Any]:
        old = self.engine
        if old is None or self.batcher is None:
            raise Unhealthy("the model is still loading; retry when GET /health answers 200")
        started = time.perf_counter()
        log.info("%s: loading the model folder again beside %s (%s)", why, old.name, old.fingerprint)
        try:
            model = await asyncio.to_thread(self.load)
            engine = Engine(model, self.cache, max_chars=self.settings.max_chars)
            if self.publisher is not None and engine.labels != old.labels:
                # --publish checked its topics for the labels it started with.
                raise SentictlError(
                    f"its labels ({', '.join(engine.labels)}) differ from the running model's "
                    f"({', '.join(old.labels)}), whose topics --publish set up: restart the server"
                )
        except Exception as exc:  # noqa: BLE001 - whatever stops the new model, the old one keeps serving
            message = str(exc) if isinstance(exc, SentictlError) else f"{type(exc).__name__}: {exc}"
            self.metrics.reload_failures.inc()
            log.error("reload failed, still serving %s (%s): %s", old.name, old.fingerprint, message)
            return {"status": "failed", "error": message, "fingerprint": old.fingerprint}
        # The switch: everything below runs on the event loop without awaiting, so no request sees half of it.
        self.engine = engine
        self.batcher.engine = engine
        if self.reader is not None:
            self.reader = CacheReader(engine)
        self.metrics.show_model(engine, previous=old)
        self.metrics.reloads.inc()
        gone = old.fingerprint
        release_when_freed(old.model, lambda: log.info("the previous model (%s) is freed", gone))
        seconds = time.perf_counter() - started
        log.info("reloaded: %s %s → %s in %.2f s", engine.name, old.fingerprint, engine.fingerprint, seconds)
        return {
            "status": "reloaded",
            "fingerprint": engine.fingerprint,
            "previous": old.fingerprint,
            "seconds": round(seconds, 3),
        }

    async def admin_reload(self, request: Request) -> Response:
        """POST /admin/reload: reload the model now (only with --api-key; SIGHUP does the same)."""
        if not self.settings.token:
            raise NotFound("POST /admin/reload is only served with --api-key (send the server SIGHUP to reload)")
        # Shielded: a client that hangs up does not cancel a reload half-way (it completes or fails on its own).
        outcome = await asyncio.shield(asyncio.get_running_loop().create_task(self.reload("POST /admin/reload")))
        if outcome["status"] != "reloaded":
            raise BackendError(
                f"reload failed, the previous model ({outcome['fingerprint']}) is still serving: {outcome['error']}"
            )
        return json_response(outcome)

    # -------------------------------------------------------------- shared request steps
    def ready(self) -> Engine:
        """The engine, or Unhealthy while the model is loading."""
        if self.engine is None:
            raise Unhealthy("the model is still loading; retry when GET /health answers 200")
        return self.engine

    async def body(self, request: Request) -> bytes:
        """The request body, refused as soon as it is over --max-body-bytes (declared or streamed)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise BadRequest("invalid Content-Length header") from None
            if size > limit:
                raise PayloadTooLarge(
                    f"request body of {declared} bytes is over the limit of {limit} bytes (--max-body-bytes)"
                )
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes (--max-body-bytes)")
                chunks.append(chunk)
        except ClientDisconnect:
            raise BadRequest("the client disconnected while sending the body") from None
        return b"".join(chunks)

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Count a classification request in progress, or refuse it (Overloaded, 429) over --max-concurrent-requests."""
        limit = self.max_concurrent_requests
        if self._in_progress >= limit:
            raise Overloaded(
                f"{self._in_progress} requests are in progress, the most this server takes at once is "
                f"{limit} (--max-concurrent-requests); retry shortly"
            )
        self._in_progress += 1
        try:
            yield
        finally:
            self._in_progress -= 1

    @staticmethod
    async def off_loop(size: int, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the event loop for a small body, in a worker thread for a large one."""
        if size <= _INLINE_BODY_BYTES:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    @staticmethod
    def validate(model: type[BaseModel], doc: Any, hint: str | dict[str, str] = "") -> Any:
        """The request model of a parsed JSON body, or the HttpError its validation errors make."""
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            raise invalid(exc.errors(include_url=False), hint) from None

    async def classify(
        self, engine: Engine, texts: list[str | Input], logits: bool = False
    ) -> tuple[list[ResultDict], dict[str, float]]:
        """Results in input order for texts or Inputs, through the engine once: its lookup (shared with
        the requests of this event-loop iteration), its misses encoded, inferred in a batch the batcher
        coalesces, merged back. logits: keep the raw logits (a cached result stored without them is a miss)."""
        inputs = engine.inputs(texts)
        reader = self.reader
        if reader is not None and reader.engine is not engine:
            reader = CacheReader(engine)  # a request admitted before a reload: the old model's cache entries
        found = await reader.lookup(inputs, logits) if reader is not None else None
        # Encoding is CPU work: on the event loop for a few short texts (a thread hop costs more), else off it.
        size = sum(len(x.text) + len(x.pair or "") for x in inputs)
        pending = await self.off_loop(size, functools.partial(engine.prepare, inputs, logits=logits, found=found))
        self.metrics.cache_hits.inc(len(pending.known))
        self.metrics.cache_misses.inc(len(pending.misses))
        timings = {"queue": 0.0, "inference": 0.0}
        fresh: list[ResultDict] = []
        if pending.misses:
            assert self.batcher is not None  # set together with the engine
            job = await self.batcher.submit(pending.misses, engine)
            timings = {"queue": job.started - job.enqueued, "inference": job.finished - job.started}
            fresh = job.future.result()
        results = pending.finish(fresh)
        if self.publisher is not None:
            self.publisher.publish(results)
        return results, timings

    # -------------------------------------------------------------- routes
    async def sentiment(self, request: Request) -> Response:
        """Classify a raw text body (the original demo's call) or JSON {"text"} / {"texts"}."""
        with self.admission():
            started = time.perf_counter()
            engine = self.ready()
            body = await self.body(request)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            as_json = ctype == "application/json" or ctype.endswith("+json")
            texts, listed = await self.off_loop(len(body), self.sentiment_texts, engine, body, as_json)
            results, timings = await self.classify(engine, texts)
            return timed(
                [demo_shape(r) for r in results] if listed else demo_shape(results[0]),
                started,
                timings,
                engine.fingerprint,
            )

    def sentiment_texts(self, engine: Engine, body: bytes, as_json: bool) -> tuple[list[str], bool]:
        """The accepted texts of a /sentiment body, and whether they came as a list ({"texts": [...]})."""
        if as_json:
            doc = parse_json(body)
            if isinstance(doc, dict) and "texts" in doc:
                texts = self.validate(self.models.sentiment_texts, doc, _SENTIMENT_HINT).texts
                return [accept(engine.check(t), f"texts[{i}]") for i, t in enumerate(texts)], True
            text = self.validate(self.models.sentiment_text, doc, _SENTIMENT_HINT).text
            return [accept(engine.check(text), "text")], False
        return [accept(engine.check_bytes(body), "body")], False

    async def health(self) -> Response:
        """200 once the model is loaded, 503 before (no token needed: probes call it)."""
        if self.engine is None:
            error = Unhealthy("the model is still loading")
            return json_response({"status": "loading", **error.body()}, http_status(Unhealthy))
        return json_response({"status": "ok"})

    async def prometheus(self) -> Response:
        """Prometheus metrics in the text format."""
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _on_signal(loop: asyncio.AbstractEventLoop, name: str, callback: Callable[[], None]) -> bool:
    """Run callback on the event loop when the signal comes (where the platform has it); whether it was set."""
    sig = getattr(signal, name, None)
    if sig is None:
        return False
    try:
        loop.add_signal_handler(sig, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no signals here
        return False
    return True


def parse_json(body: bytes) -> Any:
    """The parsed JSON body, or BadRequest (not UTF-8, malformed)."""
    try:
        return orjson.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8 (byte {exc.start})", reason="invalid_utf8") from None
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", reason="bad_json") from None


def accept(verdict: Verdict, where: str) -> str:
    """The normalised text of an accepted record; a refused one is raised as its HttpError."""
    if isinstance(verdict, BadRecord):
        raise refused(verdict, where)
    return verdict.text
