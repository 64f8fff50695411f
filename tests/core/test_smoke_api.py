"""The public surface: names exported, and importing the core pulls in no framework."""

from __future__ import annotations

import types

import gqlbatch

CONTRACT = {
    "KeyedLoader",
    "BatchedQueue",
    "RetryPolicy",
    "ErrorMode",
    "LoaderStats",
    "GqlBatchError",
    "QueueFullError",
    "QueueClearedError",
    "LoaderClosedError",
    "BatchError",
    "MissingKeyError",
}


def test_all_lists_exactly_what_the_package_exports() -> None:
    public = {
        name
        for name, value in vars(gqlbatch).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(gqlbatch.__all__) == public
    assert gqlbatch.__all__ == sorted(gqlbatch.__all__)


def test_the_contract_names_are_exported() -> None:
    assert set(gqlbatch.__all__) >= CONTRACT


def test_every_error_derives_from_gqlbatch_error() -> None:
    for name in gqlbatch.__all__:
        obj = getattr(gqlbatch, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, gqlbatch.GqlBatchError), name
