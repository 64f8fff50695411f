"""The schema extension closing a request's loaders when its operation ends."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gqlbatch.strawberry.fields import use_direct_resolvers
from gqlbatch.strawberry.protocols import StatementCounting, StatementScope, counts_statements
from gqlbatch.strawberry.registry import LoaderRegistry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from strawberry.types import ExecutionContext

__all__ = ["LoaderExtension"]


def _registry_of(context: Any) -> LoaderRegistry | None:
    """The registry a Strawberry context carries: ``context.loaders`` or ``context["loaders"]``."""
    found = (
        context.get("loaders")
        if isinstance(context, Mapping)
        else getattr(context, "loaders", None)
    )
    return found if isinstance(found, LoaderRegistry) else None


class LoaderExtension(SchemaExtension):
    """Closes the request's loaders when an operation ends; optionally reports statistics.

    Pass the class, or :meth:`with_statistics` (a factory), to
    ``strawberry.Schema(extensions=[...])`` — never an instance: Strawberry
    creates one per operation, so nothing leaks between concurrent requests.

    It finds the registry at ``info.context.loaders`` (or ``context["loaders"]``).
    When the last operation using the registry ends, every loader it created is
    closed (anything still waiting is rejected with ``LoaderClosedError``) and
    forgotten.

    With statistics on, the response gets ``extensions["gqlbatch"]``::

        {"loaders": {"user": {"loads": 100, "cache_hits": 90, "batches": 1,
                              "largest_batch": 10, "keys_dispatched": 10,
                              "failed_batches": 0, "sql_statements": 1}},
         "sql_statements": 3}

    ``loaders`` lists the loaders the operation loaded from; one it only primed
    or cleared (``write_through``, ``invalidate``) is left out. ``sql_statements``
    appear when the context (or registry) carries a :class:`StatementCounting`
    object: per loader, the statements its batches executed; for the operation,
    every statement executed while it ran.

    Args:
        statistics: False (default), True, or a callable deciding per operation
            from Strawberry's ``ExecutionContext`` (e.g. a debug header).
        key: the key under ``extensions`` (default ``"gqlbatch"``).
    """

    def __init__(
        self,
        *,
        execution_context: ExecutionContext | None = None,
        statistics: bool | Callable[[ExecutionContext], bool] = False,
        key: str = "gqlbatch",
    ) -> None:
        if not isinstance(statistics, bool) and not callable(statistics):
            raise TypeError(f"statistics must be a bool or a callable, got {statistics!r}")
        if execution_context is not None:
            self.execution_context = execution_context
        self.statistics = statistics
        self.key = key
        self._results: dict[str, Any] = {}

    @classmethod
    def with_statistics(
        cls,
        statistics: bool | Callable[[ExecutionContext], bool] = True,
        *,
        key: str = "gqlbatch",
    ) -> Callable[[], LoaderExtension]:
        """A factory for ``Schema(extensions=[...])`` with statistics enabled."""
        cls(statistics=statistics, key=key)  # validate now, at schema definition
        return functools.partial(cls, statistics=statistics, key=key)

    def _wants_statistics(self) -> bool:
        if isinstance(self.statistics, bool):
            return self.statistics
        return bool(self.statistics(self.execution_context))

    def on_operation(self) -> Iterator[None]:
        use_direct_resolvers(self.execution_context.schema)  # once per schema
        registry = _registry_of(self.execution_context.context)
        if registry is None:
            yield
            return
        registry._operation_started()
        report = self._wants_statistics()
        counter = _statements_of(self.execution_context.context, registry) if report else None
        scope = counter.scope() if counter is not None else None
        counted = scope.__enter__() if scope is not None else None
        try:
            yield
        finally:
            try:
                if report:
                    self._results = self._report(registry, counted)
            finally:
                if scope is not None:
                    scope.__exit__(None, None, None)
                registry._operation_ended()

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # A subscription is one operation that resolves each event separately: each
        # event gets the statistics of its own resolution, and, when no other
        # operation shares the registry, fresh loaders, so nothing cached while one
        # event resolved is served to the next. Other streams (@defer, @stream)
        # keep their loaders: later frames may still be resolving with them.
        registry = _registry_of(self.execution_context.context)
        if registry is None or not self._is_subscription():
            yield
            return
        if self._wants_statistics():
            report = self._report(registry, None)
            extensions = getattr(result, "extensions", None)
            if isinstance(extensions, dict):
                extensions.update(report)
            elif hasattr(result, "extensions"):
                result.extensions = report
        yield
        if registry._operations == 1:
            registry._forget()

    def _is_subscription(self) -> bool:
        try:
            operation_type = self.execution_context.operation_type
        except Exception:  # an unparsable document: not ours to report
            return False
        return operation_type is OperationType.SUBSCRIPTION

    def _report(self, registry: LoaderRegistry, counted: StatementScope | None) -> dict[str, Any]:
        """The statistics of every loader the operation loaded from, JSON-ready.

        A loader that was created but never asked for a key (a mutation's
        ``invalidate`` or ``write_through`` creates it) is left out.
        """
        sql = registry.sql_statements()
        loaders: dict[str, Any] = {}
        for name, stats in registry.stats().items():
            if stats.loads == 0:
                continue
            entry = {
                "loads": stats.loads,
                "cache_hits": stats.cache_hits,
                "batches": stats.batches,
                "largest_batch": stats.largest_batch,
                "keys_dispatched": stats.keys_dispatched,
                "failed_batches": stats.failed_batches,
            }
            if counted is not None:
                entry["sql_statements"] = sql.get(name, 0)
            loaders[name] = entry
        report: dict[str, Any] = {"loaders": loaders}
        if counted is not None:
            report["sql_statements"] = counted.count
        return {self.key: report}

    def get_results(self) -> dict[str, Any]:
        return self._results


def _statements_of(context: Any, registry: LoaderRegistry) -> StatementCounting | None:
    found = (
        context.get("statements")
        if isinstance(context, Mapping)
        else getattr(context, "statements", None)
    )
    if counts_statements(found):
        return found
    return registry.statements
