"""Bulk fetchers for SQLAlchemy 2.x async: a mapped column or relationship as a batch function.

A *fetcher* is an async callable ``(keys) -> {key: value | exception}`` built from a
declaration such as ``by_column(User.id)``; it is the ``batch_fn`` of a
:class:`~gqlbatch.KeyedLoader` as it is, so a resolver never writes
``select ... where id in (...)`` by hand::

    users = by_column(User.id)                       # one User per id
    posts = by_group(Post.author_id, order_by=Post.id.desc(), limit=5)
    tags = by_relationship(Post.tags)                 # many-to-many, through post_tags

    loader = users.loader(sessions)                   # KeyedLoader(name="User.id", key_type=int)
    ada = await loader.load(1)

What every fetcher guarantees:

* **One statement per batch.** Keys are deduplicated and sent as bind parameters
  in one ``SELECT``, whatever their order, duplicates or absence. On PostgreSQL
  keys are sent as *one array parameter* (``col = ANY($1::INTEGER[])``; a
  composite key as one array per column, through ``unnest()``), so even 100,000
  keys are one statement, and the statement text never changes with the batch
  size (asyncpg's prepared-statement cache keeps hitting). Elsewhere keys go
  into ``IN (...)``; when they would
  exceed the dialect's bind-parameter limit (SQLite's is read from the linked
  library at run time) the fetcher splits them into as few statements as
  needed, of equal size.
* **Per-key limits in SQL.** ``limit=`` on a many-rows fetcher numbers each key's
  rows with ``row_number() OVER (PARTITION BY key ORDER BY ...)`` and keeps the
  first ``limit``: never more rows leave the database than are returned.
* **Fully loaded objects.** The batch's session is closed (per-batch sessions)
  or never committed by the fetcher (shared session), so every column attribute
  is loaded and nothing is expired; touching an attribute later never does I/O.
  Relationships are not loaded unless ``options`` say so (``selectinload``):
  reach them through their own loader. Declare relationships ``lazy="raise"``
  so that a forgotten one fails loudly instead of querying.
* **Type checks before SQL.** ``loader_options["key_type"]`` is the key column's
  Python type, so ``KeyedLoader`` rejects ``"1"`` for an integer column at
  ``load()``. The fetcher checks again (and checks each element of a composite
  key): a bad key gets its own ``TypeError`` and never reaches the database.

Sessions: see :class:`SessionSource`. The default, :class:`PerBatchSessions`,
gives each batch its own short session; :class:`SharedSession` runs a request's
batches one at a time on one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, Self, TypeVar, overload, runtime_checkable

import sqlalchemy.exc as sa_exc
from sqlalchemy import Tuple, and_, any_, bindparam, event, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapper, QueryableAttribute, RelationshipDirection, RelationshipProperty
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql import ColumnElement, FromClause, Select
from sqlalchemy.sql.base import ExecutableOption

from gqlbatch import KeyedLoader, RetryPolicy

__all__ = [
    "DB_RETRY",
    "DisconnectError",
    "ManyFetcher",
    "OneFetcher",
    "PerBatchSessions",
    "SessionSource",
    "SharedSession",
    "StatementCounter",
    "StatementScope",
    "by_column",
    "by_group",
    "by_relationship",
    "db_retry_policy",
]

K = TypeVar("K")
T = TypeVar("T")


# --------------------------------------------------------------------------- sessions


@runtime_checkable
class SessionSource(Protocol):
    """Where a fetcher gets the :class:`AsyncSession` for one batch.

    ``session()`` returns an async context manager; the fetcher holds it open
    for exactly one batch (one or, above the bind-parameter limit, a few
    statements). Wherever a source is accepted, a bare ``async_sessionmaker``
    is accepted too and means :class:`PerBatchSessions`.
    """

    def session(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """An async context manager giving a session for one batch."""
        ...


class PerBatchSessions:
    """The default source: every batch opens its own short session and closes it.

    Why it is the default: a GraphQL request dispatches several loaders in the
    same event-loop iteration, and one ``AsyncSession`` must never serve two of
    them at once. With a session per batch, concurrent batches run concurrently
    (on PostgreSQL, truly in parallel on separate connections), no batch waits
    for another, a failed batch cannot poison the next one, and no transaction
    stays open between batches; a connection is checked out only while a
    statement runs. The cost is a pool checkout per batch and, for a request,
    up to as many connections at once as loaders dispatch together: size the
    pool for it. Objects come back detached and fully loaded (the session never
    commits, so nothing is expired).
    """

    __slots__ = ("_maker",)

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        if not isinstance(sessionmaker, async_sessionmaker):
            raise TypeError(
                f"sessionmaker must be an async_sessionmaker, got {sessionmaker!r} "
                f"({type(sessionmaker).__name__})"
            )
        self._maker = sessionmaker

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        """The ``async_sessionmaker`` each batch's session comes from."""
        return self._maker

    def session(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A new session, closed (its connection returned to the pool) on exit."""
        return self._maker(expire_on_commit=False)

    def __repr__(self) -> str:
        return f"PerBatchSessions({self._maker!r})"


class SharedSession:
    """One session for a whole request; its batches take turns behind an ``asyncio.Lock``.

    Use it when the request must see one connection (a temporary table, a
    transaction-scoped setting such as PostgreSQL row-level security variables,
    or a pool too small for a connection per loader), or to share the identity
    map: a row loaded by two loaders is one object. Concurrent batches are
    serialized, so a request's loaders no longer query in parallel, and the
    connection stays checked out from the first batch until :meth:`aclose`, which
    the request must call at its end (or use ``async with``).

    A batch that fails or is cancelled discards the session (closing it: objects
    already handed out stay loaded) and the next batch starts a fresh one, so one
    database error never poisons the rest of the request. The session is opened
    with ``expire_on_commit=False``; the fetchers never commit.
    """

    __slots__ = ("_closed", "_lock", "_maker", "_session")

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        if not isinstance(sessionmaker, async_sessionmaker):
            raise TypeError(
                f"sessionmaker must be an async_sessionmaker, got {sessionmaker!r} "
                f"({type(sessionmaker).__name__})"
            )
        self._maker = sessionmaker
        self._lock = asyncio.Lock()
        self._session: AsyncSession | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Wait for the lock, then yield the request's session (opened on first use)."""
        if self._closed:
            raise RuntimeError("SharedSession is closed; create one per request")
        async with self._lock:
            if self._closed:  # closed while this batch waited for the lock
                raise RuntimeError("SharedSession is closed; create one per request")
            if self._session is None:
                self._session = self._maker(expire_on_commit=False)
            session = self._session
            try:
                yield session
            except BaseException:
                self._session = None
                await _close_shielded(session)
                raise

    async def aclose(self) -> None:
        """Close the session and return its connection; idempotent. Waits for a running batch."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            session, self._session = self._session, None
            if session is not None:
                await _close_shielded(session)

    async def __aenter__(self) -> SharedSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SharedSession({self._maker!r}, {state})"


async def _close_shielded(session: AsyncSession) -> None:
    """Close ``session`` to the end even if the caller is cancelled meanwhile.

    A half-closed session could keep its connection checked out for good.
    """
    task = asyncio.ensure_future(session.close())
    cancelled: BaseException | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
    task.result()
    if cancelled is not None:
        raise cancelled


def _as_source(sessions: object, argument: str = "sessions") -> SessionSource:
    """A bare ``async_sessionmaker`` means per-batch sessions; anything else must be a source."""
    if isinstance(sessions, async_sessionmaker):
        return PerBatchSessions(sessions)
    if isinstance(sessions, SessionSource) and not isinstance(sessions, type):
        return sessions
    raise TypeError(
        f"{argument} must be a SessionSource (PerBatchSessions, SharedSession, ...) or an "
        f"async_sessionmaker, got {sessions!r} ({type(sessions).__name__})"
    )


# --------------------------------------------------------------------------- statement counting


class StatementScope:
    """The statements executed inside one :meth:`StatementCounter.scope` (and its tasks)."""

    __slots__ = ("parameters", "statements")

    def __init__(self) -> None:
        self.statements: list[str] = []
        """The SQL text of each statement, in execution order, as sent to the driver."""
        self.parameters: list[Any] = []
        """The bind parameters of each statement, aligned with :attr:`statements`."""

    @property
    def count(self) -> int:
        """How many statements ran in this scope."""
        return len(self.statements)

    def __repr__(self) -> str:
        return f"<StatementScope count={self.count}>"


class StatementCounter:
    """Counts the SQL statements an engine executes (``before_cursor_execute``).

    ``total`` counts everything since construction. ``scope()`` counts only the
    statements run from its own context: the scope lives in a context variable,
    and tasks created inside it (a loader's batch tasks, created by the first
    ``load()`` of the request) inherit it, so concurrent requests each count
    their own statements. Scopes nest; an outer scope counts the inner one's
    statements too. ``close()`` removes the listener::

        counter = StatementCounter(engine)
        with counter.scope() as sql:
            await handle_request()
        assert sql.count == 3
    """

    def __init__(self, engine: AsyncEngine | Engine) -> None:
        if isinstance(engine, AsyncEngine):
            engine = engine.sync_engine
        if not isinstance(engine, Engine):
            raise TypeError(
                f"engine must be an AsyncEngine or an Engine, got {engine!r} "
                f"({type(engine).__name__})"
            )
        self._engine = engine
        self._total = 0
        self._scopes: contextvars.ContextVar[tuple[StatementScope, ...]] = contextvars.ContextVar(
            f"gqlbatch_statement_scopes_{id(self)}", default=()
        )
        self._closed = False
        event.listen(engine, "before_cursor_execute", self._count)

    @property
    def total(self) -> int:
        """Statements executed on the engine since this counter was created."""
        return self._total

    @contextlib.contextmanager
    def scope(self) -> Iterator[StatementScope]:
        """Count (and record) the statements run from this context until exit."""
        counted = StatementScope()
        token = self._scopes.set((*self._scopes.get(), counted))
        try:
            yield counted
        finally:
            self._scopes.reset(token)

    def close(self) -> None:
        """Stop counting; idempotent."""
        if not self._closed:
            self._closed = True
            event.remove(self._engine, "before_cursor_execute", self._count)

    def __enter__(self) -> StatementCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _count(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """The event listener: one call per statement sent to the driver."""
        self._total += 1
        for counted in self._scopes.get():
            counted.statements.append(statement)
            counted.parameters.append(parameters)

    def __repr__(self) -> str:
        return f"<StatementCounter total={self._total}>"


# --------------------------------------------------------------------------- retries


class _DisconnectMeta(type):
    """Makes ``isinstance(error, DisconnectError)`` recognise invalidated connections."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, sa_exc.DBAPIError) and bool(instance.connection_invalidated)


class DisconnectError(Exception, metaclass=_DisconnectMeta):
    """Matches any SQLAlchemy ``DBAPIError`` raised because the connection was lost.

    Never raised itself: it exists for ``isinstance`` checks and for
    ``RetryPolicy.retry_on``. SQLAlchemy marks an error with
    ``connection_invalidated`` when the dialect recognises a disconnect, whatever
    the error's class.
    """


_DB_RETRY_ON: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # the pool had no connection to give in time
    DisconnectError,
    TimeoutError,
    ConnectionError,
)


def db_retry_policy(
    *,
    retries: int = 3,
    base_delay_ms: float = 50,
    factor: float = 2.0,
    max_delay_ms: float = 2_000,
    jitter: bool = True,
) -> RetryPolicy:
    """A :class:`~gqlbatch.RetryPolicy` for database work: transient failures only.

    Retries connection errors and timeouts (SQLAlchemy ``OperationalError``,
    ``InterfaceError``, pool ``TimeoutError``, any disconnect, and the built-in
    ``TimeoutError``/``ConnectionError``). Never ``IntegrityError``,
    ``ProgrammingError``, ``DataError``: running the same statement again cannot
    fix them. Note that SQLite reports some programming errors ("no such table")
    as ``OperationalError``; on SQLite those are retried too.
    """
    return RetryPolicy(
        retries=retries,
        base_delay_ms=base_delay_ms,
        factor=factor,
        max_delay_ms=max_delay_ms,
        jitter=jitter,
        retry_on=_DB_RETRY_ON,
    )


DB_RETRY: RetryPolicy = db_retry_policy()
"""``db_retry_policy()`` with its defaults: 3 retries from 50 ms, doubling, at most 2 s."""


# --------------------------------------------------------------------------- bind-parameter limits

_POSTGRES_MAX_PARAMS = 32_767  # asyncpg (and the wire protocol) allow an Int16 count
_SQLITE_FALLBACK_MAX_PARAMS = 999  # SQLITE_MAX_VARIABLE_NUMBER before SQLite 3.32
_KNOWN_MAX_PARAMS = {
    "postgresql": _POSTGRES_MAX_PARAMS,
    "mysql": 65_535,
    "mariadb": 65_535,
    "mssql": 2_100,
    "oracle": 65_535,
}
_UNKNOWN_MAX_PARAMS = 999
_sqlite_max_params: int | None = None


def _read_sqlite_max_params() -> int:
    """SQLITE_LIMIT_VARIABLE_NUMBER of the SQLite library linked into this process.

    aiosqlite drives the standard library's ``sqlite3``, so a throw-away
    in-memory connection reports the limit every connection starts with.
    """
    global _sqlite_max_params
    if _sqlite_max_params is None:
        try:
            probe = sqlite3.connect(":memory:")
            try:
                _sqlite_max_params = int(probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
            finally:
                probe.close()
        except (sqlite3.Error, AttributeError):  # pragma: no cover - very old sqlite3
            _sqlite_max_params = _SQLITE_FALLBACK_MAX_PARAMS
    return _sqlite_max_params


def _max_params(dialect: Dialect) -> int:
    if dialect.name == "sqlite":
        return _read_sqlite_max_params()
    return _KNOWN_MAX_PARAMS.get(dialect.name, _UNKNOWN_MAX_PARAMS)


# --------------------------------------------------------------------------- declarations


_KEYS = "gqlbatch_keys"
_LIMIT = "gqlbatch_limit"


@dataclass(frozen=True, slots=True)
class _KeyPart:
    """One column of the key: how it is filtered, typed, and read back from a row."""

    column: ColumnElement[Any]
    python_type: type | tuple[type, ...] | None
    attribute: str | None  # read the key from this attribute of the entity, or
    extra: bool  # from an extra selected column (a secondary table's column)


@dataclass(frozen=True, slots=True)
class _Spec:
    """Everything a fetcher needs to build its statement; shared by bound copies."""

    name: str
    mapper: Mapper[Any]
    parts: tuple[_KeyPart, ...]
    composite: bool
    many: bool
    secondary: FromClause | None = None
    secondary_on: ColumnElement[bool] | None = None
    where: tuple[Any, ...] = ()
    order_by: tuple[Any, ...] = ()
    limit: int | None = None
    options: tuple[ExecutableOption, ...] = ()
    max_params: int | None = None
    relationship: RelationshipProperty[Any] | None = None
    parent_attributes: tuple[str, ...] = ()
    statements: dict[tuple[str, bool], tuple[Select[Any], int]] = field(
        default_factory=dict, compare=False
    )

    @property
    def key_type(self) -> type | tuple[type, ...] | None:
        if self.composite:
            return tuple
        return self.parts[0].python_type


def _python_type(column: ColumnElement[Any]) -> type | tuple[type, ...] | None:
    """The Python type keys of ``column`` must have, or None when the type does not say."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return None
    if python_type is float:
        return (float, int)
    return python_type


def _key_ok(value: object, python_type: type | tuple[type, ...] | None) -> bool:
    if python_type is None:
        return True
    if isinstance(value, bool) and python_type is int:
        return False
    return isinstance(value, python_type)


def _part_for(mapper: Mapper[Any], column: ColumnElement[Any]) -> _KeyPart:
    """A key column of ``mapper``'s entity, read back through its mapped attribute."""
    try:
        attribute: str | None = mapper.get_property_by_column(column).key
    except UnmappedColumnError:
        attribute = None
    return _KeyPart(column, _python_type(column), attribute, attribute is None)


def _columns_of(arguments: tuple[Any, ...], argument: str) -> tuple[Mapper[Any], list[Any]]:
    """The mapper and the mapped columns named by attributes or one ``tuple_(...)``."""
    if len(arguments) == 1 and isinstance(arguments[0], Tuple):
        arguments = tuple(arguments[0].clauses)
    if not arguments:
        raise TypeError(f"{argument} needs at least one mapped column attribute, like User.id")
    mappers: list[Mapper[Any]] = []
    columns: list[Any] = []
    for item in arguments:
        if isinstance(item, QueryableAttribute):
            if isinstance(item.property, RelationshipProperty):
                raise TypeError(
                    f"{argument}: {item} is a relationship; use by_relationship({item})"
                )
            mapper = item.parent.mapper
            columns.append(item.property.columns[0] if len(item.property.columns) == 1 else item)
            mappers.append(mapper)
            continue
        annotations = getattr(item, "_annotations", {})
        owner = annotations.get("parentmapper")
        if isinstance(item, ColumnElement) and isinstance(owner, Mapper):
            mappers.append(owner)
            columns.append(item)
            continue
        raise TypeError(
            f"{argument} takes mapped column attributes (User.id) or tuple_(...) of them, "
            f"got {item!r} ({type(item).__name__})"
        )
    if any(m is not mappers[0] for m in mappers):
        raise ValueError(
            f"{argument}: all key columns must belong to one mapped class, got "
            f"{', '.join(sorted({m.class_.__name__ for m in mappers}))}"
        )
    return mappers[0], columns


def _name(mapper: Mapper[Any], parts: Sequence[_KeyPart]) -> str:
    names = [p.attribute or str(getattr(p.column, "key", p.column)) for p in parts]
    cls = mapper.class_.__name__
    return f"{cls}.{names[0]}" if len(names) == 1 else f"{cls}({', '.join(names)})"


def _expressions(value: Any, argument: str) -> tuple[Any, ...]:
    """One SQL expression or a sequence of them (columns, attributes, text()) as a tuple."""
    from sqlalchemy.sql.elements import ClauseElement

    if value is None:
        return ()
    items = tuple(value) if isinstance(value, list | tuple) else (value,)
    for item in items:
        if not isinstance(item, ClauseElement) and not hasattr(item, "__clause_element__"):
            raise TypeError(
                f"{argument} must be one or a sequence of SQL expressions, got {item!r} "
                f"({type(item).__name__})"
            )
    return items


def _loader_options(value: Any) -> tuple[ExecutableOption, ...]:
    if value is None:
        return ()
    items = tuple(value) if isinstance(value, list | tuple) else (value,)
    for item in items:
        if not isinstance(item, ExecutableOption):
            raise TypeError(
                f"options must be one or a sequence of loader options such as "
                f"selectinload(User.posts), got {item!r} ({type(item).__name__})"
            )
    return items


def _check_common(
    where: Any, order_by: Any, limit: Any, options: Any, max_params: Any, *, many: bool
) -> dict[str, Any]:
    """Validate the options every fetcher takes; returns them normalised."""
    checked: dict[str, Any] = {
        "where": _expressions(where, "where"),
        "order_by": _expressions(order_by, "order_by"),
        "options": _loader_options(options),
    }
    if limit is not None:
        if not many:
            raise ValueError("limit applies to many-rows fetchers only (by_group, a collection)")
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError(f"limit must be an int or None, got {limit!r} ({type(limit).__name__})")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
    checked["limit"] = limit
    if max_params is not None:
        if not isinstance(max_params, int) or isinstance(max_params, bool):
            raise TypeError(
                f"max_params must be an int or None, got {max_params!r} "
                f"({type(max_params).__name__})"
            )
        if max_params < 1:
            raise ValueError(f"max_params must be >= 1, got {max_params!r}")
    checked["max_params"] = max_params
    return checked


# --------------------------------------------------------------------------- fetchers


class _Fetcher(Generic[K, T]):
    """What one-row and many-rows fetchers share: binding, options and execution."""

    __slots__ = ("_sessions", "_spec")

    def __init__(self, spec: _Spec, sessions: SessionSource | None = None) -> None:
        self._spec = spec
        self._sessions = sessions

    # -- public surface

    @property
    def name(self) -> str:
        """The default loader name: ``"User.id"``, ``"User.posts"``, ``"Account(org, login)"``."""
        return self._spec.name

    @property
    def entity(self) -> type:
        """The mapped class whose objects this fetcher returns."""
        return self._spec.mapper.class_

    @property
    def key_type(self) -> type | tuple[type, ...] | None:
        """The Python type of a key (``tuple`` for composite keys), or None if unknown."""
        return self._spec.key_type

    @property
    def sessions(self) -> SessionSource | None:
        """The session source this fetcher is bound to, or None for a declaration."""
        return self._sessions

    @property
    def relationship(self) -> RelationshipProperty[Any] | None:
        """The relationship a :func:`by_relationship` fetcher was built from, else None."""
        return self._spec.relationship

    def key_for(self, parent: object) -> K:
        """The key that loads ``parent``'s relationship (``post.author_id``, ``user.id``).

        Only for fetchers built by :func:`by_relationship`: it reads the parent's
        side of the join, so a resolver never spells out the foreign key.
        """
        spec = self._spec
        if spec.relationship is None:
            raise TypeError(f"fetcher {spec.name!r} was not built from a relationship")
        values = tuple(getattr(parent, attribute) for attribute in spec.parent_attributes)
        key: K = values if spec.composite else values[0]  # type: ignore[assignment]
        return key

    @property
    def loader_options(self) -> Mapping[str, Any]:
        """Defaults for :class:`~gqlbatch.KeyedLoader`: ``name`` and ``key_type``."""
        options: dict[str, Any] = {"name": self._spec.name}
        if self._spec.key_type is not None:
            options["key_type"] = self._spec.key_type
        return options

    def loader(self, sessions: object = None, **options: Any) -> KeyedLoader[K, Any]:
        """A ``KeyedLoader`` over this fetcher: ``loader_options`` merged with ``options``.

        ``sessions`` binds a copy of the fetcher first; without it the fetcher
        must already be bound.
        """
        fetcher = self if sessions is None else self.bind(sessions)
        if fetcher._sessions is None:
            raise RuntimeError(self._unbound_message())
        merged = {**self.loader_options, **options}
        batch_fn: Any = fetcher
        loader: KeyedLoader[K, Any] = KeyedLoader(batch_fn, **merged)
        return loader

    # -- execution

    async def _fetch(self, keys: list[Any]) -> tuple[dict[Any, Any], list[tuple[Any, Any]]]:
        """Check the keys, run the statement(s); returns per-key errors and (key, object) rows."""
        if self._sessions is None:
            raise RuntimeError(self._unbound_message())
        errors: dict[Any, Any] = {}
        wanted: dict[Any, None] = {}
        for key in keys:
            error = self._check_key(key)
            if error is not None:
                errors[key] = error
            else:
                wanted[key] = None
        rows: list[tuple[Any, Any]] = []
        if not wanted:
            return errors, rows
        spec = self._spec
        unique_keys = list(wanted)
        async with self._sessions.session() as session:
            dialect = session.get_bind(mapper=spec.mapper).dialect
            use_array = dialect.name == "postgresql"
            statement, own_params = self._statement(dialect, use_array)
            params: dict[str, Any] = {} if spec.limit is None else {_LIMIT: spec.limit}
            chunks = [unique_keys]
            if not use_array:
                chunks = self._chunks(unique_keys, dialect, own_params)
            for chunk in chunks:
                if use_array and spec.composite:  # one array per key column
                    for index in range(len(spec.parts)):
                        params[f"{_KEYS}_{index}"] = [key[index] for key in chunk]
                else:
                    params[_KEYS] = chunk
                result = await session.execute(statement, params)
                for row in result.unique().all():
                    rows.append((self._row_key(row), row[0]))
        return errors, rows

    def _check_key(self, key: Any) -> TypeError | None:
        spec = self._spec
        if not spec.composite:
            part = spec.parts[0]
            if _key_ok(key, part.python_type):
                return None
            return TypeError(
                f"loader {spec.name!r}: key {key!r} is a {type(key).__name__}, "
                f"but {spec.name} holds {_type_name(part.python_type)}"
            )
        if not isinstance(key, tuple) or len(key) != len(spec.parts):
            return TypeError(
                f"loader {spec.name!r}: key {key!r} must be a tuple of {len(spec.parts)} "
                f"values ({', '.join(_type_name(p.python_type) for p in spec.parts)})"
            )
        for index, (value, part) in enumerate(zip(key, spec.parts, strict=True)):
            if not _key_ok(value, part.python_type):
                return TypeError(
                    f"loader {spec.name!r}: key {key!r} has {value!r} "
                    f"({type(value).__name__}) at position {index}, but that column holds "
                    f"{_type_name(part.python_type)}"
                )
        return None

    def _row_key(self, row: Any) -> Any:
        """The key a result row belongs to: from the object's attributes or extra columns."""
        values = []
        extra = 1
        for part in self._spec.parts:
            if part.extra:
                values.append(row[extra])
                extra += 1
            else:
                values.append(getattr(row[0], part.attribute))  # type: ignore[arg-type]
        return tuple(values) if self._spec.composite else values[0]

    def _chunks(self, keys: list[Any], dialect: Dialect, own_params: int) -> list[list[Any]]:
        """As few equal chunks as the dialect's bind-parameter limit allows."""
        limit = self._spec.max_params or _max_params(dialect)
        width = len(self._spec.parts)
        per_statement = max(1, (limit - own_params) // width)
        count = math.ceil(len(keys) / per_statement)
        size = math.ceil(len(keys) / count)
        return [keys[i : i + size] for i in range(0, len(keys), size)]

    def _statement(self, dialect: Dialect, use_array: bool) -> tuple[Select[Any], int]:
        """The batch's statement (built once per kind) and its bind parameters besides keys."""
        cache_key = (dialect.name, use_array)
        cached = self._spec.statements.get(cache_key)
        if cached is None:
            statement = self._build(use_array)
            compiled = statement.compile(dialect=dialect)
            own = sum(
                _parameter_count(bind)
                for bind, name in compiled.bind_names.items()
                if name != _KEYS
            )
            cached = self._spec.statements[cache_key] = (statement, own)
        return cached

    def _build(self, use_array: bool) -> Select[Any]:
        spec = self._spec
        key_columns = [p.column for p in spec.parts]
        if use_array and spec.composite:
            # (a, b) IN (SELECT * FROM unnest($1::T1[], $2::T2[])): a long list of
            # row constructors would exhaust PostgreSQL's parser stack instead.
            arrays = [
                bindparam(f"{_KEYS}_{i}", type_=ARRAY(c.type)) for i, c in enumerate(key_columns)
            ]
            names = [f"key_{i}" for i in range(len(arrays))]
            unnested = func.unnest(*arrays).table_valued(*names).render_derived()
            key_filter: ColumnElement[bool] = tuple_(*key_columns).in_(
                select(*(unnested.c[name] for name in names))
            )
        elif use_array:
            array = bindparam(_KEYS, type_=ARRAY(key_columns[0].type))
            key_filter = key_columns[0] == any_(array)
        elif spec.composite:
            key_filter = tuple_(*key_columns).in_(bindparam(_KEYS, expanding=True))
        else:
            key_filter = key_columns[0].in_(bindparam(_KEYS, expanding=True))
        entity = spec.mapper
        extras = [p.column for p in spec.parts if p.extra]

        def joined(statement: Select[Any]) -> Select[Any]:
            if spec.secondary is not None:
                statement = statement.join(spec.secondary, spec.secondary_on)
            return statement.where(key_filter, *spec.where)

        if spec.limit is None:
            statement = joined(select(entity, *extras))
            if spec.order_by:
                statement = statement.order_by(*spec.order_by)
        else:
            # Number each key's rows in SQL, keep the first `limit`, and join the
            # numbered primary keys back to the entity: the entity stays the root
            # of the statement, so loader options such as selectinload(Post.tags)
            # apply unchanged.
            primary_key = list(spec.mapper.primary_key)
            order_by = spec.order_by or tuple(primary_key)
            number = func.row_number().over(partition_by=key_columns, order_by=order_by)
            labelled_pk = [c.label(f"pk_{i}") for i, c in enumerate(primary_key)]
            labelled_extra = [c.label(f"key_{i}") for i, c in enumerate(extras)]
            inner = joined(
                select(*labelled_pk, *labelled_extra, number.label("row_number"))
            ).subquery("numbered")
            on = and_(*(c == inner.c[f"pk_{i}"] for i, c in enumerate(primary_key)))
            statement = (
                select(entity, *(inner.c[f"key_{i}"] for i in range(len(extras))))
                .join(inner, on)
                .where(inner.c.row_number <= bindparam(_LIMIT))
                .order_by(inner.c.row_number)
            )
        if spec.options:
            statement = statement.options(*spec.options)
        return statement

    def _unbound_message(self) -> str:
        return (
            f"fetcher {self._spec.name!r} is not bound to a session source; call "
            f".bind(sessions) or pass sessions= (a PerBatchSessions, SharedSession or "
            f"async_sessionmaker)"
        )

    def bind(self, sessions: object) -> Self:
        """A copy of this fetcher that takes its sessions from ``sessions``.

        ``sessions`` is a :class:`SessionSource` or an ``async_sessionmaker``
        (meaning :class:`PerBatchSessions`). The declaration itself is unchanged,
        so it can live at class level and be bound once per request.
        """
        return type(self)(self._spec, _as_source(sessions))

    def __repr__(self) -> str:
        state = "unbound" if self._sessions is None else f"bound to {self._sessions!r}"
        return f"<{type(self).__name__} {self._spec.name} {state}>"


def _parameter_count(bind: Any) -> int:
    """Parameters a bind sends: an expanding one (``where=col.in_([...])``) one per value."""
    if bind.expanding and isinstance(bind.value, list | tuple):
        return max(1, len(bind.value))
    return 1


def _type_name(python_type: type | tuple[type, ...] | None) -> str:
    if python_type is None:
        return "any value"
    if isinstance(python_type, tuple):
        return " or ".join(t.__name__ for t in python_type)
    return python_type.__name__


class OneFetcher(_Fetcher[K, T]):
    """Fetches at most one object per key: ``{key: object}``; absent keys are left out.

    Built by :func:`by_column` and by :func:`by_relationship` for a many-to-one
    (or one-to-one) relationship. The loader turns an absent key into ``None``
    or ``MissingKeyError`` as it is configured. Two rows for one key (the column
    was not unique after all) make that key a ``MultipleResultsFound`` error.
    """

    __slots__ = ()

    async def __call__(self, keys: list[K]) -> Mapping[K, T | BaseException]:
        """The batch function: one statement (or a few, see the module) for ``keys``."""
        errors, rows = await self._fetch(keys)
        found: dict[Any, Any] = dict(errors)
        for key, obj in rows:
            previous = found.get(key)
            if previous is None:
                found[key] = obj
            elif previous is not obj and not isinstance(previous, BaseException):
                found[key] = sa_exc.MultipleResultsFound(
                    f"loader {self._spec.name!r}: more than one {self.entity.__name__} "
                    f"row for key {key!r}"
                )
        return found


class ManyFetcher(_Fetcher[K, T]):
    """Fetches a list of objects per key: ``{key: [object, ...]}``, ``[]`` when none match.

    Built by :func:`by_group` and by :func:`by_relationship` for a one-to-many or
    many-to-many relationship. Each list keeps the ``order_by`` order and holds
    at most ``limit`` objects (both applied in SQL).
    """

    __slots__ = ()

    async def __call__(self, keys: list[K]) -> Mapping[K, list[T] | BaseException]:
        """The batch function: every valid key maps to a list, ``[]`` when nothing matches."""
        errors, rows = await self._fetch(keys)
        found: dict[Any, Any] = {key: [] for key in keys if key not in errors}
        found.update(errors)
        for key, obj in rows:
            # A row whose key nobody asked for (a case-insensitive collation can
            # match "ADA" for "ada") is left out rather than failing the batch.
            group = found.get(key)
            if isinstance(group, list):
                group.append(obj)
        return found


# --------------------------------------------------------------------------- constructors


@overload
def by_column(
    column: QueryableAttribute[K],
    /,
    *,
    where: Any = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> OneFetcher[K, Any]: ...


@overload
def by_column(
    column: Any,
    /,
    *columns: Any,
    where: Any = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> OneFetcher[tuple[Any, ...], Any]: ...


def by_column(
    *columns: Any,
    where: Any = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> OneFetcher[Any, Any]:
    """One object per key, looked up by a unique column: ``by_column(User.id)``.

    Args:
        columns: a mapped column attribute (``User.email``), or several of them
            or one ``tuple_(...)`` for a composite key (keys are then tuples).
        where: an extra filter (or a sequence of them), ANDed with the key filter.
        options: loader options, e.g. ``selectinload(User.posts)``.
        sessions: a :class:`SessionSource` or ``async_sessionmaker`` to bind at once.
        name: the loader name, by default ``"User.id"``.
        max_params: bind parameters per statement, instead of the dialect's limit
            (IN lists only; PostgreSQL arrays are one parameter whatever the count).
    """
    mapper, cols = _columns_of(columns, "by_column")
    parts = tuple(_part_for(mapper, c) for c in cols)
    checked = _check_common(where, None, None, options, max_params, many=False)
    spec = _Spec(
        name=_checked_name(name) or _name(mapper, parts),
        mapper=mapper,
        parts=parts,
        composite=len(parts) > 1,
        many=False,
        **checked,
    )
    fetcher: OneFetcher[Any, Any] = OneFetcher(spec)
    return fetcher if sessions is None else fetcher.bind(sessions)


@overload
def by_group(
    column: QueryableAttribute[K],
    /,
    *,
    where: Any = None,
    order_by: Any = None,
    limit: int | None = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> ManyFetcher[K, Any]: ...


@overload
def by_group(
    column: Any,
    /,
    *columns: Any,
    where: Any = None,
    order_by: Any = None,
    limit: int | None = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> ManyFetcher[tuple[Any, ...], Any]: ...


def by_group(
    *columns: Any,
    where: Any = None,
    order_by: Any = None,
    limit: int | None = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> ManyFetcher[Any, Any]:
    """A list of objects per key, grouped by a non-unique column: ``by_group(Post.author_id)``.

    Args:
        columns: the grouping column attribute, or several / one ``tuple_(...)``.
        where: an extra filter (or a sequence of them), ANDed with the key filter.
        order_by: the order of each key's list (expressions, as for ``select``).
        limit: at most this many objects per key, chosen in SQL by
            ``row_number() OVER (PARTITION BY key ORDER BY order_by)``; without
            ``order_by`` the primary key orders them.
        options: loader options, e.g. ``selectinload(Post.tags)``.
        sessions: a :class:`SessionSource` or ``async_sessionmaker`` to bind at once.
        name: the loader name, by default ``"Post.author_id"``.
        max_params: bind parameters per statement, instead of the dialect's limit
            (IN lists only; PostgreSQL arrays are one parameter whatever the count).
    """
    mapper, cols = _columns_of(columns, "by_group")
    parts = tuple(_part_for(mapper, c) for c in cols)
    checked = _check_common(where, order_by, limit, options, max_params, many=True)
    spec = _Spec(
        name=_checked_name(name) or _name(mapper, parts),
        mapper=mapper,
        parts=parts,
        composite=len(parts) > 1,
        many=True,
        **checked,
    )
    fetcher: ManyFetcher[Any, Any] = ManyFetcher(spec)
    return fetcher if sessions is None else fetcher.bind(sessions)


def _checked_name(name: object) -> str | None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r} ({type(name).__name__})")
    return name


def _equalities(condition: ColumnElement[Any] | None) -> int | None:
    """How many ``column = column`` terms a join condition has; None if it has anything else."""
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.elements import BinaryExpression, BooleanClauseList, ColumnClause

    if isinstance(condition, BooleanClauseList) and condition.operator is operators.and_:
        total = 0
        for clause in condition.clauses:
            count = _equalities(clause)
            if count is None:
                return None
            total += count
        return total
    if (
        isinstance(condition, BinaryExpression)
        and condition.operator is operators.eq
        and isinstance(condition.left, ColumnClause)
        and isinstance(condition.right, ColumnClause)
    ):
        return 1
    return None


def by_relationship(
    attribute: QueryableAttribute[Any],
    /,
    *,
    where: Any = None,
    order_by: Any = None,
    limit: int | None = None,
    options: Any = None,
    sessions: object = None,
    name: str | None = None,
    max_params: int | None = None,
) -> Any:
    """A fetcher for a relationship attribute, its keys read from the mapper.

    * many-to-one (``Post.author``): a :class:`OneFetcher` keyed by the parent's
      foreign key (``post.author_id``), querying the target by the column it refers to;
    * one-to-many (``User.posts``): a :class:`ManyFetcher` keyed by the parent's
      referenced column (``user.id``), grouping the targets by their foreign key;
    * many-to-many (``Post.tags``): a :class:`ManyFetcher` keyed by the parent's
      column (``post.id``), joining the secondary table once.

    ``fetcher.key_for(parent)`` gives the key for a parent object. Collections
    keep the relationship's own ``order_by`` unless ``order_by`` is given, and
    take ``limit`` (per key, in SQL). The join condition must be plain column
    equality (foreign keys); for anything richer use :func:`by_group` with ``where``.
    """
    prop = getattr(attribute, "property", None)
    if not isinstance(prop, RelationshipProperty):
        raise TypeError(
            f"by_relationship takes a relationship attribute like User.posts, got "
            f"{attribute!r} ({type(attribute).__name__})"
        )
    parent: Mapper[Any] = prop.parent
    target: Mapper[Any] = prop.mapper
    label = f"{parent.class_.__name__}.{prop.key}"
    direction = prop.direction
    if direction is RelationshipDirection.MANYTOMANY:
        pairs = list(prop.synchronize_pairs)  # (parent column, secondary column)
        plain = _equalities(prop.primaryjoin) == len(pairs) and _equalities(
            prop.secondaryjoin
        ) == len(prop.secondary_synchronize_pairs or ())
        parts = tuple(_KeyPart(remote, _python_type(local), None, True) for local, remote in pairs)
    else:
        pairs = list(prop.local_remote_pairs or ())  # (parent column, target column)
        plain = _equalities(prop.primaryjoin) == len(pairs)
        parts = tuple(
            replace(_part_for(target, remote), python_type=_python_type(local))
            for local, remote in pairs
        )
    if not plain:
        raise ValueError(
            f"by_relationship({label}): the join condition {prop.primaryjoin} is more than "
            "foreign-key equality; use by_group(...) with where= for it"
        )
    if order_by is None and prop.order_by:
        order_by = tuple(prop.order_by)
    many = bool(prop.uselist)
    checked = _check_common(where, order_by, limit, options, max_params, many=many)
    spec = _Spec(
        name=_checked_name(name) or label,
        mapper=target,
        parts=parts,
        composite=len(parts) > 1,
        many=many,
        secondary=prop.secondary if direction is RelationshipDirection.MANYTOMANY else None,
        secondary_on=prop.secondaryjoin,
        relationship=prop,
        parent_attributes=tuple(parent.get_property_by_column(local).key for local, _ in pairs),
        **checked,
    )
    fetcher: OneFetcher[Any, Any] | ManyFetcher[Any, Any]
    fetcher = ManyFetcher(spec) if many else OneFetcher(spec)
    return fetcher if sessions is None else fetcher.bind(sessions)
