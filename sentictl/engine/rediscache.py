"""The shared result cache in Redis: one cache for a fleet of replicas and workers on many hosts.

The same keys and values as the SQLite cache (``cache_key(namespace, text)``, orjson
``{"r": result, "t": time}``, never pickle), stored as ``sentictl:v1:<namespace>:<key>`` so one
Redis can hold several models and other applications' keys. A lookup is one MGET, a store one
pipelined batch of SETs (with EX when a TTL is set): one round trip each.

The cache can fail; the work cannot. Every call waits at most ~``TIMEOUT_S`` (connect and socket
timeouts); a failed call is a miss (or an unstored result), counted and announced once, and that
kind of call (read or write) is left alone for a back-off that doubles from ``RETRY_MIN_S`` to
``RETRY_MAX_S`` before Redis is tried again. A full Redis (``maxmemory`` with ``noeviction``)
refuses writes but still answers reads. Nothing raises to a door unless it asked for ``strict``.

The URL may carry a password: it is only ever shown through :func:`redact_url`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..console import notice
from ..errors import CacheError
from .cacheformat import cache_key, decode_entry, encode_entry, is_expired

SCHEMES = ("redis://", "rediss://", "unix://")
PREFIX = "sentictl:v1:"
# No request waits on the cache much longer than this (connect, then read/write).
TIMEOUT_S = 0.1
# After a failure, Redis is left alone for this long, doubling per failure up to RETRY_MAX_S.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
# Keys per SCAN page, per MGET of `clear --expired`, per DEL.
_PAGE = 1000


def is_url(location: object) -> bool:
    """Whether a --cache value names a Redis server rather than a file."""
    return isinstance(location, str) and location.lower().startswith(SCHEMES)


def redact_url(location: object) -> str:
    """A cache location fit to print: a Redis URL's password becomes ***; paths are unchanged."""
    text = str(location)
    if not is_url(text):
        return text
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0] if ":" in userinfo else userinfo
            # A lone userinfo (redis://name@host) is a user name to redis-py, a password to some other
            # clients: hidden too, erring on the side of the secret.
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"{text.split('://', 1)[0]}://***"


def _secrets(url: str, password: str | None) -> list[str]:
    """Every spelling of the password a message could carry, longest first: as given, and
    percent-decoded as redis-py uses it."""
    given = urlsplit(url).password
    query = dict(parse_qsl(urlsplit(url).query)).get("password")
    return sorted({s for s in (password, given, given and unquote(given), query) if s}, key=len, reverse=True)


class RedisCache:
    """A Redis result cache with ResultCache's interface; failures cost misses, not runs."""

    def __init__(
        self,
        url: str,
        ttl: float | None = None,
        *,
        strict: bool = False,
        password: str | None = None,
        timeout: float | None = None,
        retry_min: float = RETRY_MIN_S,
        retry_max: float = RETRY_MAX_S,
        on_failure: Callable[[str], None] | None = None,
    ):
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise CacheError("a redis:// cache needs redis-py: pip install 'sentictl[redis]'") from None
        self.url = redact_url(url)
        # What /info and notices show (never the password); `path` for callers written for the file cache.
        self.path = self.url
        self.ttl = ttl if ttl and ttl > 0 else None
        self.strict = strict
        self.retry_min, self.retry_max = retry_min, retry_max
        self.on_failure = on_failure
        timeout = TIMEOUT_S if timeout is None else timeout
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.failures = 0
        self._secrets = _secrets(url, password)
        self._counter_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._down_until = {"read": 0.0, "write": 0.0}
        self._backoff = {"read": 0.0, "write": 0.0}
        self._announced = False
        self._closed = False
        self._redis = redis
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One immediate retry for a pooled connection the server closed (a restart, a failover);
            # a timeout is never retried, so a slow server costs one timeout, not several.
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        if password is not None:
            kwargs["password"] = password
        try:
            self._client = redis.Redis.from_url(url, **kwargs)
        except (ValueError, redis.exceptions.RedisError) as exc:
            raise CacheError(f"--cache {self.url}: {self._clean(exc)}") from None
        # Said at start, not at the first batch, when the server cannot be reached (strict: an error).
        self._call("read", lambda c: c.ping())

    # ------------------------------------------------------------------ faults
    def _clean(self, exc: BaseException) -> str:
        reason = str(exc) or type(exc).__name__
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason

    def _call(self, op: str, fn: Callable[[Any], Any]) -> Any:
        """fn(client), or None when Redis is unusable or backing off (strict: CacheError)."""
        if self._closed:
            return None
        if not self.strict and time.monotonic() < self._down_until[op]:
            return None
        try:
            out = fn(self._client)
        except (self._redis.exceptions.RedisError, OSError) as exc:
            return self._failed(op, exc)
        if self._backoff[op]:
            with self._state_lock:
                self._backoff[op] = 0.0
                if self._announced and not any(self._backoff.values()):
                    self._announced = False
                    notice(f"the result cache {self.url} works again")
        return out

    def _failed(self, op: str, exc: BaseException) -> None:
        with self._counter_lock:
            self.failures += 1
        if self.on_failure is not None:
            self.on_failure(op)
        reason = self._clean(exc)
        if self.strict:
            raise CacheError(f"the result cache {self.url} cannot be used: {reason}") from None
        with self._state_lock:
            wait = min(self.retry_max, max(self.retry_min, self._backoff[op] * 2))
            self._backoff[op] = wait
            self._down_until[op] = time.monotonic() + wait
            announce = not self._announced
            self._announced = True
        if announce:
            verb = "read" if op == "read" else "written"
            notice(
                f"the result cache {self.url} cannot be {verb} ({reason}); going on without it and "
                f"trying again after {self.retry_min:g} s, backing off to {self.retry_max:g} s "
                f"(--no-cache turns it off)"
            )
        return None

    # ------------------------------------------------------------------ the API
    @staticmethod
    def _key(namespace: str, key: str) -> str:
        return f"{PREFIX}{namespace}:{key}"

    def get_many(self, namespace: str, texts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached results for those texts that have one (one MGET)."""
        keys = {self._key(namespace, cache_key(namespace, t)): t for t in texts}
        key_list = list(keys)
        values = (self._call("read", lambda c: c.mget(key_list)) if key_list else None) or []
        found: dict[str, dict[str, Any]] = {}
        now = time.time()
        bad = 0
        for key, blob in zip(key_list, values):
            if blob is None:
                continue
            entry = decode_entry(blob)
            if entry is None:
                bad += 1  # not ours: a miss, overwritten by the fresh result
                continue
            result, stored = entry
            if self.ttl is not None and now - stored > self.ttl:
                continue
            found[keys[key]] = result
        with self._counter_lock:
            self.corrupt += bad
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, namespace: str, results: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Store (text, result) pairs in one pipelined round trip; returns how many were written."""
        now = time.time()
        rows = [
            (self._key(namespace, cache_key(namespace, text)), encode_entry(result, now)) for text, result in results
        ]
        if not rows:
            return 0
        expire = math.ceil(self.ttl) if self.ttl is not None else None

        def write(client: Any) -> int:
            pipe = client.pipeline(transaction=False)
            for key, blob in rows:
                pipe.set(key, blob, ex=expire)
            replies = pipe.execute(raise_on_error=False)
            errors = [r for r in replies if isinstance(r, Exception)]
            if errors:  # a full Redis (OOM with noeviction) refuses each SET
                raise errors[0]
            return len(rows)

        return self._call("write", write) or 0

    def _scan(self, client: Any) -> Iterable[list[bytes]]:
        """This cache's keys (every model's), a SCAN page at a time: never KEYS, never FLUSHDB."""
        cursor = 0
        while True:
            cursor, keys = client.scan(cursor, match=f"{PREFIX}*", count=_PAGE)
            if keys:
                yield keys
            if not cursor:
                return

    def stats(self) -> dict[str, Any]:
        """Entries and their stored bytes under this prefix, and this process's hit/miss counters."""

        def count(client: Any) -> tuple[int, int]:
            entries = size = 0
            for keys in self._scan(client):
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.strlen(key)
                lengths = pipe.execute()
                entries += len(keys)
                size += sum(len(k) for k in keys) + sum(lengths)
            return entries, size

        entries, size = self._call("read", count) or (None, None)
        return {
            "path": self.url,
            "entries": entries,
            "bytes": size,
            "ttl": self.ttl,
            "hits": self.hits,
            "misses": self.misses,
        }

    def clear(self, expired_only: bool = False) -> int:
        """Remove every entry under this prefix (or only those past the TTL); returns how many."""
        if expired_only and self.ttl is None:
            return 0
        cutoff = time.time() - (self.ttl or 0)

        def delete(client: Any) -> int:
            removed = 0
            for keys in self._scan(client):
                if expired_only:
                    keys = [
                        k for k, blob in zip(keys, client.mget(keys)) if blob is not None and is_expired(blob, cutoff)
                    ]
                if keys:
                    removed += client.delete(*keys)
            return removed

        return self._call("write", delete) or 0

    def close(self) -> None:
        """Close the connections."""
        self._closed = True
        try:
            self._client.close()
        except (self._redis.exceptions.RedisError, OSError):
            pass

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
