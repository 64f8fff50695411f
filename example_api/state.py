"""What lives as long as the process: built by ``create_app``, read by every request."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from example_api.metrics import Metrics
from example_api.settings import Settings
from example_api.shared_cache import SharedCache
from example_api.views import ViewCounter

__all__ = ["AppState"]


@dataclass(slots=True)
class AppState:
    """The process's engine, sessions, metrics and view queue, with its settings.

    ``views`` is opened by the app's lifespan (it needs a running loop) and is
    ``None`` until then.
    """

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: Metrics
    views: ViewCounter | None = None
    shared_cache: SharedCache | None = None
    """The by-id loaders' cache on Redis (``EXAMPLE_API_REDIS_URL``), or None."""
