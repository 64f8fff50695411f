"""The context class :func:`gqlbatch.strawberry.context_getter` builds: also a FastAPI one.

Strawberry's FastAPI router fills in ``request``, ``response`` and
``background_tasks`` only on subclasses of its ``BaseContext``, whose module
imports FastAPI; so this class lives here, imported when a getter is made.
"""

from __future__ import annotations

from typing import Any

from strawberry.fastapi import BaseContext

from gqlbatch.strawberry.context import Context
from gqlbatch.strawberry.registry import RegistryT

__all__ = ["FastAPIContext"]


# BaseContext types `response` as Response only; Context also allows the WebSocket of a
# subscription. Both are attributes set by the servers, so the narrower one is harmless.
class FastAPIContext(Context[RegistryT], BaseContext):  # type: ignore[misc]
    """A :class:`~gqlbatch.strawberry.Context` that FastAPI's ``GraphQLRouter`` accepts."""

    def __init__(self, *, loaders: RegistryT, **kwargs: Any) -> None:
        BaseContext.__init__(self)
        Context.__init__(self, loaders=loaders, **kwargs)
