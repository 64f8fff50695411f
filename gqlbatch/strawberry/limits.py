"""Depth, alias and repeat limits that take time linear in the document.

Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` walk a named
fragment again at every spread of it, so a document of 18 fragments, each
spreading the previous one twice (under 700 bytes), takes seconds to check
and each further fragment doubles that. :class:`DepthLimiter` and
:class:`AliasLimiter` are drop-in replacements with the same limits and the
same messages that summarise each fragment once (:func:`fold_fragments`).

:class:`RepeatLimiter` bounds the other quadratic step: graphql-core's
``OverlappingFieldsCanBeMerged`` compares every pair of fields that share a
response name in one selection set, so ``posts { id }`` written 495 times
(6.5 KB) holds the event loop for seconds. It refuses a selection set where
one response name appears more than ``max_repeats`` times, counting the
fields of inline fragments and of the distinct named fragments spread there.

:class:`OperationNameRequired` refuses a document of several operations sent
without ``operationName``, as the GraphQL specification asks (Strawberry runs
the first one).

All of them run when validation starts and refuse the document before
graphql-core validates it (:class:`~gqlbatch.strawberry._document.PreValidationCheck`).
Their errors carry a code in ``extensions.code``: ``MAX_DEPTH_EXCEEDED``,
``MAX_ALIASES_EXCEEDED`` and ``MAX_REPEATS_EXCEEDED``.

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


class _Repeats:
    """The walk of :class:`RepeatLimiter`: the first selection set over the limit, if any."""

    def __init__(self, max_repeats: int) -> None:
        self.max_repeats = max_repeats
        self.found: tuple[str, int, SelectionSetNode] | None = None

    def keys(
        self, selection_set: SelectionSetNode, fragments: dict[str, Counter[str]]
    ) -> Counter[str]:
        """The response names at the top of ``selection_set``, each with its count.

        Fields of inline fragments count as fields of this set; a named fragment
        counts once however often it is spread here, as graphql-core compares it.
        Every nested selection set is checked on the way.
        """
        counts: Counter[str] = Counter()
        spread: set[str] = set()
        pending = [selection_set]
        while pending:
            for selection in pending.pop().selections:
                if isinstance(selection, FieldNode):
                    counts[(selection.alias or selection.name).value] += 1
                    if selection.selection_set is not None:
                        self.check(selection.selection_set, fragments)
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif (
                    isinstance(selection, FragmentSpreadNode) and selection.name.value not in spread
                ):
                    spread.add(selection.name.value)
                    counts.update(fragments.get(selection.name.value, ()))
        return counts

    def check(self, selection_set: SelectionSetNode, fragments: dict[str, Counter[str]]) -> None:
        """Check ``selection_set`` and every selection set nested in it."""
        self._test(self.keys(selection_set, fragments), selection_set)

    def fragment(
        self, fragment: FragmentDefinitionNode, done: dict[str, Counter[str]]
    ) -> Counter[str]:
        """Check ``fragment``; return its top-level response names for the sets spreading it."""
        keys = self.keys(fragment.selection_set, done)
        self._test(keys, fragment.selection_set)
        return keys

    def _test(self, keys: Counter[str], selection_set: SelectionSetNode) -> None:
        if self.found is None and keys:
            key, count = keys.most_common(1)[0]
            if count > self.max_repeats:
                self.found = (key, count, selection_set)


class RepeatLimiter(PreValidationCheck):
    """Refuses a selection set that selects one response name more than ``max_repeats`` times.

    Bounds the time of graphql-core's ``OverlappingFieldsCanBeMerged``, which
    compares every pair of fields sharing a response name. Message:
    ``'posts' is selected 495 times in one selection set. Allowed: 10``, code
    ``MAX_REPEATS_EXCEEDED``.

    Args:
        max_repeats: the most fields with one response name in one selection set, >= 1.
    """

    def __init__(self, max_repeats: int) -> None:
        self.max_repeats = _check_limit("max_repeats", max_repeats, 1)

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        walk = _Repeats(self.max_repeats)
        fragments = fold_fragments(document, walk.fragment)
        for operation in operations_of(document):
            walk.check(operation.selection_set, fragments)
        if walk.found is None:
            return []
        key, count, node = walk.found
        return [
            GraphQLError(
                f"'{key}' is selected {count} times in one selection set. "
                f"Allowed: {self.max_repeats}",
                node,
                extensions={"code": "MAX_REPEATS_EXCEEDED"},
            )
        ]


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
