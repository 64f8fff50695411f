"""What every resolver reaches through ``info.context``."""

from __future__ import annotations

from typing import Any

from example_api.loaders import Loaders
from example_api.metrics import Metrics
from example_api.settings import Settings
from example_api.state import AppState
from example_api.views import ViewCounter
from gqlbatch.strawberry import Context

__all__ = ["AppContext"]


class AppContext(Context[Loaders]):
    """gqlbatch's per-request context (``loaders``, ``sessions``, ``statements``,
    ``request``, ``response``) plus the process-wide parts of the server."""

    def __init__(self, *, state: AppState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    @property
    def settings(self) -> Settings:
        """The server's settings."""
        return self.state.settings

    @property
    def metrics(self) -> Metrics:
        """The process's metrics."""
        return self.state.metrics

    @property
    def views(self) -> ViewCounter:
        """The process-wide view queue."""
        views = self.state.views
        assert views is not None, "the application has not started"
        return views
