"""Checks that refuse a document before graphql-core validates it, in time linear in it.

The document limits (:mod:`gqlbatch.strawberry.limits`) and the cost limit
(:mod:`gqlbatch.strawberry.cost`) share two things written here once:

- :class:`PreValidationCheck`, a schema extension that runs its check when
  validation starts. A refusal sets the operation's ``pre_execution_errors``,
  and Strawberry then skips graphql-core's validation altogether: a hostile
  document never reaches ``OverlappingFieldsCanBeMerged`` (quadratic in the
  repeats of one field) nor anything after it.
- :func:`fold_fragments`, the one walk every check is built on. A named
  fragment is the only node of a document that can be reached twice (by two
  spreads), and walking it again at every spread is what makes Strawberry's
  ``QueryDepthLimiter`` exponential: 18 fragments each spreading the previous
  one twice already take seconds. Here every fragment is summarised once, in
  an order where the fragments it spreads come first, and a spread reads the
  stored summary. The order itself is found without recursion, so a long chain
  of fragments cannot exhaust the interpreter's stack either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension

__all__ = [
    "NESTED_TOO_DEEPLY",
    "PreValidationCheck",
    "fold_fragments",
    "operation_label",
    "operations_of",
    "spreads_in",
]

S = TypeVar("S")

NESTED_TOO_DEEPLY = "Document is nested too deeply to be checked."


def operations_of(document: DocumentNode) -> list[OperationDefinitionNode]:
    """The operations of ``document``, in document order."""
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def operation_label(operation: OperationDefinitionNode) -> str:
    """How Strawberry's limiters name an operation: its name, or ``anonymous``."""
    return operation.name.value if operation.name else "anonymous"


def spreads_in(selection_set: SelectionSetNode | None) -> Iterator[str]:
    """The names of the fragments spread anywhere in ``selection_set`` (no recursion)."""
    pending = [selection_set] if selection_set is not None else []
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            elif (
                isinstance(selection, (FieldNode, InlineFragmentNode))
                and selection.selection_set is not None
            ):
                pending.append(selection.selection_set)


def _dependency_order(fragments: Mapping[str, FragmentDefinitionNode]) -> list[str]:
    """Every fragment after the fragments it spreads; a cycle (invalid anyway) is cut."""
    order: list[str] = []
    state: dict[str, bool] = {}  # False: being visited, True: done
    for root in fragments:
        if root in state:
            continue
        state[root] = False
        stack = [(root, iter(list(spreads_in(fragments[root].selection_set))))]
        while stack:
            name, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[name] = True
                order.append(name)
            elif child in fragments and child not in state:
                state[child] = False
                stack.append((child, iter(list(spreads_in(fragments[child].selection_set)))))
    return order


def fold_fragments(
    document: DocumentNode, summarise: Callable[[FragmentDefinitionNode, dict[str, S]], S]
) -> dict[str, S]:
    """Summarise each fragment of ``document`` once, the ones it spreads first.

    ``summarise(fragment, done)`` gets the summaries made so far; a spread of a
    fragment missing from ``done`` is one that is undefined or on a cycle
    (graphql-core's validation reports both), to be counted as nothing.
    """
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    done: dict[str, S] = {}
    for name in _dependency_order(fragments):
        done[name] = summarise(fragments[name], done)
    return done


class PreValidationCheck(SchemaExtension):
    """A check run as validation starts; its errors refuse the operation unvalidated.

    Subclasses implement :meth:`check`. Errors it returns become the
    operation's errors, and graphql-core's validation is skipped; a check finding
    the operation refused already (by an earlier extension) does not run. A document
    nested too deeply for the interpreter's stack is refused with
    :data:`NESTED_TOO_DEEPLY` rather than failing the request.
    """

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        """The errors that refuse ``document``; none to let it through."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def on_validate(self) -> Iterator[None]:
        self.refuse_if_needed()
        yield

    def refuse_if_needed(self) -> bool:
        """Run :meth:`check` on the operation's document; whether the operation is refused
        (by this check or an earlier one). For subclasses with an async ``on_validate``."""
        context = self.execution_context
        document = context.graphql_document
        if document is not None and not context.pre_execution_errors:  # one refusal is enough
            try:
                errors = self.check(document)
            except RecursionError:
                errors = [GraphQLError(NESTED_TOO_DEEPLY, extensions={"code": "NESTED_TOO_DEEPLY"})]
            if errors:
                context.pre_execution_errors = [*(context.pre_execution_errors or ()), *errors]
        return bool(context.pre_execution_errors)
