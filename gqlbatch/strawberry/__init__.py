"""Strawberry integration: per-request loaders in ``info.context.loaders``.

A resolver writes ``await info.context.loaders.user.load(user_id)`` and gets
batching, caching and error handling. The pieces, in the order a request meets
them:

- :class:`LoaderRegistry` and :func:`loader` declare loaders as class
  attributes. One registry instance serves one request; each
  :class:`~gqlbatch.KeyedLoader` is created on first attribute access, so a
  request that touches two of fifty loaders builds two.
- :class:`Context` carries the request, the registry and the database session
  source; :class:`GraphQL` (Strawberry's ASGI app) and :func:`context_getter`
  (FastAPI's ``GraphQLRouter``) build one per request and close it afterwards.
- :class:`LoaderExtension` closes every loader of the operation when it ends,
  and optionally reports batching statistics in the response's ``extensions``.
- :func:`write_through` and :func:`invalidate` keep a mutation's response fresh.
- :func:`from_index_batch` adapts a batch function written for Strawberry's
  ``DataLoader`` or aiodataloader (a list aligned with the keys).

This module imports Strawberry, never SQLAlchemy: anything with
``bind(sessions)`` and ``loader_options`` is treated as a fetcher (see
:class:`Fetcher`), which is what ``gqlbatch.sqlalchemy`` provides.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    NoReturn,
    Protocol,
    TypeVar,
    overload,
    runtime_checkable,
)

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gqlbatch import (
    BatchOptions,
    ErrorMode,
    GqlBatchError,
    KeyedLoader,
    LoaderStats,
    RetryPolicy,
    WrongEventLoopError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.background import BackgroundTasks
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket
    from strawberry.types import ExecutionContext

    from gqlbatch.strawberry.asgi import GraphQL

__all__ = [
    "BatchLengthError",
    "Context",
    "Fetcher",
    "GraphQL",
    "LoaderExtension",
    "LoaderRegistry",
    "LoaderSpec",
    "RegistryClosedError",
    "StatementCounting",
    "StatementScope",
    "context_getter",
    "from_index_batch",
    "invalidate",
    "loader",
    "write_through",
]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
RegistryT = TypeVar("RegistryT", bound="LoaderRegistry")


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class Fetcher(Protocol):
    """What the registry treats as a fetcher rather than a plain batch function.

    ``gqlbatch.sqlalchemy``'s fetchers (``by_column(User.id)`` and friends)
    satisfy it; so does anything else with these two members:

    - ``bind(sessions)`` returns the batch function (an async callable
      ``(keys) -> Mapping``) that reads through ``sessions``, the registry's
      session source;
    - ``loader_options`` holds default :class:`~gqlbatch.KeyedLoader` options
      (``key_type``, ``many``, ...). Options given to :func:`loader` win.

    When the registry has no ``sessions``, the fetcher is used as it is (it may
    be bound already); one whose optional ``sessions`` attribute is None is
    known to be unbound, and asking for its loader raises TypeError at once.
    """

    @property
    def loader_options(self) -> Mapping[str, Any]: ...

    def bind(self, sessions: Any, /) -> Any: ...


class StatementScope(Protocol):
    """The value a :class:`StatementCounting` scope yields: statements counted so far."""

    @property
    def count(self) -> int: ...


@runtime_checkable
class StatementCounting(Protocol):
    """Counts SQL statements per scope, like ``gqlbatch.sqlalchemy.StatementCounter``.

    ``scope()`` is a context manager; statements executed inside it (in the
    same task or in tasks started from it) are counted in the
    :class:`StatementScope` it yields, including statements of scopes nested
    inside it.
    """

    def scope(self) -> AbstractContextManager[StatementScope]: ...


# --------------------------------------------------------------------------- errors


class RegistryClosedError(GqlBatchError, RuntimeError):
    """A closed registry was asked for a loader: its request is over."""

    def __init__(self, registry: str, loader: str | None = None) -> None:
        self.registry = registry
        self.loader = loader
        refused = "serve another operation" if loader is None else f"hand out loader {loader!r}"
        super().__init__(
            f"{registry} is closed (its request has ended) and cannot {refused}; "
            f"create one {registry} per request"
        )


class BatchLengthError(GqlBatchError, ValueError):
    """An index-based batch function returned a list that does not match its keys."""

    def __init__(self, loader: str, keys: int, values: int) -> None:
        self.loader = loader
        self.keys = keys
        self.values = values
        super().__init__(
            f"index-based batch function {loader} returned {values} value"
            f"{'s' if values != 1 else ''} for {keys} key{'s' if keys != 1 else ''}; it must "
            "return exactly one value (or exception) per key, in the order of the keys"
        )


# --------------------------------------------------------------------------- declaring loaders

_UNSET: Any = object()

# Options of KeyedLoader that BatchOptions validates; checked when a loader is declared.
_ENGINE_OPTIONS = (
    "max_batch_size",
    "max_wait_ms",
    "max_queue_size",
    "max_concurrency",
    "error_mode",
    "retry",
    "batch_timeout_ms",
    "name",
)
_REGISTRY_OPTIONS = tuple(option for option in _ENGINE_OPTIONS if option != "name")
"""The engine options a registry may set for all its loaders (a name is each loader's own)."""


class LoaderSpec(Generic[K, V]):
    """One declared loader: a descriptor on a :class:`LoaderRegistry` subclass.

    Read on the class it is the declaration itself; read on a registry
    instance it is that instance's :class:`~gqlbatch.KeyedLoader`, created on
    first access. Create it with :func:`loader`.
    """

    __slots__ = ("attribute", "options", "owner", "source")

    def __init__(self, source: Any, options: Mapping[str, Any]) -> None:
        self.source = source
        self.options: Mapping[str, Any] = dict(options)
        self.attribute = ""
        self.owner = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attribute = name
        self.owner = owner.__name__

    @property
    def is_fetcher(self) -> bool:
        """Whether the source is a fetcher (bound to the registry's sessions on creation)."""
        return isinstance(self.source, Fetcher) and not isinstance(self.source, type)

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> LoaderSpec[K, V]: ...

    @overload
    def __get__(self, instance: LoaderRegistry, owner: type[Any]) -> KeyedLoader[K, V]: ...

    def __get__(
        self, instance: LoaderRegistry | None, owner: type[Any]
    ) -> LoaderSpec[K, V] | KeyedLoader[K, V]:
        if instance is None:
            return self
        return instance._loader(self)

    def __set__(self, instance: LoaderRegistry, value: object) -> NoReturn:
        raise AttributeError(
            f"{type(instance).__name__}.{self.attribute} is a declared loader and cannot be "
            "assigned; declare another loader instead"
        )

    def __repr__(self) -> str:
        return f"<loader {self.owner}.{self.attribute} of {self.source!r}>"


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]],
    *,
    key_of: None = ...,
    many: Literal[False] = ...,
    missing: Literal["error"],
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]],
    *,
    key_of: None = ...,
    many: Literal[False] = ...,
    missing: Literal["none"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
) -> LoaderSpec[K, V | None]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Iterable[V]]],
    *,
    key_of: Callable[[V], K],
    many: Literal[True],
    missing: Literal["none", "error"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
) -> LoaderSpec[K, list[V]]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Iterable[V]]],
    *,
    key_of: Callable[[V], K],
    many: Literal[False] = ...,
    missing: Literal["error"],
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Iterable[V]]],
    *,
    key_of: Callable[[V], K],
    many: Literal[False] = ...,
    missing: Literal["none"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
) -> LoaderSpec[K, V | None]: ...


def loader(
    source: Any,
    *,
    key_of: Any = _UNSET,
    many: Any = _UNSET,
    missing: Any = _UNSET,
    key_type: Any = _UNSET,
    max_batch_size: Any = _UNSET,
    max_wait_ms: Any = _UNSET,
    max_queue_size: Any = _UNSET,
    max_concurrency: Any = _UNSET,
    error_mode: Any = _UNSET,
    retry: Any = _UNSET,
    batch_timeout_ms: Any = _UNSET,
    cache: Any = _UNSET,
    cache_key: Any = _UNSET,
    name: Any = _UNSET,
) -> LoaderSpec[Any, Any]:
    """Declare a loader on a :class:`LoaderRegistry` subclass.

    ``source`` is a batch function (``async (keys) -> Mapping``, as for
    :class:`~gqlbatch.KeyedLoader`) or a fetcher (see :class:`Fetcher`). The
    keyword arguments are :class:`~gqlbatch.KeyedLoader`'s options; those not
    given keep the fetcher's defaults (``loader_options``), then the core's.
    ``name`` defaults to the attribute's name, which is also the loader's name
    in errors and statistics.

    Engine options are validated here, when the class is defined, not when a
    request first touches the loader.
    """
    if not callable(source) and not isinstance(source, Fetcher):
        raise TypeError(
            f"loader() needs a batch function or a fetcher, got {source!r} "
            f"({type(source).__name__})"
        )
    given = {
        "key_of": key_of,
        "many": many,
        "missing": missing,
        "key_type": key_type,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "max_queue_size": max_queue_size,
        "max_concurrency": max_concurrency,
        "error_mode": error_mode,
        "retry": retry,
        "batch_timeout_ms": batch_timeout_ms,
        "cache": cache,
        "cache_key": cache_key,
        "name": name,
    }
    options = {key: value for key, value in given.items() if value is not _UNSET}
    BatchOptions(**{key: options[key] for key in _ENGINE_OPTIONS if key in options})
    return LoaderSpec(source, options)


# --------------------------------------------------------------------------- the registry


class LoaderRegistry:
    """Base class of a request's loaders, declared as class attributes with :func:`loader`.

    Example::

        class Loaders(LoaderRegistry):
            user = loader(fetch_users, key_type=int)
            posts_by_author = loader(by_column(Post.author_id, many=True))

    Create one instance per request (:class:`GraphQL` and
    :func:`context_getter` do it for you). Each loader is created on its first
    access and lives as long as the operation that uses it: when the last
    operation running on the registry ends, :class:`LoaderExtension` closes its
    loaders and the registry forgets them, so a later operation sharing the
    context (a websocket connection, a batched HTTP request) starts with empty
    caches. :meth:`close` / :meth:`aclose` end the registry itself; after that
    it refuses to hand out loaders.

    Args:
        sessions: the session source fetchers read through (a
            ``gqlbatch.sqlalchemy`` ``SessionSource`` or an ``async_sessionmaker``).
            Plain batch functions ignore it.
        statements: a :class:`StatementCounting` object; when given, each loader
            counts the SQL statements its batches execute (see :meth:`sql_statements`).
        options: engine options every loader of this registry is created with
            (``max_batch_size``, ``max_wait_ms``, ``max_queue_size``,
            ``max_concurrency``, ``error_mode``, ``retry``, ``batch_timeout_ms``),
            for settings known only at run time. A declaration's own options
            win over these, and these over a fetcher's defaults. Validated here.
    """

    _specs: ClassVar[Mapping[str, LoaderSpec[Any, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs: dict[str, LoaderSpec[Any, Any]] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if isinstance(value, LoaderSpec):
                    specs[attribute] = value
                else:
                    specs.pop(attribute, None)
        for attribute in specs:
            if attribute in vars(LoaderRegistry):
                raise TypeError(
                    f"{cls.__name__}.{attribute}: a loader cannot be named {attribute!r}, "
                    f"which {LoaderRegistry.__name__} uses itself; pick another name"
                )
        cls._specs = specs

    def __init__(
        self,
        *,
        sessions: Any = None,
        statements: StatementCounting | None = None,
        options: Mapping[str, Any] | None = None,
    ):
        if statements is not None and not isinstance(statements, StatementCounting):
            raise TypeError(
                f"statements must have a scope() method (a StatementCounter), got {statements!r}"
            )
        defaults = dict(options or {})
        unknown = sorted(set(defaults) - set(_REGISTRY_OPTIONS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}(options=...): {', '.join(map(repr, unknown))} "
                f"cannot be set for every loader; allowed: {', '.join(_REGISTRY_OPTIONS)}"
            )
        BatchOptions(**defaults)
        self._defaults = defaults
        self.sessions = sessions
        """The session source fetchers are bound to (None when not given)."""
        self.statements = statements
        """The statement counter, or None."""
        self._loaders: dict[str, KeyedLoader[Any, Any]] = {}
        self._sql: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._operations = 0
        self._closed = False

    # --- reading

    @classmethod
    def declared(cls) -> tuple[str, ...]:
        """The names of every loader this class declares, in definition order."""
        return tuple(cls._specs)

    def get(self, name: str) -> KeyedLoader[Any, Any]:
        """The loader declared as ``name`` (created if needed); KeyError naming it if unknown."""
        spec = type(self)._specs.get(name)
        if spec is None:
            raise KeyError(
                f"{type(self).__name__} declares no loader {name!r}; "
                f"it declares {', '.join(map(repr, self._specs)) or 'none'}"
            )
        return self._loader(spec)

    def created(self) -> dict[str, KeyedLoader[Any, Any]]:
        """The loaders created so far (since the last operation ended), by name."""
        return dict(self._loaders)

    def stats(self) -> dict[str, LoaderStats]:
        """A statistics snapshot of every loader created so far, by name."""
        return {name: made.stats for name, made in self._loaders.items()}

    def sql_statements(self) -> dict[str, int]:
        """SQL statements executed by each loader's batches (needs ``statements=``)."""
        return {name: self._sql.get(name, 0) for name in self._loaders}

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`aclose` was called."""
        return self._closed

    # --- closing

    def close(self) -> None:
        """Close every loader now (waiters get LoaderClosedError) and refuse new ones."""
        self._closed = True
        self._forget()

    async def aclose(self) -> None:
        """Let every loader finish its dispatched batches, close it, and refuse new ones."""
        self._closed = True
        loaders = list(self._loaders.values())
        self._loaders.clear()
        self._loop = None
        for made in loaders:
            await made.aclose()

    async def __aenter__(self: RegistryT) -> RegistryT:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._loaders)}/{len(self._specs)} created"
        return f"<{type(self).__name__} {state}>"

    # --- private: creation and the operation lifecycle

    def _loader(self, spec: LoaderSpec[K, V]) -> KeyedLoader[K, V]:
        """The loader for ``spec``: created on first access, refused once closed."""
        if self._closed:
            raise RegistryClosedError(type(self).__name__, spec.attribute)
        made = self._loaders.get(spec.attribute)
        loop = _running_loop()
        if made is not None:
            # The core raises WrongEventLoopError on use; failing at access points at
            # the real mistake (a registry shared between event loops) sooner.
            if loop is not None and self._loop is not None and loop is not self._loop:
                raise WrongEventLoopError(made.name)
            return made
        if self._loop is None:
            self._loop = loop
        elif loop is not None and loop is not self._loop:
            raise WrongEventLoopError(spec.options.get("name", spec.attribute))
        made = self._create(spec)
        self._loaders[spec.attribute] = made
        return made

    def _create(self, spec: LoaderSpec[K, V]) -> KeyedLoader[K, V]:
        """Build the KeyedLoader a declaration describes, bound to this registry's sessions."""
        options: dict[str, Any] = dict(spec.source.loader_options) if spec.is_fetcher else {}
        options.update(self._defaults)
        batch_fn = spec.source
        if spec.is_fetcher:
            if self.sessions is not None:
                batch_fn = spec.source.bind(self.sessions)
            elif getattr(spec.source, "sessions", _UNSET) is None:  # known to be unbound
                raise TypeError(
                    f"{type(self).__name__}.{spec.attribute} reads through {spec.source!r}, "
                    f"which needs a session source: create the registry with "
                    f"{type(self).__name__}(sessions=...)"
                )
        options.update(spec.options)
        options["name"] = spec.options.get("name") or spec.attribute
        if self.statements is not None:
            batch_fn = self._counted(spec.attribute, batch_fn)
        return KeyedLoader(batch_fn, **options)

    def _counted(self, attribute: str, batch_fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``batch_fn`` so the statements each call executes add up per loader."""
        statements = self.statements
        assert statements is not None
        sql = self._sql

        @functools.wraps(batch_fn)
        async def counted(keys: list[Any]) -> Any:
            with statements.scope() as scope:
                try:
                    return await batch_fn(keys)
                finally:
                    sql[attribute] = sql.get(attribute, 0) + scope.count

        return counted

    def _operation_started(self) -> None:
        """An operation begins using this registry (called by LoaderExtension)."""
        if self._closed:
            raise RegistryClosedError(type(self).__name__)
        self._operations += 1

    def _operation_ended(self) -> None:
        """An operation ended; the last one running closes and forgets every loader."""
        self._operations -= 1
        if self._operations <= 0:
            self._operations = 0
            self._forget()

    def _forget(self) -> None:
        """Close every loader now and drop it, so nothing cached outlives the operation."""
        loaders = list(self._loaders.values())
        self._loaders.clear()
        self._sql.clear()
        self._loop = None
        for made in loaders:
            made.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# --------------------------------------------------------------------------- the context


class Context(Generic[RegistryT]):
    """What resolvers see as ``info.context``: the request, its loaders and its sessions.

    Annotate resolvers with ``strawberry.Info[Context[Loaders], None]`` and
    ``info.context.loaders.user`` is a ``KeyedLoader[int, User]`` to mypy and
    to an editor. Subclass it to carry more (the current user, settings).

    :class:`GraphQL` and :func:`context_getter` create one per request and
    call :meth:`aclose` when the request is over; with ``schema.execute``
    build it yourself (``Context(loaders=Loaders())``).

    Attributes:
        loaders: this request's registry.
        request: the Starlette ``Request`` or ``WebSocket`` (None outside a server).
        response: the response Strawberry will send (headers, cookies, status).
        sessions: the session source of this request (also the registry's), or None.
        statements: the :class:`StatementCounting` object, or None.
    """

    background_tasks: BackgroundTasks | None = None
    connection_params: Any | None = None

    def __init__(
        self,
        *,
        loaders: RegistryT,
        request: Request | WebSocket | None = None,
        response: Response | WebSocket | None = None,
        sessions: Any = None,
        statements: StatementCounting | None = None,
        owns_sessions: bool = False,
    ) -> None:
        if not isinstance(loaders, LoaderRegistry):
            raise TypeError(f"loaders must be a LoaderRegistry instance, got {loaders!r}")
        self.loaders = loaders
        self.request = request
        self.response = response
        self.sessions = sessions if sessions is not None else loaders.sessions
        self.statements = statements if statements is not None else loaders.statements
        self._owns_sessions = owns_sessions

    async def aclose(self) -> None:
        """End of request: close the registry, then the sessions if this context made them."""
        try:
            await self.loaders.aclose()
        finally:
            closer = getattr(self.sessions, "aclose", None)
            if self._owns_sessions and closer is not None:
                await closer()


def _build_context(
    context_class: Callable[..., Context[RegistryT]],
    registry: Callable[..., RegistryT],
    sessions: Any,
    sessions_factory: Callable[[], Any] | None,
    statements: StatementCounting | None,
) -> Context[RegistryT]:
    """A new context with a new registry, and new sessions if a factory is given."""
    owns = sessions_factory is not None
    request_sessions = sessions_factory() if sessions_factory is not None else sessions
    return context_class(
        loaders=registry(sessions=request_sessions, statements=statements),
        sessions=request_sessions,
        statements=statements,
        owns_sessions=owns,
    )


def _check_sessions(sessions: Any, sessions_factory: Any) -> None:
    if sessions is not None and sessions_factory is not None:
        raise TypeError(
            "pass sessions= (one session source shared by every request) or "
            "sessions_factory= (called once per request), not both"
        )
    if sessions_factory is not None and not callable(sessions_factory):
        raise TypeError(f"sessions_factory must be callable, got {sessions_factory!r}")


def context_getter(
    registry: Callable[..., RegistryT],
    *,
    sessions: Any = None,
    sessions_factory: Callable[[], Any] | None = None,
    statements: StatementCounting | None = None,
) -> Callable[[], AsyncIterator[Context[RegistryT]]]:
    """A FastAPI ``context_getter`` building a :class:`Context` per request.

    Use it as ``GraphQLRouter(schema, context_getter=context_getter(Loaders, sessions=maker))``.
    It is a dependency with ``yield``: after the request the registry is closed,
    and sessions made by ``sessions_factory`` are closed with their ``aclose()``.
    The context is a ``strawberry.fastapi.BaseContext`` too, so the router fills in
    ``request``, ``response`` and ``background_tasks``. Needs FastAPI.

    Args:
        registry: the :class:`LoaderRegistry` subclass (or a factory taking
            ``sessions=`` and ``statements=``).
        sessions: one session source shared by every request (``PerBatchSessions``,
            an ``async_sessionmaker``).
        sessions_factory: called once per request for a session source of its
            own (``lambda: SharedSession(maker)``); closed when the request ends.
        statements: a :class:`StatementCounting` object for the statistics.
    """
    from gqlbatch.strawberry.fastapi import FastAPIContext

    _check_sessions(sessions, sessions_factory)

    async def get_context() -> AsyncIterator[Context[RegistryT]]:
        context = _build_context(FastAPIContext, registry, sessions, sessions_factory, statements)
        try:
            yield context
        finally:
            await context.aclose()

    return get_context


def _registry_of(context: Any) -> LoaderRegistry | None:
    """The registry a Strawberry context carries: ``context.loaders`` or ``context["loaders"]``."""
    found = (
        context.get("loaders")
        if isinstance(context, Mapping)
        else getattr(context, "loaders", None)
    )
    return found if isinstance(found, LoaderRegistry) else None


# --------------------------------------------------------------------------- the extension


class LoaderExtension(SchemaExtension):
    """Closes the request's loaders when an operation ends; optionally reports statistics.

    Pass the class, or :meth:`with_statistics` (a factory), to
    ``strawberry.Schema(extensions=[...])`` — never an instance: Strawberry
    creates one per operation, so nothing leaks between concurrent requests.

    It finds the registry at ``info.context.loaders`` (or ``context["loaders"]``).
    When the last operation using the registry ends, every loader it created is
    closed (anything still waiting is rejected with ``LoaderClosedError``) and
    forgotten.

    With statistics on, the response gets ``extensions["gqlbatch"]``::

        {"loaders": {"user": {"loads": 100, "cache_hits": 90, "batches": 1,
                              "largest_batch": 10, "keys_dispatched": 10,
                              "failed_batches": 0, "sql_statements": 1}},
         "sql_statements": 3}

    ``sql_statements`` appear when the context (or registry) carries a
    :class:`StatementCounting` object: per loader, the statements its batches
    executed; for the operation, every statement executed while it ran.

    Args:
        statistics: False (default), True, or a callable deciding per operation
            from Strawberry's ``ExecutionContext`` (e.g. a debug header).
        key: the key under ``extensions`` (default ``"gqlbatch"``).
    """

    def __init__(
        self,
        *,
        execution_context: ExecutionContext | None = None,
        statistics: bool | Callable[[ExecutionContext], bool] = False,
        key: str = "gqlbatch",
    ) -> None:
        if not isinstance(statistics, bool) and not callable(statistics):
            raise TypeError(f"statistics must be a bool or a callable, got {statistics!r}")
        if execution_context is not None:
            self.execution_context = execution_context
        self.statistics = statistics
        self.key = key
        self._results: dict[str, Any] = {}

    @classmethod
    def with_statistics(
        cls,
        statistics: bool | Callable[[ExecutionContext], bool] = True,
        *,
        key: str = "gqlbatch",
    ) -> Callable[[], LoaderExtension]:
        """A factory for ``Schema(extensions=[...])`` with statistics enabled."""
        cls(statistics=statistics, key=key)  # validate now, at schema definition
        return functools.partial(cls, statistics=statistics, key=key)

    def _wants_statistics(self) -> bool:
        if isinstance(self.statistics, bool):
            return self.statistics
        return bool(self.statistics(self.execution_context))

    def on_operation(self) -> Iterator[None]:
        registry = _registry_of(self.execution_context.context)
        if registry is None:
            yield
            return
        registry._operation_started()
        report = self._wants_statistics()
        counter = _statements_of(self.execution_context.context, registry) if report else None
        scope = counter.scope() if counter is not None else None
        counted = scope.__enter__() if scope is not None else None
        try:
            yield
        finally:
            try:
                if report:
                    self._results = self._report(registry, counted)
            finally:
                if scope is not None:
                    scope.__exit__(None, None, None)
                registry._operation_ended()

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # A subscription is one operation that resolves each event separately: each
        # event gets the statistics of its own resolution, and, when no other
        # operation shares the registry, fresh loaders, so nothing cached while one
        # event resolved is served to the next. Other streams (@defer, @stream)
        # keep their loaders: later frames may still be resolving with them.
        registry = _registry_of(self.execution_context.context)
        if registry is None or not self._is_subscription():
            yield
            return
        if self._wants_statistics():
            report = self._report(registry, None)
            extensions = getattr(result, "extensions", None)
            if isinstance(extensions, dict):
                extensions.update(report)
            elif hasattr(result, "extensions"):
                result.extensions = report
        yield
        if registry._operations == 1:
            registry._forget()

    def _is_subscription(self) -> bool:
        try:
            operation_type = self.execution_context.operation_type
        except Exception:  # an unparsable document: not ours to report
            return False
        return operation_type is OperationType.SUBSCRIPTION

    def _report(self, registry: LoaderRegistry, counted: StatementScope | None) -> dict[str, Any]:
        """The statistics of every loader the operation created, JSON-ready."""
        sql = registry.sql_statements()
        loaders: dict[str, Any] = {}
        for name, stats in registry.stats().items():
            entry = {
                "loads": stats.loads,
                "cache_hits": stats.cache_hits,
                "batches": stats.batches,
                "largest_batch": stats.largest_batch,
                "keys_dispatched": stats.keys_dispatched,
                "failed_batches": stats.failed_batches,
            }
            if counted is not None:
                entry["sql_statements"] = sql.get(name, 0)
            loaders[name] = entry
        report: dict[str, Any] = {"loaders": loaders}
        if counted is not None:
            report["sql_statements"] = counted.count
        return {self.key: report}

    def get_results(self) -> dict[str, Any]:
        return self._results


def _statements_of(context: Any, registry: LoaderRegistry) -> StatementCounting | None:
    found = (
        context.get("statements")
        if isinstance(context, Mapping)
        else getattr(context, "statements", None)
    )
    if isinstance(found, StatementCounting):
        return found
    return registry.statements


# --------------------------------------------------------------------------- mutations


def write_through(loader: KeyedLoader[K, V], key: K, value: V) -> None:
    """After a write, make ``loader`` answer ``key`` with ``value`` for the rest of the request.

    Replaces whatever the loader cached for ``key`` (a value, a miss, or a
    load in flight), so a mutation's response shows what it just wrote.
    """
    loader.clear(key)
    loader.prime(key, value)


def invalidate(loader: KeyedLoader[K, Any], *keys: K) -> None:
    """After a write, forget ``keys`` so the next ``load`` reads them again.

    Use it where the new value is not at hand, or for grouped loaders
    (``posts_by_author``) whose list for a key the write changed. With no
    keys, the whole cache of ``loader`` is dropped.
    """
    if keys:
        loader.clear_many(keys)
    else:
        loader.clear_all()


# --------------------------------------------------------------------------- the bridge


def from_index_batch(
    batch_fn: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]],
    *,
    name: str | None = None,
) -> Callable[[list[K]], Awaitable[dict[K, V | BaseException]]]:
    """Adapt an index-based batch function to a keyed one.

    ``batch_fn`` is written for Strawberry's ``DataLoader`` or aiodataloader:
    it returns a list with one value (or exception instance) per key, in key
    order. The result maps each key to its value, so it can back a
    :class:`~gqlbatch.KeyedLoader` or a :func:`loader` declaration; exception
    instances still fail only their own key. A list of the wrong length raises
    :class:`BatchLengthError` naming ``name`` (default: the function's name),
    which the loader hands to every caller of the batch as a ``BatchError``.
    Keys must be hashable.
    """
    if not callable(batch_fn):
        raise TypeError(f"batch_fn must be callable, got {batch_fn!r}")
    label = name or getattr(batch_fn, "__qualname__", None) or repr(batch_fn)

    @functools.wraps(batch_fn)
    async def keyed(keys: list[K]) -> dict[K, V | BaseException]:
        values = await batch_fn(keys)
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise TypeError(
                f"index-based batch function {label} must return a list aligned with its keys, "
                f"got {type(values).__name__}"
            )
        if len(values) != len(keys):
            raise BatchLengthError(label, len(keys), len(values))
        return dict(zip(keys, values, strict=True))

    return keyed


# --------------------------------------------------------------------------- lazy names


def __getattr__(name: str) -> Any:
    # The ASGI app needs Starlette, which Strawberry does not require; import it on use.
    if name == "GraphQL":
        from gqlbatch.strawberry.asgi import GraphQL

        return GraphQL
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
