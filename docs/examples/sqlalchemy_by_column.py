"""One row per key: by_column on a primary key, a unique column, and a composite key."""

import asyncio

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy_models import Membership, User, example_database, print_sql

from gqlbatch.sqlalchemy import StatementCounter, by_column


async def main() -> None:
    async with example_database() as engine:
        sessions = async_sessionmaker(engine)  # a bare sessionmaker: a session per batch
        counter = StatementCounter(engine)

        user = by_column(User.id).loader(sessions)  # KeyedLoader(name="User.id", key_type=int)
        with counter.scope() as sql:
            found = await asyncio.gather(user.load(3), user.load(1), user.load(3), user.load(99))
        print([u.name if u else None for u in found])  # ['linus', 'ada', 'linus', None]
        print_sql(sql)

        try:
            user.load("1")  # a GraphQL ID arrives as a string: refused before any SQL
        except TypeError as error:
            print("TypeError:", error)

        by_email = by_column(User.email).loader(sessions, missing="error")
        with counter.scope() as sql:
            grace = await by_email.load("grace@example.org")
        print(grace.id, grace.name)
        print_sql(sql)

        member = by_column(Membership.org, Membership.login).loader(sessions)
        with counter.scope() as sql:
            roles = await member.load_many([("acme", "ada"), ("acme", "grace"), ("acme", "zed")])
        print([m.role if m else None for m in roles])
        print_sql(sql)
        counter.close()


asyncio.run(main())
