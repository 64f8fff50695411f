"""A query cost limit that knows page sizes, checked before anything executes.

Depth and alias limits do not bound the work of a query: within a depth of
10, ``{ tags(limit: 100) { posts(limit: 100) { tags(limit: 100) { ... } } } }``
asks for 100 objects at the first level, 100 x 100 at the second, and so on.
:class:`CostLimiter` counts, for every operation, the objects it can return
at most:

- a field returning an object (or interface, or union) costs 1, times the
  page size when it returns a list, plus the cost of its selection, also
  times the page size: ``posts(limit: 100) { author { id } }`` costs
  100 x (1 + 1) = 200;
- the page size of a list is its first argument named in ``size_arguments``
  (default ``limit``, ``first``, ``last``), as written in the query, or the
  variable's value, or the variable's default, or the argument's default in
  the schema; a list with no such argument counts ``list_sizes["Type.field"]``,
  else ``default_list_size``;
- a scalar field costs 0, an introspection field 0; ``field_costs["Type.field"]``
  sets the cost of one object of any field (a search, a computed field);
- aliases count as the fields they are, fragments at every spread of them (a
  fragment is costed once and its cost reused at each spread, so the check is
  linear in the document), and the selections of an abstract type's inline
  fragments add up (an upper bound).

An operation over ``max_cost`` is refused before validation and execution
with ``Query cost 10101010100 exceeds the maximum cost of 50000`` and
``extensions`` ``{"code": "QUERY_TOO_COSTLY", "cost": ..., "maxCost": ...}``.
Costs above :data:`COST_CEILING` are reported as that ceiling.

Example::

    from functools import partial

    schema = strawberry.Schema(
        Query,
        extensions=[partial(CostLimiter, max_cost=50_000, field_costs={"Query.search": 50})],
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_composite_type,
)

from gqlbatch.strawberry._document import (
    PreValidationCheck,
    fold_fragments,
    operation_label,
    operations_of,
)

__all__ = ["COST_CEILING", "CostLimiter"]

COST_CEILING = 10**15
"""Costs are counted up to this value; a larger cost is reported as it (and refused)."""


def _cap(value: int) -> int:
    return min(value, COST_CEILING)


def _int_literal(text: str) -> int:
    """An Int literal's value, at least 0, at most :data:`COST_CEILING` (a 5,000-digit
    literal is more than ``int()`` converts: graphql-core refuses it later)."""
    if text.startswith("-"):
        return 0
    return int(text) if len(text) <= 15 else COST_CEILING


class _Costing:
    """The cost walk of one operation: its variables and the fragments costed so far."""

    def __init__(
        self,
        limiter: CostLimiter,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
    ) -> None:
        self.limiter = limiter
        self.schema = schema
        self.variables = dict(variables)
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name not in self.variables and isinstance(definition.default_value, IntValueNode):
                self.variables[name] = _int_literal(definition.default_value.value)

    def fragment(self, fragment: FragmentDefinitionNode, done: dict[str, int]) -> int:
        parent = self.schema.get_type(fragment.type_condition.name.value)
        return self.selection(fragment.selection_set, parent, done)

    def selection(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None, done: dict[str, int]
    ) -> int:
        """The most objects ``selection_set`` on an object of type ``parent`` returns."""
        cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                cost += self.field(selection, parent, done)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                cost += self.selection(selection.selection_set, inner, done)
            elif isinstance(selection, FragmentSpreadNode):
                cost += done.get(selection.name.value, 0)
        return _cap(cost)

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, done: dict[str, int]) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(
            parent, (GraphQLObjectType, GraphQLInterfaceType)
        ):
            return 0
        definition = parent.fields.get(name)
        if definition is None:  # an unknown field: validation reports it
            return 0
        coordinate = f"{parent.name}.{name}"
        returned = get_named_type(definition.type)
        own = self.limiter.field_costs.get(coordinate, 1 if is_composite_type(returned) else 0)
        inner = 0
        if node.selection_set is not None:
            inner = self.selection(node.selection_set, returned, done)
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        size = (
            self.page_size(node, definition.args, coordinate)
            if isinstance(field_type, GraphQLList)
            else 1
        )
        return _cap(size * (own + inner))

    def page_size(self, node: FieldNode, arguments: Mapping[str, Any], coordinate: str) -> int:
        """How many items a list field can return, at most ``max_list_size``."""
        size = self._page_size(node, arguments, coordinate)
        cap = self.limiter.max_list_size
        return size if cap is None else min(size, cap)

    def _page_size(self, node: FieldNode, arguments: Mapping[str, Any], coordinate: str) -> int:
        """Its size argument, else its hint, else the default list size."""
        given = {argument.name.value: argument.value for argument in node.arguments or ()}
        for name in self.limiter.size_arguments:
            if name not in arguments:
                continue
            value = given.get(name)
            if isinstance(value, IntValueNode):
                return _int_literal(value.value)
            if isinstance(value, VariableNode):
                number = self.variables.get(value.name.value)
                if isinstance(number, int) and not isinstance(number, bool):
                    return max(0, number)
            default = arguments[name].default_value
            if isinstance(default, int) and not isinstance(default, bool):
                return max(0, default)
        return self.limiter.list_sizes.get(coordinate, self.limiter.default_list_size)


class CostLimiter(PreValidationCheck):
    """Refuses an operation that can return more than ``max_cost`` objects.

    See the module's documentation for how the cost is counted.

    Args:
        max_cost: the largest cost accepted, >= 1.
        field_costs: the cost of one object of a field, by ``"Type.field"``
            (default: 1 for an object, interface or union, 0 for a scalar).
        list_sizes: the page size of a list field without a size argument, by
            ``"Type.field"``.
        size_arguments: the names of the arguments that bound a list's length.
        default_list_size: the page size of any other list field.
        max_list_size: the largest page the server returns, if it refuses larger
            ones itself (a ``limit`` past it then gets the server's own error).
    """

    def __init__(
        self,
        max_cost: int,
        *,
        field_costs: Mapping[str, int] | None = None,
        list_sizes: Mapping[str, int] | None = None,
        size_arguments: Sequence[str] = ("limit", "first", "last"),
        default_list_size: int = 10,
        max_list_size: int | None = None,
    ) -> None:
        if isinstance(max_cost, bool) or not isinstance(max_cost, int) or max_cost < 1:
            raise ValueError(f"max_cost must be an integer >= 1, got {max_cost!r}")
        for option, hints in (("field_costs", field_costs), ("list_sizes", list_sizes)):
            for coordinate, value in (hints or {}).items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(
                        f"{option}[{coordinate!r}] must be an integer >= 0, got {value!r}"
                    )
        if isinstance(size_arguments, str):
            raise TypeError(f"size_arguments must be a sequence of names, got {size_arguments!r}")
        if not isinstance(default_list_size, int) or default_list_size < 0:
            raise ValueError(
                f"default_list_size must be an integer >= 0, got {default_list_size!r}"
            )
        self.max_cost = max_cost
        self.field_costs = dict(field_costs or {})
        self.list_sizes = dict(list_sizes or {})
        self.size_arguments = tuple(size_arguments)
        self.default_list_size = default_list_size
        if max_list_size is not None and (not isinstance(max_list_size, int) or max_list_size < 0):
            raise ValueError(
                f"max_list_size must be an integer >= 0 or None, got {max_list_size!r}"
            )
        self.max_list_size = max_list_size

    def cost(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any] | None = None,
    ) -> dict[str, int]:
        """The cost of each operation of ``document``, by name (``anonymous`` for none)."""
        return {
            operation_label(operation): cost
            for operation, cost in self._costs(schema, document, variables or {})
        }

    highest: int = 0
    """After :meth:`check`: the highest cost of the document's operations (for a
    subclass deciding more than the limit, such as an admission policy)."""

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        context = self.execution_context
        costs = self._costs(context.schema._schema, document, context.variables or {})
        self.highest = max((cost for _, cost in costs), default=0)
        return [
            GraphQLError(
                f"Query cost {cost} exceeds the maximum cost of {self.max_cost}",
                operation,
                extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "maxCost": self.max_cost},
            )
            for operation, cost in costs
            if cost > self.max_cost
        ]

    def _costs(
        self, schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]
    ) -> list[tuple[OperationDefinitionNode, int]]:
        costs = []
        for operation in operations_of(document):
            walk = _Costing(self, schema, operation, variables)
            fragments = fold_fragments(document, walk.fragment)
            root = schema.get_root_type(operation.operation)
            costs.append((operation, walk.selection(operation.selection_set, root, fragments)))
        return costs
