"""Fetchers: the batch functions built by ``by_column``, ``by_group`` and ``by_relationship``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Generic, Literal, Self, TypeVar, Unpack

import sqlalchemy.exc as sa_exc
from sqlalchemy import and_, any_, bindparam, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import RelationshipProperty
from sqlalchemy.sql import ColumnElement, Select

from gqlbatch import KeyedLoader, LoaderOptions
from gqlbatch.sqlalchemy.dialects import dialect_max_params
from gqlbatch.sqlalchemy.sessions import SessionSource, as_source
from gqlbatch.sqlalchemy.spec import KEYS, LIMIT, FetcherSpec

__all__ = ["ManyFetcher", "OneFetcher"]

K = TypeVar("K")
T = TypeVar("T")


def _key_ok(value: object, python_type: type | tuple[type, ...] | None) -> bool:
    if python_type is None:
        return True
    if isinstance(value, bool) and python_type is int:
        return False
    return isinstance(value, python_type)


class _Fetcher(Generic[K, T]):
    """What one-row and many-rows fetchers share: binding, options and execution."""

    __slots__ = ("_sessions", "_spec")

    def __init__(self, spec: FetcherSpec, sessions: SessionSource | None = None) -> None:
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

    def loader(
        self,
        sessions: object = None,
        *,
        missing: Literal["none", "error"] = "none",
        **options: Unpack[LoaderOptions[K]],
    ) -> KeyedLoader[K, Any]:
        """A ``KeyedLoader`` over this fetcher: ``loader_options`` merged with ``options``.

        ``sessions`` binds a copy of the fetcher first; without it the fetcher
        must already be bound. ``missing`` and ``options`` are those of
        :class:`~gqlbatch.KeyedLoader`.
        """
        fetcher = self if sessions is None else self.bind(sessions)
        if fetcher._sessions is None:
            raise RuntimeError(self._unbound_message())
        merged = {**self.loader_options, "missing": missing, **options}
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
            params: dict[str, Any] = {} if spec.limit is None else {LIMIT: spec.limit}
            chunks = [unique_keys]
            if not use_array:
                chunks = self._chunks(unique_keys, dialect, own_params)
            for chunk in chunks:
                if use_array and spec.composite:  # one array per key column
                    for index in range(len(spec.parts)):
                        params[f"{KEYS}_{index}"] = [key[index] for key in chunk]
                else:
                    params[KEYS] = chunk
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
        limit = self._spec.max_params or dialect_max_params(dialect)
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
                _parameter_count(bind) for bind, name in compiled.bind_names.items() if name != KEYS
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
                bindparam(f"{KEYS}_{i}", type_=ARRAY(c.type)) for i, c in enumerate(key_columns)
            ]
            names = [f"key_{i}" for i in range(len(arrays))]
            unnested = func.unnest(*arrays).table_valued(*names).render_derived()
            key_filter: ColumnElement[bool] = tuple_(*key_columns).in_(
                select(*(unnested.c[name] for name in names))
            )
        elif use_array:
            array = bindparam(KEYS, type_=ARRAY(key_columns[0].type))
            key_filter = key_columns[0] == any_(array)
        elif spec.composite:
            key_filter = tuple_(*key_columns).in_(bindparam(KEYS, expanding=True))
        else:
            key_filter = key_columns[0].in_(bindparam(KEYS, expanding=True))
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
                .where(inner.c.row_number <= bindparam(LIMIT))
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
        return type(self)(self._spec, as_source(sessions))

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
