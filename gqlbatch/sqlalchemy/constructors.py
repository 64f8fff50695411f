"""Declaring a fetcher: :func:`by_column`, :func:`by_group`, :func:`by_relationship`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any, TypedDict, TypeVar, Unpack, overload

from sqlalchemy import Tuple
from sqlalchemy.orm import Mapper, QueryableAttribute, RelationshipDirection, RelationshipProperty
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.base import ExecutableOption

from gqlbatch.sqlalchemy.fetchers import ManyFetcher, OneFetcher
from gqlbatch.sqlalchemy.spec import FetcherSpec, KeyPart

__all__ = ["ColumnOptions", "GroupOptions", "by_column", "by_group", "by_relationship"]

K = TypeVar("K")
T = TypeVar("T")


class ColumnOptions(TypedDict, total=False):
    """The keyword arguments every fetcher declaration takes (see :func:`by_column`)."""

    where: Any
    options: Any
    sessions: object
    name: str | None
    max_params: int | None


class GroupOptions(ColumnOptions, total=False):
    """The keyword arguments of many-rows declarations (see :func:`by_group`)."""

    order_by: Any
    limit: int | None


def _python_type(column: ColumnElement[Any]) -> type | tuple[type, ...] | None:
    """The Python type keys of ``column`` must have, or None when the type does not say."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return None
    if python_type is float:
        return (float, int)
    return python_type


def _part_for(mapper: Mapper[Any], column: ColumnElement[Any]) -> KeyPart:
    """A key column of ``mapper``'s entity, read back through its mapped attribute."""
    try:
        attribute: str | None = mapper.get_property_by_column(column).key
    except UnmappedColumnError:
        attribute = None
    return KeyPart(column, _python_type(column), attribute, attribute is None)


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


def _name(mapper: Mapper[Any], parts: Sequence[KeyPart]) -> str:
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


@overload
def by_column(
    column: QueryableAttribute[K],
    /,
    **declaration: Unpack[ColumnOptions],
) -> OneFetcher[K, Any]: ...


@overload
def by_column(
    column: Any,
    /,
    *columns: Any,
    **declaration: Unpack[ColumnOptions],
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
    spec = _column_spec(
        columns, "by_column", name, where, None, None, options, max_params, many=False
    )
    fetcher: OneFetcher[Any, Any] = OneFetcher(spec)
    return fetcher if sessions is None else fetcher.bind(sessions)


@overload
def by_group(
    column: QueryableAttribute[K],
    /,
    **declaration: Unpack[GroupOptions],
) -> ManyFetcher[K, Any]: ...


@overload
def by_group(
    column: Any,
    /,
    *columns: Any,
    **declaration: Unpack[GroupOptions],
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
    spec = _column_spec(
        columns, "by_group", name, where, order_by, limit, options, max_params, many=True
    )
    fetcher: ManyFetcher[Any, Any] = ManyFetcher(spec)
    return fetcher if sessions is None else fetcher.bind(sessions)


def _column_spec(
    columns: tuple[Any, ...],
    argument: str,
    name: object,
    where: Any,
    order_by: Any,
    limit: Any,
    options: Any,
    max_params: Any,
    *,
    many: bool,
) -> FetcherSpec:
    """The spec of a fetcher keyed by mapped columns (``by_column``, ``by_group``)."""
    mapper, cols = _columns_of(columns, argument)
    parts = tuple(_part_for(mapper, c) for c in cols)
    checked = _check_common(where, order_by, limit, options, max_params, many=many)
    return FetcherSpec(
        name=_checked_name(name) or _name(mapper, parts),
        mapper=mapper,
        parts=parts,
        composite=len(parts) > 1,
        many=many,
        **checked,
    )


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


# A collection (Mapped[list[Post]]) gives a ManyFetcher, anything else a OneFetcher; the
# keys are the parent's join columns, whose types the attribute does not carry. A list is
# a T too, so the overloads overlap; the first (the collection) is meant to win.
@overload
def by_relationship(  # type: ignore[overload-overlap]
    attribute: QueryableAttribute[Collection[T]],
    /,
    **declaration: Unpack[GroupOptions],
) -> ManyFetcher[Any, T]: ...


@overload
def by_relationship(
    attribute: QueryableAttribute[T],
    /,
    **declaration: Unpack[GroupOptions],
) -> OneFetcher[Any, T]: ...


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
) -> OneFetcher[Any, Any] | ManyFetcher[Any, Any]:
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
        parts = tuple(KeyPart(remote, _python_type(local), None, True) for local, remote in pairs)
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
    spec = FetcherSpec(
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
