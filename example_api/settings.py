"""Settings of the example API: each declared once, read once per process.

Every setting is one field of :class:`Settings` (or of :class:`DatabaseOptions`,
the database's part) declared with :func:`setting`: its environment variable,
its default, one line of help and, where it has one, its command-line flag.
Everything else is derived from those declarations:

* :meth:`Settings.from_env` and :meth:`Settings.to_env` (the CLI hands its
  settings to uvicorn's worker processes through the environment, so every
  worker reads the same configuration the same way);
* the flags of ``python -m example_api serve`` (:func:`add_flags`,
  :func:`from_flags`);
* the table of variables in ``docs/example-api.md`` (:func:`docs_table`;
  ``tests/example_api/test_example_api_settings.py`` fails when they differ).

The parser comes from the default's type: a ``bool`` reads 1/0, true/false,
yes/no, on/off; an ``int`` reads an integer at least ``minimum``; a ``str`` is
taken as it is (empty: the default; an optional one, such as a URL that turns
a feature on, defaults to ``""``). Another type needs its branch in
:meth:`Setting.parse` and :meth:`Setting.format`. A bad value raises
:class:`SettingsError` naming the variable (or flag) and the value.

How to add a setting (one place, this file): add a field to :class:`Settings`
(or :class:`DatabaseOptions` for the database's pool and timeouts)::

    max_cost: int = setting("EXAMPLE_API_MAX_COST", 1000, "most cost units per operation",
                            minimum=1, flag="--max-cost")

then paste ``python -m example_api.settings`` (the table) over the one in
``docs/example-api.md``, and read ``settings.max_cost`` where it is used
(``create_app`` has the :class:`Settings`; resolvers reach them as
``info.context.settings``). A check that spans settings (one needs another)
goes into ``__post_init__``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any, Self, TypeVar, cast

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DatabaseOptions",
    "Setting",
    "Settings",
    "SettingsError",
    "add_flags",
    "declarations",
    "docs_table",
    "from_flags",
    "normalize_database_url",
    "setting",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/example_api.db"
"""The embedded default: a SQLite file under ``data/``, created on first start."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

T = TypeVar("T", bool, int, str)


class SettingsError(ValueError):
    """An environment variable (or CLI option) holds a value the server cannot use."""


def normalize_database_url(url: str) -> str:
    """Return ``url`` with the async driver the server uses for its database.

    ``postgresql://`` and ``postgres://`` become ``postgresql+asyncpg://`` and
    ``sqlite://`` becomes ``sqlite+aiosqlite://``; URLs naming a driver are kept.
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise SettingsError(  # not echoed: it may hold a password
            "DATABASE_URL must look like scheme://user:password@host/database; "
            "the value given has no scheme"
        )
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise SettingsError(
            "DATABASE_URL must be a PostgreSQL (asyncpg) or SQLite (aiosqlite) URL, "
            f"got scheme {scheme!r}"
        )
    return url


def _redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


# -- the declaration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One setting: where it is read from and what it means. Made by :func:`setting`."""

    env: str
    """The environment variable."""
    default: bool | int | str
    """The value when the variable is unset (or, for a string, empty)."""
    help: str
    """One line for ``--help`` and the docs table."""
    minimum: int | None = None
    """For an integer: the smallest value accepted."""
    flag: str | None = None
    """The ``serve`` flag that overrides the variable (a ``bool``: the flag that sets it)."""
    off_flag: str | None = None
    """For a ``bool``: the flag that clears it."""
    attribute: str = ""
    """The attribute, with its path (``database.pool_size``); filled in by :func:`declarations`."""

    def parse(self, raw: str, name: str | None = None) -> Any:
        """The value of ``raw``, or a :class:`SettingsError` naming ``name`` (default: ``env``)."""
        name = name or self.env
        if isinstance(self.default, bool):
            value = raw.strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise SettingsError(
                f"{name} must be one of 1/0, true/false, yes/no, on/off, got {raw!r}"
            )
        if isinstance(self.default, int):
            if raw.strip() == "":
                return self.default
            try:
                number = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
            if self.minimum is not None and number < self.minimum:
                raise SettingsError(f"{name} must be >= {self.minimum}, got {number}")
            return number
        return raw.strip() or self.default

    def format(self, value: Any) -> str:
        """``value`` as the variable holds it (the inverse of :meth:`parse`)."""
        if isinstance(self.default, bool):
            return "1" if value else "0"
        return str(value)


_KEY = "example_api.setting"


def setting(
    env: str,
    default: T,
    help: str,
    *,
    minimum: int | None = None,
    flag: str | None = None,
    off_flag: str | None = None,
) -> T:
    """Declare a field of :class:`Settings` or :class:`DatabaseOptions` as a setting."""
    if isinstance(default, bool) and minimum is not None:
        raise TypeError(f"{env}: a bool setting takes no minimum")
    if off_flag is not None and not isinstance(default, bool):
        raise TypeError(f"{env}: only a bool setting has an off_flag")
    spec = Setting(
        env=env, default=default, help=help, minimum=minimum, flag=flag, off_flag=off_flag
    )
    return field(default=default, metadata={_KEY: spec})


def _walk(cls: Any, prefix: str = "") -> Iterator[Setting]:
    """The settings of ``cls`` in declaration order, nested option groups included."""
    for item in fields(cls):
        spec = item.metadata.get(_KEY)
        if spec is not None:
            yield replace(spec, attribute=prefix + item.name)
        elif item.default_factory is not MISSING and is_dataclass(item.default_factory):
            yield from _walk(item.default_factory, f"{prefix}{item.name}.")


def declarations(cls: type[Any] | None = None) -> tuple[Setting, ...]:
    """Every setting of ``cls`` (default :class:`Settings`), in declaration order."""
    return tuple(_walk(Settings if cls is None else cls))


class _FromEnv:
    """``from_env``/``to_env`` for a dataclass whose fields are declared with :func:`setting`."""

    __slots__ = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read every declared variable from ``env`` (default ``os.environ``); ``overrides``
        (by field name) take the place of the variables."""
        env = os.environ if env is None else env
        return cast(Self, _build(cls, env, overrides))

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` rebuild this value."""
        out: dict[str, str] = {}
        for spec in declarations(type(self)):
            value: Any = self
            for part in spec.attribute.split("."):
                value = getattr(value, part)
            out[spec.env] = spec.format(value)
        return out


def _build(cls: Any, env: Mapping[str, str], overrides: Mapping[str, Any]) -> Any:
    """``cls`` with each declared field read from ``env``, unless in ``overrides``."""
    values: dict[str, Any] = {}
    for item in fields(cls):
        spec = item.metadata.get(_KEY)
        if item.name in overrides:
            values[item.name] = overrides[item.name]
        elif spec is not None:
            raw = env.get(spec.env)
            if raw is not None:
                values[item.name] = spec.parse(raw)
        elif item.default_factory is not MISSING and is_dataclass(item.default_factory):
            values[item.name] = _build(item.default_factory, env, {})
    return cls(**values)


# -- the settings --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseOptions(_FromEnv):
    """The connection pool and the timeouts that keep a sick database from hanging requests.

    Part of :class:`Settings` (``settings.database``); :func:`example_api.db.create_engine`
    and :func:`example_api.loaders.registry_options` take them from there. The pool
    and the statement and connect timeouts apply to PostgreSQL, the batch timeout
    to both backends. A timeout of 0 means no limit.
    """

    pool_size: int = setting(
        "EXAMPLE_API_DB_POOL_SIZE", 10, "PostgreSQL connections kept open per process", minimum=1
    )
    pool_overflow: int = setting(
        "EXAMPLE_API_DB_POOL_OVERFLOW",
        10,
        "extra PostgreSQL connections opened under load, closed when returned",
        minimum=0,
    )
    pool_timeout_ms: int = setting(
        "EXAMPLE_API_DB_POOL_TIMEOUT_MS", 30_000, "wait for a free connection, at most", minimum=1
    )
    connect_timeout_ms: int = setting(
        "EXAMPLE_API_DB_CONNECT_TIMEOUT_MS",
        10_000,
        "opening a PostgreSQL connection, at most",
        minimum=1,
    )
    statement_timeout_ms: int = setting(
        "EXAMPLE_API_DB_STATEMENT_TIMEOUT_MS",
        30_000,
        "one PostgreSQL statement's answer, at most (0: no limit)",
        minimum=0,
    )
    batch_timeout_ms: int = setting(
        "EXAMPLE_API_BATCH_TIMEOUT_MS",
        10_000,
        "one loader batch attempt, at most, then retried like a lost connection (0: no limit)",
        minimum=0,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(_FromEnv):
    """The server's configuration; build it with :meth:`from_env` (once per process)."""

    database_url: str = setting(
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        "`postgresql://...` and `sqlite:///...` get their async driver",
        flag="--database-url",
    )
    host: str = setting("EXAMPLE_API_HOST", "127.0.0.1", "interface to listen on", flag="--host")
    port: int = setting("EXAMPLE_API_PORT", 8000, "TCP port", minimum=1, flag="--port")
    workers: int = setting(
        "EXAMPLE_API_WORKERS",
        1,
        "uvicorn worker processes (more than one needs PostgreSQL)",
        minimum=1,
        flag="--workers",
    )
    debug: bool = setting(
        "EXAMPLE_API_DEBUG",
        False,
        "GraphiQL on `/graphql` (and `/` redirects there), introspection, full error "
        "messages with suggestions, `extensions.gqlbatch` statistics in every answer",
        flag="--debug",
        off_flag="--production",
    )
    graphiql_cdn: str = setting(
        "EXAMPLE_API_GRAPHIQL_CDN",
        "",
        "debug mode: load GraphiQL's files from this CDN, laid out like unpkg "
        "(`https://unpkg.com`); empty: from the example itself, which works offline",
    )
    migrate_on_start: bool = setting(
        "EXAMPLE_API_MIGRATE", True, "`alembic upgrade head` on start", off_flag="--no-migrate"
    )
    max_page_size: int = setting(
        "EXAMPLE_API_MAX_PAGE_SIZE",
        100,
        "largest `limit` a list field accepts",
        minimum=1,
        flag="--max-page-size",
    )
    max_depth: int = setting(
        "EXAMPLE_API_MAX_DEPTH", 10, "deepest selection accepted (`DepthLimiter`)", minimum=1
    )
    max_aliases: int = setting(
        "EXAMPLE_API_MAX_ALIASES", 15, "most aliases in one operation", minimum=0
    )
    max_tokens: int = setting(
        "EXAMPLE_API_MAX_TOKENS", 2000, "most tokens in one document", minimum=1
    )
    max_batch_operations: int = setting(
        "EXAMPLE_API_MAX_BATCH", 0, "operations per HTTP request (0: batching off)", minimum=0
    )
    max_body_bytes: int = setting(
        "EXAMPLE_API_MAX_BODY_BYTES",
        1_048_576,
        "largest request body; a larger one is answered 413 without being read",
        minimum=1,
    )
    max_cost: int = setting(
        "EXAMPLE_API_MAX_COST",
        100_000,
        "most objects one operation may ask for, page sizes multiplied down the tree "
        "(`gqlbatch.strawberry.CostLimiter`)",
        minimum=1,
        flag="--max-cost",
    )
    max_repeats: int = setting(
        "EXAMPLE_API_MAX_REPEATS",
        10,
        "most fields on one place of the result, fragments expanded (`RepeatLimiter`)",
        minimum=1,
    )
    request_timeout_ms: int = setting(
        "EXAMPLE_API_REQUEST_TIMEOUT_MS",
        10_000,
        "deadline of one GraphQL request; then it is cancelled, DB statements too (0: none)",
        minimum=0,
        flag="--request-timeout-ms",
    )
    max_response_bytes: int = setting(
        "EXAMPLE_API_MAX_RESPONSE_BYTES",
        10_485_760,
        "longest GraphQL answer sent; a longer one is replaced by a RESPONSE_TOO_LARGE error",
        minimum=1,
    )
    max_expensive: int = setting(
        "EXAMPLE_API_MAX_EXPENSIVE",
        2,
        "operations costing more than `EXAMPLE_API_CHEAP_COST` run at once per worker",
        minimum=1,
    )
    cheap_cost: int = setting(
        "EXAMPLE_API_CHEAP_COST",
        5_000,
        "an operation of at most this cost never waits for an expensive slot",
        minimum=0,
    )
    admission_wait_ms: int = setting(
        "EXAMPLE_API_ADMISSION_WAIT_MS",
        2_000,
        "how long an expensive operation waits for a slot; then 503 with `Retry-After`",
        minimum=0,
    )
    max_connections: int = setting(
        "EXAMPLE_API_MAX_CONNECTIONS",
        900,
        "open connections per worker (uvicorn `limit_concurrency`); beyond it a 503, "
        "so idle sockets cannot exhaust 1,024 file descriptors",
        minimum=1,
    )
    header_timeout_ms: int = setting(
        "EXAMPLE_API_HEADER_TIMEOUT_MS",
        10_000,
        "a request's headers must arrive this soon after the connection opens or their "
        "first byte, else the connection is closed (`example_api.protocol`)",
        minimum=1,
    )
    allowed_hosts: str = setting(
        "EXAMPLE_API_ALLOWED_HOSTS",
        "localhost,127.0.0.1,::1",
        "comma-separated `Host` names answered (any port); others get a 400 (`*`: all)",
        flag="--allowed-hosts",
    )
    auth_secret: str = setting(
        "EXAMPLE_API_AUTH_SECRET",
        "",
        "signs bearer tokens (`python -m example_api token USER_ID`); set, mutations need "
        "one and act as its user, and `email` is its owner's only; empty: open",
    )
    view_queue_size: int = setting(
        "EXAMPLE_API_VIEW_QUEUE",
        10_000,
        "views accepted but not yet written; beyond it `recordView` fails",
        minimum=1,
    )
    view_flush_ms: int = setting(
        "EXAMPLE_API_VIEW_FLUSH_MS",
        200,
        "how long a recorded view waits for others before the bulk UPDATE",
        minimum=0,
    )
    gc_tuning: bool = setting(
        "EXAMPLE_API_GC_TUNING",
        True,
        "the collector skips start-up objects and collects young objects every 10,000 "
        "allocations, not 700 (`example_api.gc_tuning`)",
    )
    tracing: bool = setting(
        "EXAMPLE_API_OTEL",
        False,
        "OpenTelemetry spans for operations, resolvers and loader batches (`otel` extra)",
    )
    redis_url: str = setting(
        "EXAMPLE_API_REDIS_URL",
        "",
        "`redis://host:port/db`: the `user` and `post` loaders share a cache there across "
        "processes and machines (unset: no shared cache)",
        flag="--redis-url",
    )
    redis_namespace: str = setting(
        "EXAMPLE_API_REDIS_NAMESPACE",
        "example_api",
        "prefix of every key the shared cache writes",
    )
    cache_ttl_s: int = setting(
        "EXAMPLE_API_CACHE_TTL_S",
        60,
        "seconds a shared cache entry lives: the staleness bound when Redis cannot be "
        "reached during a write",
        minimum=1,
    )
    cache_timeout_ms: int = setting(
        "EXAMPLE_API_CACHE_TIMEOUT_MS",
        50,
        "longest wait for one shared cache call before reading the database instead",
        minimum=1,
    )
    database: DatabaseOptions = field(default_factory=DatabaseOptions)
    """The pool and the database timeouts (``EXAMPLE_API_DB_*``, ``EXAMPLE_API_BATCH_*``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if not 0 < self.port < 65536:
            raise SettingsError(f"EXAMPLE_API_PORT must be between 1 and 65535, got {self.port}")
        if self.workers > 1 and self.is_sqlite:
            raise SettingsError(
                f"EXAMPLE_API_WORKERS={self.workers} needs PostgreSQL: SQLite allows one "
                "writer at a time, so run one worker on SQLite or set DATABASE_URL"
            )
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"EXAMPLE_API_REDIS_URL must start with redis://, rediss:// or unix://, "
                f"got {self.redis_url!r}"
            )

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        """``allowed_hosts`` as a tuple of names."""
        return tuple(name.strip() for name in self.allowed_hosts.split(",") if name.strip())

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite."""
        return self.database_url.startswith("sqlite")

    @property
    def graphql_url(self) -> str:
        """Where the server answers GraphQL (and shows GraphiQL in debug mode)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/graphql"

    @property
    def redacted_database_url(self) -> str:
        """The database URL without its password, for logs."""
        return _redact(self.database_url)


# -- derived: the command line and the docs -------------------------------------------------


def _dest(spec: Setting) -> str:
    return "setting:" + spec.attribute


def add_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add the flag of every setting that has one (or of the fields in ``only``)."""
    for spec in declarations():
        if only is not None and spec.attribute not in only:
            continue
        if spec.flag is None and spec.off_flag is None:
            continue
        described = f"{spec.help} (env {spec.env}, default {spec.format(spec.default)})"
        if isinstance(spec.default, bool):
            group = parser.add_mutually_exclusive_group()
            if spec.flag is not None:
                group.add_argument(
                    spec.flag, dest=_dest(spec), action="store_true", default=None, help=described
                )
            if spec.off_flag is not None:
                group.add_argument(
                    spec.off_flag,
                    dest=_dest(spec),
                    action="store_false",
                    default=None,
                    help=f"turn off: {described}" if spec.flag is None else "the opposite",
                )
            continue
        assert spec.flag is not None
        parser.add_argument(
            spec.flag,
            dest=_dest(spec),
            type=_flag_parser(spec, spec.flag),
            metavar=spec.flag.removeprefix("--").replace("-", "_").upper(),
            help=described,
        )


def _flag_parser(spec: Setting, flag: str) -> Any:
    def parse(raw: str) -> Any:
        try:
            return spec.parse(raw, flag)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def from_flags(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``env`` (default ``os.environ``) with the flags given in ``args`` on top."""
    overrides: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}  # option groups: {"database": {"pool_size": 3}}
    for spec in declarations():
        value = getattr(args, _dest(spec), None)
        if value is not None:
            group, _, name = spec.attribute.rpartition(".")
            (nested.setdefault(group, {}) if group else overrides)[name] = value
    settings = Settings.from_env(env, **overrides)
    for group, values in nested.items():
        settings = replace(settings, **{group: replace(getattr(settings, group), **values)})
    return settings


def docs_table() -> str:
    """The markdown table of every setting, as ``docs/example-api.md`` shows it."""
    lines = ["| variable | default | flag | meaning |", "|---|---|---|---|"]
    for spec in declarations():
        flags = " / ".join(f"`{flag}`" for flag in (spec.flag, spec.off_flag) if flag)
        default = spec.format(spec.default)
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{spec.env}` | {shown} | {flags} | {spec.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(docs_table(), end="")
