"""A request's loaders: :class:`LoaderRegistry`, and :class:`LoaderSpec`, one declared loader.

The descriptor lives with the registry it reads from; :func:`~gqlbatch.strawberry.loader`
(module ``declare``) creates one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from threading import get_ident
from typing import Any, ClassVar, Generic, NoReturn, TypeVar, overload

from gqlbatch import (
    BatchOptions,
    EngineOptions,
    GqlBatchError,
    KeyedLoader,
    LoaderOptions,
    LoaderStats,
    WrongEventLoopError,
)
from gqlbatch.strawberry.protocols import StatementCounting, counts_statements, is_fetcher

__all__ = [
    "ENGINE_OPTIONS",
    "REGISTRY_OPTIONS",
    "UNSET",
    "LoaderRegistry",
    "LoaderSpec",
    "RegistryClosedError",
    "RegistryT",
]

K = TypeVar("K")
V = TypeVar("V")
RegistryT = TypeVar("RegistryT", bound="LoaderRegistry")

UNSET: Any = object()
"""An option :func:`loader` was not given (None is a value some options take)."""

# Options of KeyedLoader that BatchOptions validates; checked when a loader is declared.
ENGINE_OPTIONS = (
    "max_batch_size",
    "max_wait_ms",
    "max_queue_size",
    "max_concurrency",
    "error_mode",
    "retry",
    "batch_timeout_ms",
    "name",
)
REGISTRY_OPTIONS = tuple(option for option in ENGINE_OPTIONS if option != "name")
"""The engine options a registry may set for all its loaders (a name is each loader's own)."""


class LoaderSpec(Generic[K, V]):
    """One declared loader: a descriptor on a :class:`LoaderRegistry` subclass.

    Read on the class it is the declaration itself; read on a registry
    instance it is that instance's :class:`~gqlbatch.KeyedLoader`, created on
    first access. Create it with :func:`loader`.
    """

    __slots__ = ("_fetcher", "attribute", "options", "owner", "source")

    def __init__(self, source: Any, options: Mapping[str, Any]) -> None:
        self.source = source
        self.options: Mapping[str, Any] = dict(options)
        self.attribute = ""
        self.owner = ""
        self._fetcher = is_fetcher(source)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attribute = name
        self.owner = owner.__name__

    @property
    def is_fetcher(self) -> bool:
        """Whether the source is a fetcher (bound to the registry's sessions on creation)."""
        return self._fetcher

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> LoaderSpec[K, V]: ...

    @overload
    def __get__(self, instance: LoaderRegistry, owner: type[Any]) -> KeyedLoader[K, V]: ...

    def __get__(
        self, instance: LoaderRegistry | None, owner: type[Any]
    ) -> LoaderSpec[K, V] | KeyedLoader[K, V]:
        if instance is None:
            return self
        # The fast path (see LoaderRegistry._loader), here: one Python call per
        # ``info.context.loaders.x`` and no system call (a resolver makes one per key).
        made = instance._loaders.get(self.attribute)
        bound = instance._loop
        if (
            made is not None
            and bound is not None
            and instance._thread == get_ident()
            and bound.is_running()
        ):
            return made
        return instance._loader(self)

    def __set__(self, instance: LoaderRegistry, value: object) -> NoReturn:
        raise AttributeError(
            f"{type(instance).__name__}.{self.attribute} is a declared loader and cannot be "
            "assigned; declare another loader instead"
        )

    def __repr__(self) -> str:
        return f"<loader {self.owner}.{self.attribute} of {self.source!r}>"


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
        loader_options: options of single loaders, by attribute name, known only
            at run time and winning over all the others: typically a shared
            ``value_cache`` (``{"user": {"value_cache": users}}``, see
            ``docs/scaling-out.md``). Any :class:`~gqlbatch.KeyedLoader` option
            but ``name``, ``key_of``, ``many`` and ``missing``.
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
        options: EngineOptions | None = None,
        loader_options: Mapping[str, LoaderOptions[Any]] | None = None,
    ):
        if statements is not None and not counts_statements(statements):
            raise TypeError(
                f"statements must have a scope() method (a StatementCounter), got {statements!r}"
            )
        self._defaults = self._checked_options(options) if options else {}
        self._per_loader = _check_loader_options(type(self), loader_options or {})
        self.sessions = sessions
        """The session source fetchers are bound to (None when not given)."""
        self.statements = statements
        """The statement counter, or None."""
        self._loaders: dict[str, KeyedLoader[Any, Any]] = {}
        self._sql: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None  # the thread running ``_loop``
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
        self._thread = None
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

    @classmethod
    def _checked_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options=`` validated, once per registry class name and set of options.

        A server builds a registry per request with the same options (a
        ``functools.partial``): they are checked on the first and remembered
        (a bounded LRU; a refusal is never remembered).
        """
        defaults = dict(options)
        items = tuple(sorted(defaults.items()))
        try:
            hash(items)
        except TypeError:  # an unhashable value (refused below): nothing to remember it by
            _check_options(cls.__name__, items)
        else:
            _check_options_once(cls.__name__, items)
        return defaults

    def _loader(self, spec: LoaderSpec[K, V]) -> KeyedLoader[K, V]:
        """The loader for ``spec``: created on first access, refused once closed.

        ``LoaderSpec.__get__`` hands out an existing loader itself when this
        registry's loop is running in this thread (so it is the running loop: a
        thread runs one loop at a time), asking for no running loop: on CPython
        3.11 that costs a ``getpid()`` system call, once per ``loaders.x``.
        """
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
            self._thread = get_ident() if loop is not None else None
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
            elif getattr(spec.source, "sessions", UNSET) is None:  # known to be unbound
                raise TypeError(
                    f"{type(self).__name__}.{spec.attribute} reads through {spec.source!r}, "
                    f"which needs a session source: create the registry with "
                    f"{type(self).__name__}(sessions=...)"
                )
        options.update(spec.options)
        options.update(self._per_loader.get(spec.attribute, {}))
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
        self._thread = None
        for made in loaders:
            made.close()


def _check_options(registry: str, items: tuple[tuple[str, Any], ...]) -> None:
    """Refuse ``options=`` items a registry may not set for every loader, or bad values."""
    unknown = sorted({name for name, _ in items} - set(REGISTRY_OPTIONS))
    if unknown:
        raise TypeError(
            f"{registry}(options=...): {', '.join(map(repr, unknown))} "
            f"cannot be set for every loader; allowed: {', '.join(REGISTRY_OPTIONS)}"
        )
    BatchOptions(**dict(items))


_check_options_once = functools.lru_cache(maxsize=256)(_check_options)
""":func:`_check_options`, remembered for the options it accepted."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_loader_options(
    registry: type[LoaderRegistry], given: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``loader_options=``, checked: declared loaders only, KeyedLoader options only."""
    allowed = set(LoaderOptions.__optional_keys__) - {"name"}
    checked: dict[str, dict[str, Any]] = {}
    for attribute, options in given.items():
        if attribute not in registry._specs:
            raise TypeError(
                f"{registry.__name__}(loader_options=...): {registry.__name__} declares no "
                f"loader {attribute!r}; it declares {', '.join(map(repr, registry._specs))}"
            )
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(
                f"{registry.__name__}(loader_options=...): {', '.join(map(repr, unknown))} "
                f"cannot be set for loader {attribute!r}; allowed: {', '.join(sorted(allowed))}"
            )
        checked[attribute] = dict(options)
    return checked
