"""Depth, alias and repeat limits that take time linear in the document.

Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` walk a named
fragment again at every spread of it, so a document of 18 fragments, each
spreading the previous one twice (under 700 bytes), takes seconds to check
and each further fragment doubles that. :class:`DepthLimiter` and
:class:`AliasLimiter` are drop-in replacements with the same limits and the
same messages that summarise each fragment once (:func:`fold_fragments`).

:class:`RepeatLimiter` bounds the other quadratic step: graphql-core's
``OverlappingFieldsCanBeMerged`` compares every pair of fields that land on
one place of the result, and their children pairwise again, so ``posts { id }``
written 495 times (6.4 KB) holds the event loop for a second. It refuses a
document with more than ``max_repeats`` fields on one response path (fragments
expanded, same-named fields merged), in one walk over the merged paths.

:class:`OperationNameRequired` refuses a document of several operations sent
without ``operationName``, as the GraphQL specification asks (Strawberry runs
the first one).

All of them run when validation starts and refuse the document before
graphql-core validates it (:class:`~gqlbatch.strawberry._document.PreValidationCheck`).
Their errors carry a code in ``extensions.code``: ``MAX_DEPTH_EXCEEDED``,
``MAX_ALIASES_EXCEEDED``, ``MAX_REPEATS_EXCEEDED`` (or ``DOCUMENT_TOO_COMPLEX``)
and ``OPERATION_NAME_REQUIRED``.

Pass them as factories, so that each operation gets its own instance::

    from functools import partial

    schema = strawberry.Schema(
        Query,
        extensions=[
            partial(DepthLimiter, max_depth=10),
            partial(AliasLimiter, max_alias_count=15),
            partial(RepeatLimiter, max_repeats=10),
        ],
    )
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
)

from gqlbatch.strawberry._document import (
    PreValidationCheck,
    fold_fragments,
    operation_label,
    operations_of,
)

__all__ = ["AliasLimiter", "DepthLimiter", "OperationNameRequired", "RepeatLimiter"]


def _check_limit(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------- depth


def _depth(selection_set: SelectionSetNode, fragments: dict[str, int]) -> int:
    """Fields nested in ``selection_set`` along its deepest path, as Strawberry counts them.

    A field with a selection set is one level more than its deepest child; a
    leaf, and an introspection field (``__schema``, ``__type``), count 0.
    """
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.selection_set is None or selection.name.value.startswith("__"):
                continue
            depth = 1 + _depth(selection.selection_set, fragments)
        elif isinstance(selection, InlineFragmentNode):
            depth = _depth(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            depth = fragments.get(selection.name.value, 0)
        else:  # pragma: no cover - graphql-core has no other selection
            continue
        deepest = max(deepest, depth)
    return deepest


class DepthLimiter(PreValidationCheck):
    """Refuses an operation nested deeper than ``max_depth``; linear in the document.

    The same limit and message as Strawberry's ``QueryDepthLimiter``
    (``'name' exceeds maximum operation depth of 10``), code ``MAX_DEPTH_EXCEEDED``.

    Args:
        max_depth: the deepest operation accepted, >= 1.
        callback: called with ``{operation name: depth}`` for every document checked.
    """

    def __init__(
        self, max_depth: int, callback: Callable[[dict[str, int]], None] | None = None
    ) -> None:
        self.max_depth = _check_limit("max_depth", max_depth, 1)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self.callback = callback

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        fragments = fold_fragments(
            document, lambda fragment, done: _depth(fragment.selection_set, done)
        )
        depths = {
            operation_label(operation): (operation, _depth(operation.selection_set, fragments))
            for operation in operations_of(document)
        }
        if self.callback is not None:
            self.callback({label: depth for label, (_, depth) in depths.items()})
        return [
            GraphQLError(
                f"'{label}' exceeds maximum operation depth of {self.max_depth}",
                operation,
                extensions={"code": "MAX_DEPTH_EXCEEDED"},
            )
            for label, (operation, depth) in depths.items()
            if depth > self.max_depth
        ]


# --------------------------------------------------------------------------- aliases


def _aliases(selection_set: SelectionSetNode, fragments: dict[str, int]) -> int:
    """Aliased fields in ``selection_set``, a fragment counted at every spread of it."""
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FragmentSpreadNode):
            count += fragments.get(selection.name.value, 0)
        elif isinstance(selection, (FieldNode, InlineFragmentNode)):
            if isinstance(selection, FieldNode) and selection.alias is not None:
                count += 1
            if selection.selection_set is not None:
                count += _aliases(selection.selection_set, fragments)
    return count


class AliasLimiter(PreValidationCheck):
    """Refuses a document with more than ``max_alias_count`` aliases; linear in the document.

    Counts like Strawberry's ``MaxAliasesLimiter`` (every operation, a fragment
    at each spread of it) with the same message (``20 aliases found. Allowed:
    15``), code ``MAX_ALIASES_EXCEEDED``.

    Args:
        max_alias_count: the most aliases accepted, >= 0.
    """

    def __init__(self, max_alias_count: int) -> None:
        self.max_alias_count = _check_limit("max_alias_count", max_alias_count, 0)

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        fragments = fold_fragments(
            document, lambda fragment, done: _aliases(fragment.selection_set, done)
        )
        total = sum(_aliases(op.selection_set, fragments) for op in operations_of(document))
        if total <= self.max_alias_count:
            return []
        return [
            GraphQLError(
                f"{total} aliases found. Allowed: {self.max_alias_count}",
                extensions={"code": "MAX_ALIASES_EXCEEDED"},
            )
        ]


# --------------------------------------------------------------------------- repeats

_MAX_PATH = 64
"""Deeper merged paths are not followed: only a fragment cycle (invalid) gets there."""


class _TooComplex(Exception):
    """The repeat walk visited more selections than it may."""


class RepeatLimiter(PreValidationCheck):
    """Refuses a document that selects one place of the result more than ``max_repeats`` times.

    graphql-core's ``OverlappingFieldsCanBeMerged`` compares every pair of
    fields that land on the same place of the result (the same response path,
    once fragments are expanded and same-named fields merged), and the pairs
    of their children again: ``posts { id }`` written 495 times, or 7 ``tags``
    each holding 7 ``posts`` each holding 7 ``tags`` (343 fields on one path,
    4.7 KB), hold the event loop for a second. This walks the merged paths once,
    counting the fields on each, and stops at the first past ``max_repeats``
    (code ``MAX_REPEATS_EXCEEDED``): ``'posts.tags' is selected 49 times at one
    place of the result. Allowed: 10``. Fields without a selection (``id``,
    which many fragments select on one object) have their own, looser limit:
    comparing two of them is cheap. A named fragment counts once per path,
    as the executor merges it. The walk itself visits at most ``max_visits``
    selections, else the document is refused as too complex
    (``DOCUMENT_TOO_COMPLEX``).

    Args:
        max_repeats: the most fields with a selection on one response path, >= 1.
        max_leaf_repeats: the most fields without one on one response path (50).
        max_visits: the most selections the check visits (50,000).
    """

    def __init__(
        self, max_repeats: int, *, max_leaf_repeats: int = 50, max_visits: int = 50_000
    ) -> None:
        self.max_repeats = _check_limit("max_repeats", max_repeats, 1)
        self.max_leaf_repeats = _check_limit("max_leaf_repeats", max_leaf_repeats, 1)
        self.max_visits = _check_limit("max_visits", max_visits, 1)

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        visits = 0
        # Each entry: a response path and the selection sets merged there.
        pending: list[tuple[tuple[str, ...], list[SelectionSetNode]]] = [
            ((), [operation.selection_set]) for operation in operations_of(document)
        ]
        try:
            while pending:
                path, merged = pending.pop()
                children: dict[str, list[SelectionSetNode]] = {}
                counts: Counter[str] = Counter()  # fields with a selection: costly pairs
                leaves: Counter[str] = Counter()  # fields without: cheap pairs
                expanded: set[str] = set()
                sets = list(merged)
                while sets:
                    for selection in sets.pop().selections:
                        visits += 1
                        if visits > self.max_visits:
                            raise _TooComplex
                        if isinstance(selection, FieldNode):
                            key = (selection.alias or selection.name).value
                            if selection.selection_set is None:
                                leaves[key] += 1
                            else:
                                counts[key] += 1
                                children.setdefault(key, []).append(selection.selection_set)
                        elif isinstance(selection, InlineFragmentNode):
                            sets.append(selection.selection_set)
                        elif (
                            isinstance(selection, FragmentSpreadNode)
                            and selection.name.value in fragments
                            and selection.name.value not in expanded
                        ):
                            expanded.add(selection.name.value)
                            sets.append(fragments[selection.name.value].selection_set)
                for found, limit in ((counts, self.max_repeats), (leaves, self.max_leaf_repeats)):
                    if found:
                        key, count = found.most_common(1)[0]
                        if count > limit:
                            path_name = ".".join((*path, key))
                            return [self._refusal(path_name, count, limit, merged[0])]
                if len(path) < _MAX_PATH:
                    pending += [((*path, key), sets) for key, sets in children.items()]
        except _TooComplex:
            return [
                GraphQLError(
                    f"The document is too complex to check (over {self.max_visits} "
                    "selections once its fragments are expanded)",
                    extensions={"code": "DOCUMENT_TOO_COMPLEX"},
                )
            ]
        return []

    def _refusal(self, path: str, count: int, limit: int, node: SelectionSetNode) -> GraphQLError:
        return GraphQLError(
            f"'{path}' is selected {count} times at one place of the result. Allowed: {limit}",
            node,
            extensions={"code": "MAX_REPEATS_EXCEEDED"},
        )


# --------------------------------------------------------------------------- operation name


class OperationNameRequired(PreValidationCheck):
    """Refuses several operations without ``operationName``, with the specification's error.

    Message: ``Must provide operation name if query contains multiple
    operations.``, code ``OPERATION_NAME_REQUIRED``.
    """

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        # ``operation_name`` falls back on the first operation's name; only the private
        # attribute tells whether the client sent one (pinned by the tests).
        if getattr(self.execution_context, "_provided_operation_name", None) is not None:
            return []
        if len(operations_of(document)) < 2:
            return []
        return [
            GraphQLError(
                "Must provide operation name if query contains multiple operations.",
                extensions={"code": "OPERATION_NAME_REQUIRED"},
            )
        ]
