"""How values become bytes in Redis: a serializer is ``dumps`` and ``loads``."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

__all__ = ["JsonSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into bytes and back. ``dumps`` raises TypeError for a value it cannot hold."""

    def dumps(self, value: Any, /) -> bytes: ...
    def loads(self, data: bytes, /) -> Any: ...


class JsonSerializer:
    """Plain data as compact JSON: dicts, lists, strings, numbers, booleans, None.

    Tuples come back as lists. Anything else (an ORM object, a datetime, a
    dataclass) raises TypeError saying so: convert it to plain data in the
    batch function, or pass a serializer that knows the type.
    """

    def dumps(self, value: Any, /) -> bytes:
        return json.dumps(value, separators=(",", ":"), default=_refuse).encode()

    def loads(self, data: bytes, /) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"


def _refuse(value: Any) -> Any:
    kind = type(value)
    orm = hasattr(value, "_sa_instance_state")
    hint = " (an ORM object is not cacheable as such)" if orm else ""
    raise TypeError(
        f"a {kind.__module__}.{kind.__qualname__} value cannot be stored in the shared cache"
        f"{hint}: JsonSerializer holds plain data only (dict, list, str, int, float, bool, "
        f"None); return plain data from the batch function, or pass serializer=... with "
        f"dumps/loads that know the type"
    )
