"""The example API's pool and database timeouts: settings, engine and loaders."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from example_api.app import create_app
from example_api.db import create_engine
from example_api.loaders import Loaders
from example_api.settings import DatabaseOptions, Settings, SettingsError
from gqlbatch.strawberry import GraphQL


def test_database_options_default_to_bounded_waits() -> None:
    options = DatabaseOptions.from_env({})
    assert options == DatabaseOptions()
    assert (options.pool_size, options.pool_overflow) == (10, 10)
    assert options.pool_timeout_ms == 30_000
    assert options.connect_timeout_ms == 10_000
    assert options.statement_timeout_ms == 30_000
    assert options.batch_timeout_ms == 10_000
    assert Settings.from_env({}).database == options


def test_database_options_read_every_variable_and_round_trip() -> None:
    env = {
        "EXAMPLE_API_DB_POOL_SIZE": "3",
        "EXAMPLE_API_DB_POOL_OVERFLOW": "0",
        "EXAMPLE_API_DB_POOL_TIMEOUT_MS": "250",
        "EXAMPLE_API_DB_CONNECT_TIMEOUT_MS": "500",
        "EXAMPLE_API_DB_STATEMENT_TIMEOUT_MS": "0",
        "EXAMPLE_API_BATCH_TIMEOUT_MS": "750",
    }
    options = DatabaseOptions.from_env(env)
    assert options == DatabaseOptions(
        pool_size=3,
        pool_overflow=0,
        pool_timeout_ms=250,
        connect_timeout_ms=500,
        statement_timeout_ms=0,
        batch_timeout_ms=750,
    )
    assert DatabaseOptions.from_env(options.to_env()) == options
    settings = Settings.from_env(env)
    assert settings.database == options
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXAMPLE_API_DB_POOL_SIZE": "0"}, "EXAMPLE_API_DB_POOL_SIZE must be >= 1, got 0"),
        ({"EXAMPLE_API_DB_POOL_OVERFLOW": "-1"}, "EXAMPLE_API_DB_POOL_OVERFLOW must be >= 0"),
        ({"EXAMPLE_API_DB_POOL_TIMEOUT_MS": "0"}, "EXAMPLE_API_DB_POOL_TIMEOUT_MS must be >= 1"),
        ({"EXAMPLE_API_BATCH_TIMEOUT_MS": "soon"}, "EXAMPLE_API_BATCH_TIMEOUT_MS must be an"),
    ],
)
def test_bad_database_options_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        DatabaseOptions.from_env(env)


async def test_the_postgresql_engine_bounds_every_wait(pg_url: str) -> None:
    options = DatabaseOptions(
        pool_size=3, pool_overflow=1, pool_timeout_ms=250, connect_timeout_ms=500
    )
    engine = create_engine(pg_url, options=options)
    try:
        pool = engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 1  # type: ignore[attr-defined]
        assert pool._timeout == 0.25  # type: ignore[attr-defined]
        async with engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw._config.command_timeout == 30  # type: ignore[union-attr]
    finally:
        await engine.dispose()


async def test_a_statement_timeout_of_zero_means_none(pg_url: str) -> None:
    engine = create_engine(pg_url, options=DatabaseOptions(statement_timeout_ms=0))
    try:
        async with engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw._config.command_timeout is None  # type: ignore[union-attr]
    finally:
        await engine.dispose()


def _loader_timeouts(settings: Settings) -> list[float | None]:
    """The batch timeout of every loader of a request of the app made from ``settings``."""
    app = create_app(settings)
    (view,) = [r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/graphql"]
    assert isinstance(view, GraphQL)
    registry = view.registry(sessions=view.sessions, statements=None)
    timeouts = {registry.get(name).options.batch_timeout_ms for name in Loaders.declared()}
    return sorted(timeouts, key=str)


def test_every_loader_takes_its_batch_timeout_from_the_apps_settings(sqlite_url: str) -> None:
    def settings(batch_timeout_ms: int) -> Settings:
        options = DatabaseOptions(batch_timeout_ms=batch_timeout_ms)
        return Settings(database_url=sqlite_url, database=options)

    assert _loader_timeouts(settings(1234)) == [1234]
    assert _loader_timeouts(settings(0)) == [None]
    assert _loader_timeouts(Settings.from_env({"DATABASE_URL": sqlite_url})) == [10_000]
