"""The public surface: names exported, and importing the core pulls in no framework."""

from __future__ import annotations

import subprocess
import sys
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


def test_importing_the_core_imports_no_framework() -> None:
    code = (
        "import sys, gqlbatch; "
        "bad = [m for m in ('strawberry', 'sqlalchemy', 'graphql') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
