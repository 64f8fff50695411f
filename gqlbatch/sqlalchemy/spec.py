"""What a fetcher is built from: a frozen :class:`FetcherSpec`, shared by bound copies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.sql import ColumnElement, FromClause, Select
from sqlalchemy.sql.base import ExecutableOption

__all__ = ["KEYS", "LIMIT", "FetcherSpec", "KeyPart"]

KEYS = "gqlbatch_keys"
"""The bind parameter holding a batch's keys (an IN list, or a PostgreSQL array)."""
LIMIT = "gqlbatch_limit"
"""The bind parameter holding a many-rows fetcher's per-key ``limit``."""


@dataclass(frozen=True, slots=True)
class KeyPart:
    """One column of the key: how it is filtered, typed, and read back from a row."""

    column: ColumnElement[Any]
    python_type: type | tuple[type, ...] | None
    attribute: str | None  # read the key from this attribute of the entity, or
    extra: bool  # from an extra selected column (a secondary table's column)


@dataclass(frozen=True, slots=True)
class FetcherSpec:
    """Everything a fetcher needs to build its statement; shared by bound copies."""

    name: str
    mapper: Mapper[Any]
    parts: tuple[KeyPart, ...]
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
