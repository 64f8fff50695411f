"""DocumentCache: each query text parsed and validated once; the limits still apply."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial

import strawberry
from graphql import GraphQLError
from strawberry.extensions import QueryDepthLimiter, SchemaExtension

from gqlbatch.gc_tuning import gc_tuned
from gqlbatch.strawberry import DocumentCache


@strawberry.type
class Query:
    @strawberry.field
    def numbers(self, limit: int) -> list[int]:
        return list(range(limit))


class PageLimit(SchemaExtension):
    """A check that reads the variables, as a cost limit does."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        limit = (context.variables or {}).get("limit", 0)
        if not context.pre_execution_errors and limit > 100:
            context.pre_execution_errors = [GraphQLError(f"limit {limit} is over 100")]
        yield


logging.getLogger("strawberry.execution").disabled = True  # it logs the refusal below

documents = DocumentCache(maxsize=256)
schema = strawberry.Schema(
    Query,
    extensions=[documents.extension(), partial(QueryDepthLimiter, max_depth=5), PageLimit],
)

QUERY = "query Numbers($limit: Int!) { numbers(limit: $limit) }"

with gc_tuned():  # what a server enters once around serving
    small = schema.execute_sync(QUERY, variable_values={"limit": 3})
    again = schema.execute_sync(QUERY, variable_values={"limit": 2})  # parsed, validated: cached
    large = schema.execute_sync(QUERY, variable_values={"limit": 1000})  # the same text, refused

assert small.data == {"numbers": [0, 1, 2]}
assert again.data == {"numbers": [0, 1]}
assert large.errors is not None
print(small.data, again.data, large.errors[0].message)
print(f"{len(documents)} document kept")
