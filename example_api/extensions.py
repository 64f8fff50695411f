"""Schema extensions: per-request statistics, error codes, and what production mode hides
from clients (and from the log)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.types import ExecutionContext

from example_api.context import AppContext

__all__ = ["ErrorCodes", "ExampleSchema", "PublicErrors", "RequestStats", "is_public"]

_SUGGESTION = re.compile(r"\s*Did you mean .*$", re.DOTALL)
_TOO_MANY_TOKENS = re.compile(r"Syntax Error: Document contains more than (\d+) tokens\b")


class ErrorCodes(SchemaExtension):
    """Gives every syntax and validation error a code in ``extensions.code``.

    * ``TOO_MANY_TOKENS``: the document is longer than ``EXAMPLE_API_MAX_TOKENS``;
      the message says the limit, and ``extensions.maxTokens`` holds it (graphql-core
      says only "Document contains more than 2000 tokens. Parsing aborted.");
    * ``GRAPHQL_PARSE_FAILED``: any other syntax error;
    * ``GRAPHQL_VALIDATION_FAILED``: the document does not fit the schema (unknown
      field, wrong argument, ...), unless the rule that refused it gave its own code.
    """

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if not isinstance(error, GraphQLSyntaxError):
                continue
            limit = _TOO_MANY_TOKENS.match(error.message)
            if limit is None:
                _set_code(error, "GRAPHQL_PARSE_FAILED")
                continue
            error.message = (
                f"Document contains more than {limit[1]} tokens, the most this server "
                "accepts: send a shorter query (fewer fields, aliases or fragments)"
            )
            _set_code(error, "TOO_MANY_TOKENS", maxTokens=int(limit[1]))

    def on_validate(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            _set_code(error, "GRAPHQL_VALIDATION_FAILED")


def _set_code(error: GraphQLError, code: str, **details: Any) -> None:
    """Add ``code`` (and ``details``) to ``error.extensions``, unless it has a code already."""
    extensions = dict(error.extensions or {})
    if "code" not in extensions:
        error.extensions = {**extensions, "code": code, **details}


class RequestStats(SchemaExtension):
    """Feeds ``/metrics`` with each operation's SQL statements, loader counters and errors.

    List it after ``LoaderExtension``: it then ends first, while the request's
    loaders (closed and forgotten by ``LoaderExtension``) still hold their counters.
    The debug-mode ``extensions.gqlbatch`` report is ``LoaderExtension``'s.
    """

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if not isinstance(context, AppContext) or context.statements is None:
            yield
            return
        with context.statements.scope() as counted:
            yield
            context.metrics.observe_operation(counted.count, context.loaders.stats())

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        if isinstance(context, AppContext):
            context.metrics.graphql_errors += len(self.execution_context.pre_execution_errors or ())
        return {}


def is_public(error: GraphQLError) -> bool:
    """Validation, syntax and limit errors, and errors raised as GraphQLError on purpose.

    A literal that a scalar cannot parse (``limit: 999...`` with 5,000 digits,
    which ``int()`` refuses) is the client's too: graphql-core's validation
    reports it as "Expected value of type ..." with the parse error attached.
    """
    if error.original_error is None or isinstance(error.original_error, GraphQLError):
        return True
    return error.path is None and error.message.startswith("Expected value of type ")


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
            error.message = _cut(_SUGGESTION.sub("", error.message))
        return processed


MAX_MESSAGE = 300
"""Most characters of an error message in production: graphql-core's own messages quote
the client's values whole (a 1 MB variable would come back in every error about it)."""


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message)} characters, cut)"


class ExampleSchema(strawberry.Schema):
    """Logs unexpected errors with their stack trace, and client errors not at all."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = [error for error in errors if not is_public(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)
