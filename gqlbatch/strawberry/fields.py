"""Fields that read a loader with no await when the value is known: :func:`loader_field`.

graphql-core completes a field whose resolver returns a plain value on the
spot; an awaitable costs it a coroutine, a ``gather`` and a trip through the
event loop, per field. ``loader_field`` declares a field whose resolver is a
plain function returning ``info.context.loaders.<name>.resolve(key)``: the
cached value itself when the loader holds it, else the loader's future, which
graphql-core awaits with the rest of the level (one batch per loader per level,
as with ``await ...load(key)``).

Strawberry wraps every resolver in a function of its own (it builds an ``Info``,
converts arguments, runs field extensions): tens of thousands of instructions
per call, more than the loader read itself. A ``loader_field`` with no
permission classes or field extensions needs none of it, so
:class:`LoaderExtension` hands graphql-core the plain resolver itself, once per
schema, on its first operation (:func:`use_direct_resolvers`): it reads only
``info.context``, ``info.field_name`` and ``info.path``, which graphql-core's own
``info`` has too.
"""

from __future__ import annotations

import keyword
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import strawberry
from graphql import GraphQLObjectType, GraphQLSchema
from strawberry import Info

from gqlbatch import GqlBatchError
from gqlbatch.strawberry.registry import LoaderRegistry, LoaderSpec

if TYPE_CHECKING:
    from strawberry.extensions.field_extension import FieldExtension
    from strawberry.permission import BasePermission

__all__ = ["LoaderFieldError", "loader_field", "use_direct_resolvers"]

K = TypeVar("K")

_DIRECT = "gqlbatch.direct"
"""Marks a resolver graphql-core may call directly, and a schema whose fields do."""


class LoaderFieldError(GqlBatchError, AttributeError):
    """A :func:`loader_field` could not find its loader or its key (a set-up mistake).

    Attributes:
        field: the field, as ``Type.field`` in the schema.
        loader: the loader's name on the registry.
        key: the attribute the key is read from (None for a key callable).
    """

    def __init__(self, message: str, *, field: str, loader: str, key: str | None) -> None:
        super().__init__(message)
        self.field = field
        self.loader = loader
        self.key = key


def loader_field(
    loader: str | LoaderSpec[K, Any],
    *,
    key: str | Callable[[Any], K],
    name: str | None = None,
    description: str | None = None,
    deprecation_reason: str | None = None,
    permission_classes: list[type[BasePermission]] | None = None,
    extensions: list[FieldExtension] | None = None,
    directives: Sequence[object] = (),
    metadata: Mapping[Any, Any] | None = None,
    graphql_type: Any | None = None,
) -> Any:
    """A Strawberry field whose value is ``loader``'s value for a key of the object.

    Example::

        @strawberry.type
        class Comment:
            author_id: strawberry.Private[int]
            author: User = loader_field(Loaders.user, key="author_id")
            replies: list[Comment] = loader_field("replies", key=lambda c: c.id)

    The resolver is a plain function returning
    ``info.context.loaders.<loader>.resolve(<key>)``: a value the request's
    loader already holds (fetched for another field, or primed by a root
    resolver with ``prime_many``) is completed at once, without an await;
    anything else is the loader's future, batched as ``load`` batches. The
    field's GraphQL type is the class annotation (or ``graphql_type``);
    list-valued loaders (``many=True``) and nullable types need nothing more.
    A key of None (a null foreign key) resolves to null without a load.

    Args:
        loader: the loader, as declared on a :class:`LoaderRegistry` subclass
            (``Loaders.user``) or by its attribute name (``"user"``).
        key: the key, read from the object the field belongs to: an attribute
            name (dotted names follow attributes, ``"author.id"``) or a callable
            taking the object.
        name: the GraphQL name (default: the attribute's, camel-cased).
        description: the field's description in the schema.
        deprecation_reason: marks the field deprecated.
        permission_classes: Strawberry permission classes, checked before the load.
        extensions: Strawberry field extensions.
        directives: schema directives of the field.
        metadata: Strawberry field metadata.
        graphql_type: the field's type, when the class has no annotation for it.

    Raises :class:`LoaderFieldError` when the field is resolved and the
    registry declares no such loader or the object has no such key attribute,
    naming the field, the loader and the key.
    """
    attribute = _loader_name(loader)
    read_key, key_name = _key_reader(key)

    def resolver(root: Any, info: Info) -> Any:
        try:
            made = getattr(info.context.loaders, attribute)
            value = read_key(root)
        except AttributeError as error:
            raise _explain(error, root, info, attribute, key_name) from error
        if value is None:
            return None
        return made.resolve(value)

    # No return annotation: the field's type is the class annotation, and a
    # field without one fails as Strawberry fails it, naming the field.
    del resolver.__annotations__["return"]
    setattr(resolver, _DIRECT, True)
    resolver.__name__ = resolver.__qualname__ = f"resolve_{attribute}"
    return strawberry.field(
        resolver=resolver,
        name=name,
        description=description,
        deprecation_reason=deprecation_reason,
        permission_classes=permission_classes,
        extensions=extensions,
        directives=directives,
        metadata=metadata,
        graphql_type=graphql_type,
    )


def _loader_name(loader: object) -> str:
    """The registry attribute ``loader`` names, checked when the field is declared."""
    if isinstance(loader, LoaderSpec):
        if not loader.attribute:
            raise TypeError(
                f"loader_field(): {loader!r} is not declared on a LoaderRegistry subclass; "
                "pass Loaders.<name> (or the name) of a declared loader"
            )
        return loader.attribute
    if isinstance(loader, str) and loader.isidentifier() and not keyword.iskeyword(loader):
        if loader in vars(LoaderRegistry) or loader in ("sessions", "statements"):
            raise TypeError(
                f"loader_field(): {loader!r} is the registry's own attribute, not a loader"
            )
        return loader
    raise TypeError(
        f"loader_field() needs a declared loader (Loaders.user) or its attribute name, "
        f"got {loader!r}"
    )


def _key_reader(key: object) -> tuple[Callable[[Any], Any], str | None]:
    """``key=`` as a function of the object, and the attribute it names (None: a callable)."""
    if isinstance(key, str):
        if not key or not all(part.isidentifier() for part in key.split(".")):
            raise TypeError(f"loader_field(key=...) must be an attribute name, got {key!r}")
        return operator.attrgetter(key), key
    if callable(key):
        return key, None
    raise TypeError(
        f"loader_field(key=...) must be an attribute name or a callable taking the object, "
        f"got {key!r}"
    )


def _explain(
    error: AttributeError, root: object, info: Info, attribute: str, key: str | None
) -> Exception:
    """What went wrong when reading the loader or the key, naming field, loader and key."""
    field = f"{info.path.typename}.{info.field_name}"
    reads = f"{field} reads loader {attribute!r}"
    shown = f"{reads} with the key {key!r}" if key is not None else reads

    def failed(message: str) -> LoaderFieldError:
        return LoaderFieldError(f"{shown}: {message}", field=field, loader=attribute, key=key)

    loaders = getattr(info.context, "loaders", None)
    if loaders is None:
        return failed(
            f"info.context ({type(info.context).__name__}) has no loaders; give the request "
            "a gqlbatch.strawberry.Context"
        )
    declared: Sequence[str] | None = getattr(loaders, "declared", lambda: None)()
    if declared is not None and attribute not in declared:
        return failed(
            f"{type(loaders).__name__} declares no such loader; "
            f"it declares {', '.join(map(repr, declared)) or 'none'}"
        )
    if key is not None:
        try:
            operator.attrgetter(key)(root)
        except AttributeError:
            return failed(f"the {type(root).__name__} it resolves on has no attribute {key!r}")
    return error


def use_direct_resolvers(schema: object) -> int:
    """Let graphql-core call ``schema``'s ``loader_field`` resolvers without Strawberry's wrapper.

    Done once per schema (later calls return 0), and only for fields that need
    nothing of the wrapper: no permission classes, no field extensions, and a
    schema without exception handlers. Returns the number of fields changed.
    :class:`LoaderExtension` calls it on a schema's first operation.
    """
    core = getattr(schema, "_schema", None)  # Strawberry's graphql-core schema
    if not isinstance(core, GraphQLSchema) or core.extensions.get(_DIRECT):
        return 0
    core.extensions[_DIRECT] = True
    converter = getattr(schema, "schema_converter", None)
    if getattr(converter, "_exception_handler_specs", None):  # handlers wrap each resolver
        return 0
    changed = 0
    for named in core.type_map.values():
        if not isinstance(named, GraphQLObjectType):
            continue
        for field in named.fields.values():
            definition = field.extensions.get("strawberry-definition")
            resolver = getattr(getattr(definition, "base_resolver", None), "wrapped_func", None)
            if getattr(resolver, _DIRECT, False) and not definition.extensions:
                field.resolve = resolver
                changed += 1
    return changed
