"""Request coalescing on top of the Engine: inference batches across requests, shared cache lookups.

Neither class caches or batches by itself: the Batcher hands ``Engine.infer`` the encoded misses
of the requests it gathered (one arrival-order batch: the engine de-duplicates it, runs it in
length groups and stores the results), and the CacheReader asks ``Engine.lookup`` once for every
request of an event-loop iteration.

Each job carries the engine its request started on, and a batch only ever holds jobs of one
engine: when the model is reloaded (Service.reload), requests already admitted finish on the
old model and new ones run on the new, never a batch that mixes the two.

The queue has no bound of its own: the routes admit at most --max-concurrent-requests requests
of at most --max-client-batch-size texts each, so a request that was admitted is never refused
here (a refusal a retry could not fix when the request alone is larger than a queue bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..engine import Engine, ResultDict
from ..engine.model import Encoded
from ..engine.records import Input
from ..errors import BackendError, Unhealthy
from .metrics import Metrics

log = logging.getLogger("sentictl.serve")


@dataclass
class Job:
    """One request's encoded misses waiting for inference, and when it queued, started and finished."""

    misses: list[Encoded]
    tokens: int
    future: asyncio.Future[list[ResultDict]]
    enqueued: float
    engine: Engine
    started: float = 0.0
    finished: float = 0.0


class Batcher:
    """Coalesces concurrent requests into inference batches under a token budget and a wait limit."""

    def __init__(
        self, engine: Engine, metrics: Metrics, *, max_batch_tokens: int, max_wait_ms: float, max_batch_size: int
    ):
        self.engine = engine
        self.metrics = metrics
        self.max_batch_tokens = max(1, max_batch_tokens)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        self._pending: deque[Job] = deque()
        self._queued_texts = 0
        self._queued_tokens = 0
        self._wake = asyncio.Event()
        # One thread: ORT already uses every core for one batch, two batches at once would only thrash.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentictl-infer")
        self._task: asyncio.Task[None] | None = None

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
                job.future.set_exception(Unhealthy("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, misses: list[Encoded], engine: Engine | None = None) -> Job:
        """Queue a request's encoded misses for inference on ``engine`` (default: the batcher's current
        one) and wait for their results (with logits); BackendError when inference failed."""
        loop = asyncio.get_running_loop()
        tokens = sum(e.tokens for e in misses)
        job = Job(misses, tokens, loop.create_future(), loop.time(), engine or self.engine)
        self._pending.append(job)
        self._queued_texts += len(misses)
        self._queued_tokens += tokens
        self.metrics.queue_depth.set(self._queued_texts)
        self._wake.set()
        await job.future
        return job

    def _full(self) -> bool:
        return self._queued_tokens >= self.max_batch_tokens or self._queued_texts >= self.max_batch_size

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        texts = tokens = 0
        while self._pending:
            job = self._pending[0]
            if batch and (
                tokens + job.tokens > self.max_batch_tokens
                or texts + len(job.misses) > self.max_batch_size
                or job.engine is not batch[0].engine
            ):
                break
            self._pending.popleft()
            self._queued_texts -= len(job.misses)
            self._queued_tokens -= job.tokens
            if job.future.done():  # the client went away while waiting
                continue
            batch.append(job)
            texts += len(job.misses)
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
            misses = [e for job in batch for e in job.misses]
            started = loop.time()
            for job in batch:
                job.started = started
            try:
                results = await loop.run_in_executor(
                    self._executor, functools.partial(batch[0].engine.infer, misses, arrival_order=True)
                )
            except Exception:  # every waiting caller must hear about it (the details go to the log)
                log.exception("inference failed for a batch of %d texts", len(misses))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(BackendError("inference failed: see the server log"))
                free_since = loop.time()
                continue
            finished = free_since = loop.time()
            self.metrics.batch_size.observe(len(misses))
            self.metrics.batch_tokens.observe(sum(job.tokens for job in batch))
            self.metrics.inference.observe(finished - started)
            offset = 0
            for job in batch:
                job.finished = finished
                if not job.future.done():
                    job.future.set_result(results[offset : offset + len(job.misses)])
                offset += len(job.misses)


class CacheReader:
    """Coalesces the cache lookups of requests that arrive together into one ``Engine.lookup`` call.

    Under a burst of cache hits one shared query per event-loop iteration instead of one per
    request keeps the hit path in the thousands of requests per second. The query runs on the
    event loop: it uses the cache's read connection, which in WAL mode never waits for a writer
    (writes have a connection of their own), and a worker-thread hop per lookup cost more than
    the query itself.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._pending: list[tuple[list[Input], bool, asyncio.Future[dict[Input, ResultDict]]]] = []
        self._scheduled = False

    async def lookup(self, inputs: list[Input], logits: bool) -> dict[Input, ResultDict]:
        """Cached results for the inputs that have one (may be served by a lookup shared with others);
        ``logits`` as Engine.lookup takes it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[Input, ResultDict]] = loop.create_future()
        self._pending.append((inputs, logits, future))
        if not self._scheduled:
            self._scheduled = True
            # call_soon runs after the requests already scheduled in this iteration did their part.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, [], False
        for logits in {flag for _, flag, _ in pending}:
            waiting = [(inputs, future) for inputs, flag, future in pending if flag == logits and not future.done()]
            try:
                hits = self.engine.lookup([x for inputs, _ in waiting for x in inputs], logits=logits)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it
                for _, future in waiting:
                    future.set_exception(exc)
                continue
            for inputs, future in waiting:
                future.set_result({x: hits[x] for x in inputs if x in hits})
