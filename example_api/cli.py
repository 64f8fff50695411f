"""``python -m example_api serve|seed|migrate|token``: the example API's command line.

Every setting's flag (declared with the setting in :mod:`example_api.settings`)
overrides its environment variable, so ``DATABASE_URL=... python -m example_api
serve`` and ``python -m example_api serve --database-url ...`` are the same.
``serve --factory MODULE:NAME`` runs another app factory over the same
settings (``benchmarks._naive:create_app``, the per-field-query variant).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from example_api import migrations
from example_api.auth import DEFAULT_TTL_SECONDS, issue
from example_api.db import create_engine
from example_api.seed import SeedPlan, is_empty, seed
from example_api.settings import Settings, SettingsError, add_flags, from_flags

__all__ = ["main"]

log = logging.getLogger("example_api")

DEFAULT_FACTORY = "example_api.app:create_app"
"""What ``serve`` runs: uvicorn calls it in each worker to build the app."""


def _plan(args: argparse.Namespace, users: int | None = None) -> SeedPlan:
    return SeedPlan(
        users=args.users if users is None else users,
        posts_per_user=args.posts_per_user,
        comments_per_post=args.comments_per_post,
        tags=args.tags,
        seed=args.seed,
    )


async def _prepare(settings: Settings, plan: SeedPlan | None, *, migrate: bool) -> None:
    """Migrate (when asked), then seed ``plan`` if the database holds no user."""
    engine = create_engine(settings.database_url, options=settings.database)
    try:
        if migrate:
            await migrations.upgrade(engine)
        if plan is not None and await is_empty(engine):
            report = await seed(engine, plan)
            log.info("seeded an empty database: %s", report)
    finally:
        await engine.dispose()


def serve(args: argparse.Namespace) -> int:
    """Migrate once, seed if asked, then run uvicorn with the settings in the environment."""
    import uvicorn

    settings = from_flags(args)
    plan = _plan(args, args.seed_if_empty) if args.seed_if_empty else None
    asyncio.run(_prepare(settings, plan, migrate=settings.migrate_on_start))
    # The workers read their settings from the environment; this process has
    # migrated already, so they need not (and several must not race to).
    os.environ.update(replace(settings, migrate_on_start=False).to_env())
    if settings.debug and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("debug mode on %s: GraphiQL and full errors are public", settings.host)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and set(
        settings.allowed_host_names
    ) <= {"127.0.0.1", "localhost", "::1"}:
        log.warning(
            "listening on %s, but only requests for a loopback name are answered: set "
            "EXAMPLE_API_ALLOWED_HOSTS (--allowed-hosts) to the names clients use",
            settings.host,
        )
    uvicorn.run(
        args.factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=args.log_level,
        log_config=_log_config(args.log_level),
        timeout_graceful_shutdown=args.graceful_timeout,
        lifespan="on",
        server_header=False,  # no banner naming the server and its version
        http="example_api.protocol:HeaderTimeoutProtocol",  # idle and trickled headers closed
        limit_concurrency=settings.max_connections,
    )
    return 0


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the server's own loggers, in every worker process."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    ours = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    # example_api: start, stop, lost views; strawberry.execution: unexpected errors.
    config["loggers"].update({"example_api": ours, "strawberry.execution": ours})
    return config


def seed_command(args: argparse.Namespace) -> int:
    """Fill the database with deterministic fake data."""
    settings = from_flags(args)

    async def run() -> None:
        engine = create_engine(settings.database_url, options=settings.database)
        try:
            if not args.no_migrate:
                await migrations.upgrade(engine)
            if args.if_empty and not await is_empty(engine):
                print("the database holds data already; nothing seeded")
                return
            report = await seed(engine, _plan(args), reset=args.reset)
            print(
                f"seeded {report.users} users, {report.posts} posts, {report.comments} "
                f"comments, {report.tags} tags, {report.post_tags} post tags"
            )
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    """``alembic upgrade/downgrade`` on the server's database, or show its revision."""
    settings = from_flags(args)

    async def run() -> None:
        engine = create_engine(settings.database_url, options=settings.database)
        try:
            if args.action == "upgrade":
                await migrations.upgrade(engine, args.revision or "head")
            elif args.action == "downgrade":
                await migrations.downgrade(engine, args.revision or "-1")
            current = await migrations.current_revision(engine)
            print(
                f"database at revision {current or '(none)'}; head is {migrations.head_revision()}"
            )
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def _seed_options(parser: argparse.ArgumentParser, users: int | None) -> None:
    if users is not None:
        parser.add_argument("--users", type=int, default=users, help=f"users (default {users})")
    parser.add_argument("--posts-per-user", type=int, default=5, help="mean (default 5)")
    parser.add_argument("--comments-per-post", type=int, default=5, help="mean (default 5)")
    parser.add_argument("--tags", type=int, default=20, help="distinct tags (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")


def token_command(args: argparse.Namespace) -> int:
    """Print a bearer token naming ``USER_ID``, signed with ``EXAMPLE_API_AUTH_SECRET``."""
    settings = Settings.from_env()
    print(issue(settings.auth_secret, args.user_id, ttl_seconds=args.ttl_seconds))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m example_api``."""
    parser = argparse.ArgumentParser(
        prog="python -m example_api", description="The gqlbatch example GraphQL API."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run the server with uvicorn")
    add_flags(serve_parser)
    serve_parser.add_argument(
        "--seed-if-empty", type=int, metavar="USERS", help="seed this many users if empty"
    )
    serve_parser.add_argument(
        "--factory",
        default=DEFAULT_FACTORY,
        metavar="MODULE:NAME",
        help=f"the app factory each worker calls (default {DEFAULT_FACTORY})",
    )
    serve_parser.add_argument("--log-level", default="info", help="uvicorn log level")
    serve_parser.add_argument(
        "--graceful-timeout", type=float, default=30, help="seconds requests get to finish"
    )
    _seed_options(serve_parser, users=None)

    seed_parser = commands.add_parser("seed", help="fill the database with fake data")
    add_flags(seed_parser, only=("database_url",))
    _seed_options(seed_parser, users=50)
    seed_parser.add_argument("--reset", action="store_true", help="delete every row first")
    seed_parser.add_argument("--if-empty", action="store_true", help="only an empty database")
    seed_parser.add_argument("--no-migrate", action="store_true", help="skip upgrade head")

    token_parser = commands.add_parser(
        "token", help="print a bearer token for a user (needs EXAMPLE_API_AUTH_SECRET)"
    )
    token_parser.add_argument("user_id", type=int, metavar="USER_ID")
    token_parser.add_argument(
        "--ttl-seconds", type=int, default=DEFAULT_TTL_SECONDS, help="validity (default 1 day)"
    )

    migrate_parser = commands.add_parser("migrate", help="alembic upgrade/downgrade")
    add_flags(migrate_parser, only=("database_url",))
    migrate_parser.add_argument(
        "action", nargs="?", default="upgrade", choices=("upgrade", "downgrade", "current")
    )
    migrate_parser.add_argument("revision", nargs="?", help="default: head, or -1 for downgrade")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": serve,
        "seed": seed_command,
        "migrate": migrate_command,
        "token": token_command,
    }
    try:
        return handlers[args.command](args)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
