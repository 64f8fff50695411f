"""Schema extensions: per-request statistics, and what production mode hides from clients."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from example_api.context import Context, statement_scope

__all__ = ["PublicErrors", "RequestStats", "is_public"]

_SUGGESTION = re.compile(r"\s*Did you mean .*$", re.DOTALL)


class RequestStats(SchemaExtension):
    """Counts the request's SQL statements, closes its loaders, and reports both.

    Every operation feeds ``/metrics``; in debug mode the response's
    ``extensions.gqlbatch`` also carries ``sql_statements`` and each loader's
    loads, cache hits, batches and largest batch.
    """

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        context = self.execution_context.context
        if not isinstance(context, Context):
            yield
            return
        with statement_scope() as tally:
            context.statements = tally
            try:
                yield
            finally:
                await context.loaders.aclose()

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        if not isinstance(context, Context):
            return {}
        stats = context.loaders.stats()
        errors = self.execution_context.pre_execution_errors or ()
        context.metrics.observe_operation(context.statements.count, stats, len(errors))
        if not context.settings.debug:
            return {}
        return {
            "gqlbatch": {
                "sql_statements": context.statements.count,
                "loaders": {
                    name: {
                        "loads": s.loads,
                        "cache_hits": s.cache_hits,
                        "batches": s.batches,
                        "keys_dispatched": s.keys_dispatched,
                        "largest_batch": s.largest_batch,
                    }
                    for name, s in sorted(stats.items())
                    if s.loads
                },
            }
        }


def is_public(error: GraphQLError) -> bool:
    """Validation, syntax and limit errors, and errors raised as GraphQLError on purpose."""
    return error.original_error is None or isinstance(error.original_error, GraphQLError)


class PublicErrors(MaskErrors):
    """Production: unexpected errors become "Internal server error.", suggestions go.

    Messages of errors the client can act on (syntax, validation, limits, and
    :class:`~example_api.schema.UserInputError`) stay readable, minus any
    "Did you mean ...?" that would reveal the schema with introspection off.
    Everything else (SQL, DSNs, exception text) is replaced; the server log
    keeps the original with its stack trace.
    """

    def __init__(self) -> None:
        super().__init__(
            should_mask_error=lambda error: not is_public(error),
            error_message="Internal server error.",
        )

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            error.message = _SUGGESTION.sub("", error.message)
        return processed
