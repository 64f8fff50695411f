"""``RedisValueCache``: a :class:`gqlbatch.ValueCache` on Redis or Redis Cluster.

Layout of one cached key ``k`` of namespace ``ns`` (``k`` encoded as JSON)::

    ns:{k}:g      the key's generation: a random token, set by each invalidation
    ns:{k}:v1     the value of value-shape version 1: b"<generation>|" + payload

Both share the hash tag ``{k}``, so they live on one Redis Cluster slot and one
script can read and write them together.

A read is one ``MGET`` of both keys of every key of the batch (chunked): a
value counts only if it was stored under the generation that is current, so an
entry left by a failed ``DEL``, or by a deploy whose values had another shape,
is never read. The generations read are kept with the result and handed back
to ``set_many``: the fill is one script call that stores each value only if its
key's generation is still the one read, which closes the fill race (a reader
reads the old row, a writer commits and invalidates, the reader stores the old
row). An invalidation sets a fresh generation and deletes the value. The two
checks back each other up: the script keeps dead entries out of Redis, and the
read's comparison makes an entry stored under an old generation unreadable
whatever happened to the ``DEL``.

A generation lives ``generation_ttl`` seconds after it is set. That is longer
than any value lives and than the fill window, so a generation cannot expire
(and compare equal to "none") while a value or a fill that predates it is
still around.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from gqlbatch import NOT_FOUND, ValueCacheRead
from gqlbatch.redis.serializers import JsonSerializer, Serializer

__all__ = ["RedisValueCache"]

_VALUE, _MISS = b"v", b"m"  # what follows the generation's "|": a payload, or a stored miss

# KEYS: generation, value, generation, value, ...
# ARGV: value ttl in ms, then per key the generation read and the entry to store.
_FILL = """
local stored = 0
for i = 1, #KEYS, 2 do
  local current = redis.call('GET', KEYS[i]) or ''
  if current == ARGV[i + 1] then
    redis.call('SET', KEYS[i + 1], ARGV[i + 2], 'PX', ARGV[1])
    stored = stored + 1
  end
end
return stored
"""


class RedisValueCache:
    """A shared cache of one loader's values in Redis (``redis.asyncio``).

    Args:
        client: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``
            (``decode_responses`` must be off: values are bytes).
        namespace: the prefix of every key, e.g. ``"myapp:user"``: one per
            loader (and per application sharing the Redis). No braces.
        version: the shape of the values; bump it when what a value holds
            changes, and a deploy never reads the previous shape's entries.
        ttl: seconds a value lives when the loader gives none (default 300).
        serializer: ``dumps``/``loads`` of values (default :class:`JsonSerializer`).
        chunk_size: keys per ``MGET`` (a batch of more is read in several, in one round trip).
        fill_window_s: a fill made this long after its read is dropped (default 30).
        generation_ttl: seconds a generation is kept (default: twice the longest of
            ``ttl`` and ``max_ttl``, plus the fill window).
        max_ttl: the longest a value may live, whatever the loader asks (default: ``ttl``
            times 10).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        namespace: str,
        version: int | str = 1,
        ttl: float = 300.0,
        serializer: Serializer | None = None,
        chunk_size: int = 500,
        fill_window_s: float = 30.0,
        max_ttl: float | None = None,
        generation_ttl: float | None = None,
    ) -> None:
        if not isinstance(client, Redis | RedisCluster):
            raise TypeError(f"client must be a redis.asyncio.Redis or RedisCluster, got {client!r}")
        if not isinstance(namespace, str) or not namespace or set("{}") & set(namespace):
            raise ValueError(
                f"namespace must be a non-empty string without braces, got {namespace!r}"
            )
        if not isinstance(version, int | str) or isinstance(version, bool) or version == "":
            raise TypeError(f"version must be an int or a non-empty string, got {version!r}")
        self._ttl = _positive("ttl", ttl)
        self._max_ttl = _positive("max_ttl", ttl * 10 if max_ttl is None else max_ttl)
        self._window = _positive("fill_window_s", fill_window_s)
        longest = max(self._ttl, self._max_ttl)
        self._generation_ttl = _positive(
            "generation_ttl",
            2 * longest + self._window if generation_ttl is None else generation_ttl,
        )
        if self._generation_ttl < longest + self._window:
            raise ValueError(
                f"generation_ttl must be at least the longest value ttl plus fill_window_s "
                f"({longest + self._window}), got {generation_ttl!r}: a shorter one lets an "
                f"old value be read again"
            )
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        serializer = JsonSerializer() if serializer is None else serializer
        if not isinstance(serializer, Serializer):
            raise TypeError(f"serializer must have dumps and loads methods, got {serializer!r}")
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self.namespace = namespace
        self.version = version
        self._serializer = serializer
        self._chunk = chunk_size
        self._fill = client.register_script(_FILL)
        self._suffix = f":v{version}".encode()

    def __repr__(self) -> str:
        return f"<RedisValueCache {self.namespace!r} v{self.version} ttl={self._ttl}>"

    # -- keys ----------------------------------------------------------------------------

    def _base(self, key: Hashable) -> bytes:
        """``ns:{k}``: what both of the key's Redis keys start with."""
        try:
            encoded = json.dumps(key, separators=(",", ":"))
        except TypeError:
            raise TypeError(
                f"RedisValueCache {self.namespace!r}: key {key!r} ({type(key).__name__}) "
                f"cannot name a Redis key; keys must be str, int, float, bool, None or "
                f"tuples of them (use the loader's cache_key= to map other keys)"
            ) from None
        return f"{self.namespace}:{{{encoded}}}".encode()

    # -- ValueCache ----------------------------------------------------------------------

    async def get_many(self, keys: Sequence[Hashable], /) -> ValueCacheRead:
        at = time.monotonic()
        names: list[bytes] = []
        for key in keys:
            base = self._base(key)
            names.append(base + b":g")
            names.append(base + self._suffix)
        raw = await self._mget(names)
        hits: dict[Hashable, Any] = {}
        generations: dict[Hashable, bytes] = {}
        loads = self._serializer.loads
        for index, key in enumerate(keys):
            generation = raw[2 * index] or b""
            entry = raw[2 * index + 1]
            if entry is not None:
                stored_under, _, payload = entry.partition(b"|")
                if stored_under == generation:
                    hits[key] = NOT_FOUND if payload[:1] == _MISS else loads(payload[1:])
                    continue
            generations[key] = generation
        return ValueCacheRead(hits, at, generations)

    async def _mget(self, names: list[bytes]) -> list[Any]:
        if not names:
            return []
        client: Any = self._client
        if self._cluster:
            # Split by slot by the client, one request per node, sent together.
            return await client.mget_nonatomic(names)  # type: ignore[no-any-return]
        chunk = 2 * self._chunk
        if len(names) <= chunk:
            return await client.mget(names)  # type: ignore[no-any-return]
        async with client.pipeline(transaction=False) as pipe:
            for start in range(0, len(names), chunk):
                pipe.mget(names[start : start + chunk])
            parts = await pipe.execute()
        return [value for part in parts for value in part]

    async def set_many(
        self, items: Mapping[Hashable, Any], ttl: float | None, /, *, read: Mapping[Hashable, Any]
    ) -> None:
        if not isinstance(read, ValueCacheRead) or not isinstance(read.token, dict):
            raise TypeError(
                f"RedisValueCache {self.namespace!r}: set_many needs read=, the mapping its "
                f"get_many returned for these keys"
            )
        generations: dict[Hashable, bytes] = read.token
        dumps = self._serializer.dumps
        entries: list[tuple[bytes, bytes, bytes]] = []  # (base, generation, entry)
        for key, value in items.items():
            generation = generations.get(key)
            if generation is None:
                continue  # not read as lacking: nothing guards this key's fill
            payload = _MISS if value is NOT_FOUND else _VALUE + dumps(value)
            entries.append((self._base(key), generation, generation + b"|" + payload))
        if not entries or time.monotonic() - read.at > self._window:
            return
        ttl_ms = int(1000 * min(self._ttl if ttl is None else ttl, self._max_ttl)) or 1
        if not self._cluster:
            await self._run_fill(entries, ttl_ms)
            return
        by_slot: dict[int, list[tuple[bytes, bytes, bytes]]] = {}
        for entry in entries:
            by_slot.setdefault(key_slot(entry[0] + b":g"), []).append(entry)
        await asyncio.gather(*(self._run_fill(group, ttl_ms) for group in by_slot.values()))

    async def _run_fill(self, entries: list[tuple[bytes, bytes, bytes]], ttl_ms: int) -> None:
        keys: list[bytes] = []
        args: list[bytes | int] = [ttl_ms]
        for base, generation, entry in entries:
            keys += (base + b":g", base + self._suffix)
            args += (generation, entry)
        await self._fill(keys=keys, args=args)

    async def delete_many(self, keys: Sequence[Hashable], /) -> None:
        if not keys:
            return
        px = int(self._generation_ttl * 1000)
        client: Any = self._client
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                base = self._base(key)
                pipe.set(base + b":g", os.urandom(9).hex().encode(), px=px)
                pipe.delete(base + self._suffix)
            await pipe.execute()


def _positive(name: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)
