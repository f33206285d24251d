"""`sentictl serve`: the HTTP front end (Starlette on uvicorn) with a micro-batcher before the model.

Request path: parse → cache lookup (hits answered at once) → misses queued to the batcher →
one worker thread runs ``classify_cached`` on a coalesced batch → each caller gets its slice.
The queue is bounded (429 when full) and the model loads in the background, so the port opens
at once and ``/health`` answers 503 until the model is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import queue
import re
import signal
import string
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import orjson
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import __version__
from .cache import ResultCache
from .errors import CacheError, SentictlError
from .pipeline import classify_cached

log = logging.getLogger("sentictl.serve")

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_KNOWN_ROUTES = ("/sentiment", "/predict", "/health", "/info", "/metrics", "/openapi.json")


@dataclass
class ServeSettings:
    """Everything `sentictl serve` needs besides the model and the cache."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 8192
    max_body_bytes: int = 1 << 20
    max_client_batch_size: int = 64
    max_queue: int = 1024
    token: str | None = None
    publish: str | None = None
    bootstrap: str | None = None
    kafka: dict[str, Any] = field(default_factory=dict)
    access_log: bool = False
    graceful_timeout: float = 30.0


class ApiError(Exception):
    """An error answered as JSON ``{"error", "error_type"}`` with an HTTP status."""

    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


class Overloaded(Exception):
    """The batcher's queue is full."""


# ---------------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one test process)."""

    def __init__(self) -> None:
        # The *_created series only double the output; scrapers do not need them.
        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        self.requests = Counter("sentictl_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "sentictl_request_duration_seconds", "HTTP request latency.", ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "sentictl_batch_size", "Texts per inference batch formed by the micro-batcher.", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.batch_tokens = Histogram(
            "sentictl_batch_tokens", "Tokens per inference batch (before padding).", registry=r,
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
        )
        self.inference = Histogram(
            "sentictl_inference_duration_seconds", "Time per inference batch (classify_cached in the worker).", registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue_depth = Gauge("sentictl_queue_depth", "Texts waiting for the inference worker.", registry=r)
        self.cache_hits = Counter("sentictl_cache_hits", "Texts answered from the result cache.", registry=r)
        self.cache_misses = Counter("sentictl_cache_misses", "Texts that needed inference.", registry=r)
        self.published = Counter("sentictl_published", "Results delivered to the fan-out topic.", registry=r)
        self.publish_failures = Counter(
            "sentictl_publish_failures", "Results that could not be delivered after all retries.", registry=r
        )
        self.publish_retries = Counter("sentictl_publish_retries", "Fan-out sends retried after a failure.", registry=r)
        self.publish_pending = Gauge("sentictl_publish_pending", "Results waiting for the broker's acknowledgement.", registry=r)
        self.ready = Gauge("sentictl_model_ready", "1 once the model is loaded.", registry=r)
        self.cache_failures = Counter(
            "sentictl_cache_failures", "Result-cache operations that failed (the texts were answered uncached).",
            ["op"], registry=r,
        )
        for op in ("read", "write", "damaged"):
            self.cache_failures.labels(op)


class MetricsMiddleware:
    """Counts every HTTP response by route and status and times it (pure ASGI, no body buffering)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in _KNOWN_ROUTES else "other"
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


# ---------------------------------------------------------------------------------- batcher
@dataclass
class _Job:
    texts: list[str]
    lengths: list[int]
    tokens: int
    future: asyncio.Future
    enqueued: float
    started: float = 0.0
    finished: float = 0.0


class _SafeCache:
    """The cache as the worker uses it: a failing read or write is logged, and the answer still goes out."""

    def __init__(self, cache: ResultCache):
        self.cache = cache

    def get_many(self, namespace: str, texts: Sequence[str]) -> dict[str, dict[str, Any]]:
        try:
            return self.cache.get_many(namespace, texts)
        except CacheError as exc:
            log.warning("%s; treating as cache misses", exc)
            return {}

    def put_many(self, namespace: str, results: Any) -> int:
        try:
            return self.cache.put_many(namespace, results)
        except CacheError as exc:
            log.warning("%s; results were answered but not cached", exc)
            return 0


class Batcher:
    """Coalesces concurrent requests into inference batches under a token budget and a wait limit."""

    def __init__(self, model: Any, cache: ResultCache | None, metrics: Metrics, *, max_batch_tokens: int,
                 max_wait_ms: float, max_queue: int, max_batch_size: int):
        self.model = model
        self.cache = _SafeCache(cache) if cache is not None else None
        self.metrics = metrics
        self.max_batch_tokens = max(1, max_batch_tokens)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max(1, max_queue)
        self.max_batch_size = max(1, max_batch_size)
        self._pending: deque[_Job] = deque()
        self._queued_texts = 0
        self._queued_tokens = 0
        self._wake = asyncio.Event()
        # One thread: ORT already uses every core for one batch, two batches at once would only thrash.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentictl-infer")
        self._task: asyncio.Task | None = None
        # On CPU, padding costs as much as real tokens, so an arrival-order batch runs faster split
        # by length than padded to its longest text (see length_groups).
        # Accelerators want the biggest batch instead; static-shape variants pad to a fixed size anyway.
        self.group_by_length = getattr(model, "provider", "cpu") == "cpu" and not getattr(model, "static_shape", None)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sentictl-batcher")

    async def stop(self) -> None:
        """Stop batching (after in-flight requests were answered) and release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(Overloaded("server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], lengths: list[int]) -> _Job:
        """Queue texts (with their token counts) for inference and wait for their results.

        Raises Overloaded at once when the queue is full.
        """
        if self._queued_texts + len(texts) > self.max_queue:
            raise Overloaded(f"the inference queue is full ({self._queued_texts} texts waiting, --max-queue {self.max_queue})")
        loop = asyncio.get_running_loop()
        tokens = sum(lengths)
        job = _Job(texts, lengths, tokens, loop.create_future(), loop.time())
        self._pending.append(job)
        self._queued_texts += len(texts)
        self._queued_tokens += tokens
        self.metrics.queue_depth.set(self._queued_texts)
        self._wake.set()
        await job.future
        return job

    def _full(self) -> bool:
        return self._queued_tokens >= self.max_batch_tokens or self._queued_texts >= self.max_batch_size

    def _take(self) -> list[_Job]:
        batch: list[_Job] = []
        texts = tokens = 0
        while self._pending:
            job = self._pending[0]
            if batch and (tokens + job.tokens > self.max_batch_tokens or texts + len(job.texts) > self.max_batch_size):
                break
            self._pending.popleft()
            self._queued_texts -= len(job.texts)
            self._queued_tokens -= job.tokens
            if job.future.done():  # the client went away while waiting
                continue
            batch.append(job)
            texts += len(job.texts)
            tokens += job.tokens
        self.metrics.queue_depth.set(self._queued_texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        free_since = loop.time()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            # Wait for company until the budget is full or max_wait has passed since the oldest request
            # could first have run. Counting from when the worker became free (not from arrival)
            # lets the callers of the batch just answered rejoin the requests that queued meanwhile,
            # instead of two half-size cohorts alternating forever.
            deadline = max(self._pending[0].enqueued, free_since) + self.max_wait
            while not self._full():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            texts = [t for job in batch for t in job.texts]
            started = loop.time()
            for job in batch:
                job.started = started
            classifier = self.model
            if self.group_by_length:
                lengths = {t: n for job in batch for t, n in zip(job.texts, job.lengths)}
                classifier = LengthGrouped(self.model, lengths)
            try:
                results = await loop.run_in_executor(self._executor, classify_cached, classifier, self.cache, texts)
            except Exception as exc:  # noqa: BLE001 - every waiting caller must hear about it
                log.exception("inference failed for a batch of %d texts", len(texts))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                free_since = loop.time()
                continue
            finished = free_since = loop.time()
            self.metrics.batch_size.observe(len(texts))
            self.metrics.batch_tokens.observe(sum(job.tokens for job in batch))
            self.metrics.inference.observe(finished - started)
            offset = 0
            for job in batch:
                job.finished = finished
                if not job.future.done():
                    job.future.set_result(results[offset : offset + len(job.texts)])
                offset += len(job.texts)


# What one extra ONNX Runtime run costs, in padded tokens: measured for a bert-base int8 model on
# CPU (sorted batches of 8 vs 16 vs 64). Smaller models only split less than they could.
RUN_OVERHEAD_TOKENS = 128


def length_groups(lengths: Sequence[int], overhead: int = RUN_OVERHEAD_TOKENS) -> list[list[int]]:
    """Indices split into ascending-length groups minimising padded tokens plus a per-run overhead."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    # best[j]: cheapest way to run the j shortest texts; each group is padded to its longest (last).
    best = [0.0] + [math.inf] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        width = sizes[j - 1]
        for i in range(j):
            cost = best[i] + overhead + (j - i) * width
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[start[j] : j])
        j = start[j]
    return groups[::-1]


class LengthGrouped:
    """A Classifier that runs the model on length-sorted groups (for classify_cached)."""

    def __init__(self, model: Any, lengths: dict[str, int]):
        self.model = model
        self.cache_namespace = model.cache_namespace
        self.lengths = lengths

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Results in input order, inferred group by group."""
        out: list[Any] = [None] * len(texts)
        for group in length_groups([self.lengths.get(t, 0) for t in texts]):
            for i, result in zip(group, self.model.classify([texts[i] for i in group])):
                out[i] = result
        return out


class CacheReader:
    """Coalesces the cache lookups of requests that arrive together into one ``get_many`` call.

    Every get_many is a round trip to the cache's SQLite thread; under a burst of cache hits
    one shared trip per event-loop iteration instead of one per request is what keeps the
    hit path in the thousands of requests per second.
    """

    def __init__(self, cache: ResultCache):
        self.cache = cache
        self._pending: list[tuple[str, list[str], asyncio.Future]] = []
        self._scheduled = False

    async def get_many(self, namespace: str, texts: list[str]) -> dict[str, dict[str, Any]]:
        """Cached results for texts that have one (may be served by a lookup shared with others)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((namespace, texts, future))
        if not self._scheduled:
            self._scheduled = True
            # call_soon runs after the requests already scheduled in this iteration did their part.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, [], False
        by_namespace: dict[str, list[str]] = {}
        for namespace, texts, _ in pending:
            by_namespace.setdefault(namespace, []).extend(texts)
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for namespace, texts in by_namespace.items():
            try:
                found[namespace] = self.cache.get_many(namespace, list(dict.fromkeys(texts)))
            except CacheError as exc:
                log.warning("%s; treating as cache misses", exc)
                found[namespace] = {}
        for namespace, texts, future in pending:
            if not future.done():
                hits = found[namespace]
                future.set_result({t: hits[t] for t in texts if t in hits})


# ---------------------------------------------------------------------------------- fan-out
def check_topic_template(template: str) -> None:
    """Reject a --publish template with fields other than {label}."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise SentictlError(f"--publish {template!r} is not a valid topic template: {exc}") from None
    for name, spec, conv in fields:
        if name != "label" or spec or conv:
            raise SentictlError(f"--publish {template!r}: the only template field is {{label}}, e.g. '{{label}}-news'")


def text_key(text: str) -> bytes:
    """The record key of a text on the fan-out topic: the sha256 hex of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest().encode()


class Publisher:
    """Produces every result to Kafka from a thread of its own; the HTTP answer never waits on it.

    Failed sends are retried (the producer retries retriable errors itself until its delivery
    timeout, then this class re-sends up to ``attempts`` times); every final failure is counted
    in /metrics and logged with its topic and key.
    """

    def __init__(self, template: str, bootstrap: str, metrics: Metrics, kafka: dict[str, Any] | None = None,
                 *, attempts: int = 3, max_pending: int = 100_000):
        check_topic_template(template)
        self.template = template
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.kafka = {k: v for k, v in (kafka or {}).items() if v is not None}
        self.attempts = max(1, attempts)
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._closing = False
        self._producer: Any = None
        self._thread: threading.Thread | None = None

    def topic(self, label: str) -> str:
        """The topic a result with this label goes to."""
        return self.template.format(label=label)

    def start(self, labels: Sequence[str]) -> None:
        """Connect to the broker (blocking; raises SentictlError) and start the sending thread."""
        for label in labels:
            if not _TOPIC.match(self.topic(label)):
                raise SentictlError(f"--publish {self.template!r} gives the invalid topic name {self.topic(label)!r}")
        from kafka import KafkaProducer

        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap.split(","), acks="all", linger_ms=5,
                delivery_timeout_ms=30_000, request_timeout_ms=10_000, max_block_ms=10_000,
                client_id=f"sentictl-serve-{__version__}", **self.kafka,
            )
        except Exception as exc:  # noqa: BLE001 - kafka-python raises several unrelated types here
            raise SentictlError(
                f"cannot connect to the broker at {self.bootstrap}: {exc} "
                f"(check --bootstrap and --security-protocol/--sasl-*/--ssl-cafile)"
            ) from None
        self._thread = threading.Thread(target=self._loop, name="sentictl-publish", daemon=True)
        self._thread.start()

    def publish(self, results: Sequence[dict[str, Any]]) -> None:
        """Queue results for the broker without blocking; a full queue counts as a failure."""
        for r in results:
            record = {k: r[k] for k in ("text", "label", "score", "scores", "model", "cache_hit") if k in r}
            if r.get("truncated"):
                record["truncated"] = True
            self._enqueue((self.topic(r["label"]), text_key(r["text"]), orjson.dumps(record), 1))
            self.metrics.publish_pending.inc()

    def _enqueue(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._final_failure(item, "the publish queue is full (the broker is too slow or down)")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, key, value, attempt = item
            try:
                future = self._producer.send(topic, key=key, value=value)
            except Exception as exc:  # noqa: BLE001 - e.g. KafkaTimeoutError after max_block_ms
                self._failed(item, exc)
                continue
            future.add_callback(self._delivered)
            future.add_errback(self._failed, item)

    def _delivered(self, _metadata: Any) -> None:
        self.metrics.published.inc()
        self.metrics.publish_pending.dec()

    def _failed(self, item: tuple, exc: BaseException) -> None:
        topic, key, value, attempt = item
        if getattr(exc, "retriable", False) and attempt < self.attempts and not self._closing:
            self.metrics.publish_retries.inc()
            log.warning("publish to %s (key %s) failed, retrying (%d/%d): %s", topic, key.decode(), attempt, self.attempts - 1, exc)
            self._enqueue((topic, key, value, attempt + 1))
            return
        self._final_failure(item, f"{type(exc).__name__}: {exc}")

    def _final_failure(self, item: tuple, reason: str) -> None:
        topic, key, _value, attempt = item
        self.metrics.publish_failures.inc()
        self.metrics.publish_pending.dec()
        log.error("publish to %s (key %s) failed after %d attempt(s): %s", topic, key.decode(), attempt, reason)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, wait for acknowledgements (bounded), and close the producer."""
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                log.error("the publish queue did not drain within %.0f s", timeout)
            self._thread.join(timeout)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                log.error("flushing the fan-out producer failed: %s", exc)
            self._closing = True
            try:
                self._producer.close(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                log.error("closing the fan-out producer failed: %s", exc)


# ---------------------------------------------------------------------------------- the app
def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message, "error_type": error_type}, status, headers)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def demo_shape(r: dict[str, Any]) -> dict[str, Any]:
    """A result in the original demo's shape: label, score, text, metadata.cache_hit (+ scores)."""
    meta: dict[str, Any] = {"cache_hit": bool(r.get("cache_hit"))}
    if r.get("truncated"):
        meta["truncated"] = True
    return {"label": r["label"], "score": r["score"], "text": r["text"], "metadata": meta, "scores": r["scores"]}


class Service:
    """State shared by the routes: the model (once loaded), cache, batcher, publisher and metrics."""

    def __init__(self, settings: ServeSettings, load: Callable[[], Any], cache: ResultCache | None,
                 on_fatal: Callable[[str], None] | None = None):
        self.settings = settings
        self.load = load
        self.cache = cache
        self.reader = CacheReader(cache) if cache is not None else None
        self.on_fatal = on_fatal or (lambda message: None)
        self.metrics = Metrics()
        if cache is not None:
            cache.on_failure = lambda op: self.metrics.cache_failures.labels(op).inc()
        self.model: Any = None
        self.batcher: Batcher | None = None
        self.publisher: Publisher | None = None
        self.started = time.time()
        self._loader: asyncio.Task | None = None
        self._token = settings.token.encode() if settings.token else None

    # -------------------------------------------------------------- lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        # Load in the background so the port opens at once and /health can say "not yet".
        self._loader = asyncio.get_running_loop().create_task(self._load())
        try:
            yield
        finally:
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
            if self.settings.publish:
                publisher = Publisher(self.settings.publish, self.settings.bootstrap or "", self.metrics, self.settings.kafka)
                await asyncio.to_thread(publisher.start, model.labels)
                self.publisher = publisher
        except SentictlError as exc:
            self.on_fatal(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - report anything that stops start-up as one line
            self.on_fatal(f"cannot start: {type(exc).__name__}: {exc}")
            return
        self.batcher = Batcher(
            model, self.cache, self.metrics, max_batch_tokens=self.settings.max_batch_tokens,
            max_wait_ms=self.settings.max_wait_ms, max_queue=self.settings.max_queue,
            max_batch_size=getattr(model, "max_batch_size", 64),
        )
        self.batcher.start()
        self.model = model
        self.metrics.ready.set(1)
        log.info("model %s ready (%s on %s); serving on http://%s:%d", model.name, model.variant, model.provider,
                 self.settings.host, self.settings.port)

    # -------------------------------------------------------------- shared request steps
    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')", "unauthorized")

    def _require_model(self) -> Any:
        if self.model is None:
            raise ApiError(503, "the model is still loading; retry when GET /health answers 200", "unhealthy")
        return self.model

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise ApiError(413, f"request body of {declared} bytes is over the limit of {limit} bytes (--max-body-bytes)", "payload_too_large")
            except ValueError:
                raise ApiError(400, "invalid Content-Length header", "bad_request") from None
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body is over the limit of {limit} bytes (--max-body-bytes)", "payload_too_large")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "the client disconnected while sending the body", "bad_request") from None
        return b"".join(chunks)

    def _check_texts(self, texts: list[Any], field_name: str) -> list[str]:
        if not texts:
            raise ApiError(422, f"'{field_name}' is an empty list: send at least one text", "validation")
        limit = self.settings.max_client_batch_size
        if len(texts) > limit:
            raise ApiError(413, f"{len(texts)} texts in one request is over the limit of {limit} (--max-client-batch-size)", "validation")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ApiError(422, f"'{field_name}'[{i}] is not a string", "validation")
            if not text.strip():
                raise ApiError(422, f"'{field_name}'[{i}] is empty: send some text", "validation")
        return texts

    async def classify(self, texts: list[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Results in input order: cache hits at once, misses through the batcher."""
        model = self._require_model()
        unique = list(dict.fromkeys(texts))
        known: dict[str, dict[str, Any]] = {}
        if self.reader is not None:
            for text, result in (await self.reader.get_many(model.cache_namespace, unique)).items():
                known[text] = {**result, "text": text, "cache_hit": True}
        misses = [t for t in unique if t not in known]
        self.metrics.cache_hits.inc(len(unique) - len(misses))
        self.metrics.cache_misses.inc(len(misses))
        timings = {"queue": 0.0, "inference": 0.0}
        if misses:
            cap = model.max_length if model.long == "truncate" else 1 << 30
            lengths = [min(len(ids) + 2, cap) for ids in model._encode(misses)]
            try:
                job = await self.batcher.submit(misses, lengths)
            except Overloaded as exc:
                raise ApiError(429, str(exc), "overloaded") from None
            timings = {"queue": job.started - job.enqueued, "inference": job.finished - job.started}
            known.update(zip(misses, job.future.result()))
        results = [known[t] for t in texts]
        if self.publisher is not None:
            self.publisher.publish(results)
        return results, timings

    def _timed(self, data: Any, started: float, timings: dict[str, float]) -> Response:
        return _json(data, headers={
            "x-total-time": _ms(time.perf_counter() - started),
            "x-queue-time": _ms(timings["queue"]),
            "x-inference-time": _ms(timings["inference"]),
        })

    # -------------------------------------------------------------- routes
    async def sentiment(self, request: Request) -> Response:
        """POST /sentiment: raw text (the demo) or JSON {"text"} / {"texts"}."""
        started = time.perf_counter()
        self._authorize(request)
        self._require_model()
        body = await self._body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json" or ctype.endswith("+json"):
            doc = _parse_json(body)
            if not isinstance(doc, dict) or ("text" in doc) == ("texts" in doc):
                raise ApiError(422, 'expected a JSON object {"text": "..."} or {"texts": ["...", ...]}', "validation")
            if "texts" in doc:
                if not isinstance(doc["texts"], list):
                    raise ApiError(422, "'texts' must be a list of strings", "validation")
                texts = self._check_texts(doc["texts"], "texts")
                results, timings = await self.classify(texts)
                return self._timed([demo_shape(r) for r in results], started, timings)
            if not isinstance(doc["text"], str):
                raise ApiError(422, "'text' must be a string", "validation")
            text = doc["text"]
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, f"the body is not valid UTF-8 (byte {exc.start})", "bad_request") from None
            # The same normalisation as `score` gives a line, so both share cache entries.
            text = text.rstrip("\r\n")
        if not text.strip():
            raise ApiError(422, "empty text: send the text to classify as the request body", "validation")
        results, timings = await self.classify([text])
        return self._timed(demo_shape(results[0]), started, timings)

    async def predict(self, request: Request) -> Response:
        """POST /predict: text-embeddings-inference's classifier API."""
        started = time.perf_counter()
        self._authorize(request)
        model = self._require_model()
        doc = _parse_json(await self._body(request))
        if not isinstance(doc, dict) or "inputs" not in doc:
            raise ApiError(422, 'expected a JSON object {"inputs": "text" | ["text", ...]}', "validation")
        inputs = doc["inputs"]
        raw_scores, truncate = doc.get("raw_scores", False), doc.get("truncate", False)
        if not isinstance(raw_scores, bool) or not isinstance(truncate, bool):
            raise ApiError(422, "'raw_scores' and 'truncate' must be booleans", "validation")
        single = isinstance(inputs, str)
        if not single and not isinstance(inputs, list):
            raise ApiError(422, "'inputs' must be a string or a list of strings", "validation")
        texts = self._check_texts([inputs] if single else inputs, "inputs")
        if not truncate and model.long == "truncate":
            limit = model.max_length
            for i, ids in enumerate(model._encode(texts)):
                if len(ids) + 2 > limit:
                    raise ApiError(413, f"inputs[{i}] has {len(ids) + 2} tokens, over the model's limit of {limit}; "
                                        f"send \"truncate\": true to cut it", "validation")
        results, timings = await self.classify(texts)
        out = [_predictions(r, raw_scores) for r in results]
        return self._timed(out[0] if single else out, started, timings)

    async def health(self, request: Request) -> Response:
        """GET /health: 200 once the model is loaded, 503 before."""
        if self.model is None:
            return _json({"status": "loading"}, 503)
        return _json({"status": "ok"})

    async def info(self, request: Request) -> Response:
        """GET /info: which model runs, how, and the server's limits."""
        self._authorize(request)
        model = self._require_model()
        s = self.settings
        return _json({
            **model.info(),
            "model_id": _source_id(model),
            "model": model.name,
            "version": __version__,
            "max_batch_tokens": s.max_batch_tokens,
            "max_wait_ms": s.max_wait_ms,
            "max_client_batch_size": s.max_client_batch_size,
            "max_queue": s.max_queue,
            "max_body_bytes": s.max_body_bytes,
            "cache": str(self.cache.path) if self.cache is not None else None,
            "publish": s.publish,
            "uptime_s": round(time.time() - self.started, 3),
        })

    async def metrics_route(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format."""
        self._authorize(request)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: this API's description."""
        return _json(openapi_schema(self.settings))


def _source_id(model: Any) -> str:
    source = model.manifest.get("source")
    if isinstance(source, dict):
        source = source.get("id")
    return str(source or model.name)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}", "bad_request") from None


def _predictions(r: dict[str, Any], raw_scores: bool) -> list[dict[str, Any]]:
    """TEI's shape: every label with its score, best first."""
    ranked = sorted(r["scores"].items(), key=lambda kv: kv[1], reverse=True)
    if raw_scores:
        # The graph's logits are not kept; log-probabilities are the logits up to a per-row constant.
        return [{"label": label, "score": round(math.log(max(p, 1e-9)), 6)} for label, p in ranked]
    return [{"label": label, "score": p} for label, p in ranked]


def _wrap(handler: Callable) -> Callable:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
            return _error(exc.status, exc.message, exc.error_type, headers)

    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kinds = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", kinds.get(exc.status_code, "bad_request"),
                  dict(exc.headers) if exc.headers else None)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
    return _error(500, "internal error: see the server log", "backend")


def create_app(settings: ServeSettings, load: Callable[[], Any], cache: ResultCache | None = None,
               on_fatal: Callable[[str], None] | None = None) -> Any:
    """The ASGI application (metrics middleware around Starlette)."""
    service = Service(settings, load, cache, on_fatal)
    routes = [
        Route("/sentiment", _wrap(service.sentiment), methods=["POST"]),
        Route("/predict", _wrap(service.predict), methods=["POST"]),
        Route("/health", _wrap(service.health), methods=["GET"]),
        Route("/info", _wrap(service.info), methods=["GET"]),
        Route("/metrics", _wrap(service.metrics_route), methods=["GET"]),
        Route("/openapi.json", _wrap(service.openapi), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=service.lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.service = service
    wrapped = MetricsMiddleware(app, service.metrics)
    wrapped.service = service  # type: ignore[attr-defined]
    return wrapped


def serve(settings: ServeSettings, load: Callable[[], Any], cache: ResultCache | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; in-flight requests are answered before it returns."""
    import uvicorn

    _configure_logging()
    fatal: list[str] = []
    server_box: list[Any] = []

    def on_fatal(message: str) -> None:
        fatal.append(message)
        log.error("%s", message)
        if server_box:
            server_box[0].should_exit = True

    app = create_app(settings, load, cache, on_fatal)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, lifespan="on", access_log=settings.access_log,
        log_level="info", timeout_graceful_shutdown=settings.graceful_timeout, backlog=2048,
        server_header=False, log_config=None,
    )
    server = uvicorn.Server(config)
    server_box.append(server)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        log.warning("listening on %s without --token: anyone who can reach this port can use it", settings.host)
    # uvicorn drains connections on SIGTERM, then re-raises the signal with the handler that was
    # in place before it started; a no-op handler here makes that a clean exit 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    except SystemExit:
        # uvicorn exits this way when it cannot bind; it has already logged why.
        if not fatal:
            fatal.append(f"could not listen on {settings.host}:{settings.port} (is the port in use? try --port)")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if fatal:
        raise SentictlError(fatal[0])
    if not server.started:
        raise SentictlError(f"could not listen on {settings.host}:{settings.port} (is the port in use? try --port)")


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("sentictl: %(message)s"))
    for name in ("sentictl", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # kafka-python logs every reconnect at WARNING/ERROR; our own lines say what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


# ---------------------------------------------------------------------------------- OpenAPI
def openapi_schema(settings: ServeSettings) -> dict[str, Any]:
    """The OpenAPI 3.0 description served at /openapi.json."""
    limit = settings.max_client_batch_size
    text = {"type": "string", "minLength": 1, "pattern": r"\S"}
    texts = {"type": "array", "items": text, "minItems": 1, "maxItems": limit}
    error = {"$ref": "#/components/schemas/Error"}

    def errors(*codes: int) -> dict[str, Any]:
        names = {400: "Malformed body", 401: "Missing or wrong bearer token", 413: "Too large",
                 422: "Invalid input", 429: "Queue full", 503: "Model not loaded yet"}
        return {str(c): {"description": names[c], "content": {"application/json": {"schema": error}}} for c in codes}

    security = [{"bearer": []}] if settings.token else []
    result = {"$ref": "#/components/schemas/Result"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "sentictl", "version": __version__,
                 "description": "Financial-sentiment classification (ONNX Runtime) with dynamic batching."},
        "paths": {
            "/sentiment": {"post": {
                "summary": "Classify raw text (the demo's call) or JSON {text} / {texts}",
                "security": security,
                "requestBody": {"required": True, "content": {
                    "text/plain": {"schema": text},
                    "application/json": {"schema": {"oneOf": [
                        {"type": "object", "properties": {"text": text}, "required": ["text"], "additionalProperties": False},
                        {"type": "object", "properties": {"texts": texts}, "required": ["texts"], "additionalProperties": False},
                    ]}},
                }},
                "responses": {
                    "200": {"description": "One result (raw text or {text}) or a list in input order ({texts})",
                            "content": {"application/json": {"schema": {"oneOf": [
                                result, {"type": "array", "items": result}]}}}},
                    **errors(400, 401, 413, 422, 429, 503),
                },
            }},
            "/predict": {"post": {
                "summary": "text-embeddings-inference compatible classification",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["inputs"],
                    "properties": {"inputs": {"oneOf": [text, texts]}, "raw_scores": {"type": "boolean"},
                                   "truncate": {"type": "boolean"}},
                }}}},
                "responses": {
                    "200": {"description": "Predictions sorted by score (a list of lists for a list of inputs)",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"$ref": "#/components/schemas/Predictions"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/Predictions"}}]}}}},
                    **errors(400, 401, 413, 422, 429, 503),
                },
            }},
            "/health": {"get": {"summary": "200 once the model is loaded, 503 before", "responses": {
                "200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "Loading", "content": {"application/json": {"schema": {"type": "object"}}}},
            }}},
            "/info": {"get": {"summary": "Model and server settings", "security": security, "responses": {
                "200": {"description": "Model id, variant, provider, fingerprint, max length, version",
                        "content": {"application/json": {"schema": {"type": "object", "required": ["fingerprint", "variant", "provider", "max_length", "version"]}}}},
                **errors(401, 503),
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": security, "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **errors(401),
            }}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "error_type"],
                          "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}},
                "Result": {"type": "object", "required": ["label", "score", "text", "metadata", "scores"], "properties": {
                    "label": {"type": "string"}, "score": {"type": "number"}, "text": {"type": "string"},
                    "metadata": {"type": "object", "required": ["cache_hit"], "properties": {
                        "cache_hit": {"type": "boolean"}, "truncated": {"type": "boolean"}}},
                    "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                }},
                "Predictions": {"type": "array", "items": {"type": "object", "required": ["label", "score"], "properties": {
                    "label": {"type": "string"}, "score": {"type": "number"}}}},
            },
        },
    }
