"""What every resolver reaches through ``info.context``."""

from __future__ import annotations

from typing import Any

from example_api import auth
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
        self._viewer: int | auth.TokenError | None = None
        self._viewer_read = False

    @property
    def auth_required(self) -> bool:
        """Whether the server checks tokens (``EXAMPLE_API_AUTH_SECRET`` is set)."""
        return bool(self.state.settings.auth_secret)

    def viewer(self) -> int | None:
        """The user the request's bearer token names: None without a token or with auth off.

        Raises :class:`example_api.auth.TokenError` for a token that is not valid.
        Read once per request.
        """
        if not self._viewer_read:
            self._viewer_read = True
            self._viewer = self._read_viewer()
        if isinstance(self._viewer, auth.TokenError):
            raise self._viewer
        return self._viewer

    def _read_viewer(self) -> int | auth.TokenError | None:
        secret = self.state.settings.auth_secret
        request = self.request
        header = request.headers.get("authorization", "") if request is not None else ""
        if not secret or not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return auth.TokenError("the Authorization header must be 'Bearer <token>'")
        try:
            return auth.verify(secret, token.strip())
        except auth.TokenError as error:
            return error

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
