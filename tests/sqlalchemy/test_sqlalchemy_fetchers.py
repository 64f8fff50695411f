"""gqlbatch.sqlalchemy fetchers as plain batch functions, on real SQLite and PostgreSQL."""

from __future__ import annotations

import re
import types
from typing import Any

import pytest
from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import InvalidRequestError, MultipleResultsFound
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import selectinload

from gqlbatch.sqlalchemy import (
    ManyFetcher,
    OneFetcher,
    PerBatchSessions,
    SharedSession,
    by_column,
    by_group,
    by_relationship,
)
from tests.sqlalchemy.sqla_models import (
    CHILDREN,
    Account,
    Comment,
    Database,
    Note,
    Post,
    Tag,
    User,
    post_tags,
)

pytest_plugins = ["tests.sqlalchemy.sqla_fixtures"]  # the db fixture: SQLite and PostgreSQL


async def fetch(db: Database, fetcher: Any, keys: list[Any]) -> tuple[Any, list[str]]:
    """Run ``fetcher`` bound to per-batch sessions; return its result and the SQL it sent."""
    with db.counter.scope() as sql:
        result = await fetcher.bind(db.maker)(keys)
    return result, sql.statements


# -- one row per key ------------------------------------------------------------------


async def test_by_column_returns_one_object_per_key_in_one_statement(db: Database) -> None:
    result, sql = await fetch(db, by_column(User.id), [3, 1, 3, 2, 1])
    assert len(sql) == 1
    assert set(result) == {1, 2, 3}
    assert {k: u.name for k, u in result.items()} == {1: "user1", 2: "user2", 3: "user3"}


async def test_by_column_leaves_absent_keys_out(db: Database) -> None:
    result, sql = await fetch(db, by_column(User.id), [1, 404, 405])
    assert len(sql) == 1
    assert list(result) == [1]


async def test_by_column_on_a_unique_non_key_column(db: Database) -> None:
    result, _ = await fetch(db, by_column(User.email), ["u7@example.org", "nobody@example.org"])
    assert {k: u.id for k, u in result.items()} == {"u7@example.org": 7}


async def test_by_column_on_a_non_unique_column_fails_only_the_ambiguous_key(
    db: Database,
) -> None:
    result, _ = await fetch(db, by_column(Post.author_id), [1, 404])
    assert isinstance(result[1], MultipleResultsFound)
    assert "loader 'Post.author_id': more than one Post row for key 1" in str(result[1])
    assert 404 not in result


async def test_composite_key_from_attributes_or_tuple_(db: Database) -> None:
    keys = [("acme", "ann"), ("initech", "bob"), ("acme", "zed")]
    for fetcher in (
        by_column(Account.org, Account.login),
        by_column(tuple_(Account.org, Account.login)),
    ):
        result, sql = await fetch(db, fetcher, keys)
        assert len(sql) == 1
        assert {k: a.display for k, a in result.items()} == {
            ("acme", "ann"): "ann@acme",
            ("initech", "bob"): "bob@initech",
        }
        assert fetcher.loader_options == {"name": "Account(org, login)", "key_type": tuple}


async def test_extra_where_filters_every_fetcher_kind(db: Database) -> None:
    one, _ = await fetch(db, by_column(User.id, where=User.name != "user2"), [1, 2])
    assert list(one) == [1]
    many, _ = await fetch(db, by_group(Post.author_id, where=[Post.score > 5]), [1])
    assert many[1] and all(p.score > 5 for p in many[1])
    related, _ = await fetch(db, by_relationship(Post.tags, where=Tag.name == "tag3"), [1, 2])
    assert [t.name for t in related[2]] == ["tag3"]
    assert related[1] == []


# -- many rows per key ----------------------------------------------------------------


async def test_by_group_gives_every_key_a_list_and_empty_lists_for_no_rows(db: Database) -> None:
    result, sql = await fetch(db, by_group(Post.author_id), [2, 404, 1, 2])
    assert len(sql) == 1
    assert set(result) == {1, 2, 404}
    assert result[404] == []
    assert sorted(p.id for p in result[1]) == list(range(1, CHILDREN + 1))
    assert all(p.author_id == 2 for p in result[2])


async def test_by_group_orders_each_list_by_order_by(db: Database) -> None:
    fetcher = by_group(Post.author_id, order_by=[Post.score.desc(), Post.id])
    result, _ = await fetch(db, fetcher, [1, 2])
    for posts in result.values():
        assert [(-p.score, p.id) for p in posts] == sorted((-p.score, p.id) for p in posts)


async def test_by_group_limit_is_applied_per_key_in_sql_with_a_window_function(
    db: Database,
) -> None:
    fetcher = by_group(Post.author_id, order_by=[Post.score.desc(), Post.id], limit=3)
    result, sql = await fetch(db, fetcher, [1, 2, 3, 404])
    assert len(sql) == 1
    assert "row_number() OVER (PARTITION BY posts.author_id" in sql[0]
    assert result[404] == []
    async with db.maker() as session:
        for author in (1, 2, 3):
            expected = await session.scalars(
                select(Post.id)
                .where(Post.author_id == author)
                .order_by(Post.score.desc(), Post.id)
                .limit(3)
            )
            assert [p.id for p in result[author]] == list(expected)


async def test_by_group_limit_without_order_by_keeps_the_lowest_primary_keys(
    db: Database,
) -> None:
    result, _ = await fetch(db, by_group(Post.author_id, limit=2), [5])
    assert [p.id for p in result[5]] == [41, 42]


async def test_by_group_on_a_composite_key(db: Database) -> None:
    fetcher = by_group(Note.org, Note.login, order_by=Note.id.desc(), limit=1)
    result, sql = await fetch(db, fetcher, [("acme", "ann"), ("acme", "bob")])
    assert len(sql) == 1
    assert [n.body for n in result[("acme", "ann")]] == ["a2"]
    assert result[("acme", "bob")] == []


# -- relationships --------------------------------------------------------------------


async def test_many_to_one_relationship_is_keyed_by_the_foreign_key(db: Database) -> None:
    fetcher = by_relationship(Post.author)
    assert isinstance(fetcher, OneFetcher)
    async with db.maker() as session:
        post = await session.get(Post, 15)
    assert post is not None
    assert fetcher.key_for(post) == 2
    result, sql = await fetch(db, fetcher, [2, 1, 404])
    assert len(sql) == 1
    assert {k: u.name for k, u in result.items()} == {1: "user1", 2: "user2"}
    assert fetcher.loader_options == {"name": "Post.author", "key_type": int}


async def test_one_to_many_relationship_groups_children_by_parent_key(db: Database) -> None:
    fetcher = by_relationship(User.posts)
    assert isinstance(fetcher, ManyFetcher)
    result, sql = await fetch(db, fetcher, [3, 404])
    assert len(sql) == 1
    assert [p.id for p in result[3]] == list(range(21, 31))  # the relationship's order_by
    assert result[404] == []


async def test_many_to_many_relationship_goes_through_the_secondary_table(db: Database) -> None:
    fetcher = by_relationship(Post.tags)
    result, sql = await fetch(db, fetcher, [1, 2, 40_404])
    assert len(sql) == 1
    assert "JOIN post_tags" in sql[0]
    async with db.maker() as session:
        for post_id in (1, 2):
            expected = await session.scalars(
                select(post_tags.c.tag_id).where(post_tags.c.post_id == post_id).order_by("tag_id")
            )
            assert [t.id for t in result[post_id]] == list(expected)
    assert result[40_404] == []


async def test_many_to_many_limit_and_order_by(db: Database) -> None:
    fetcher = by_relationship(Post.tags, order_by=Tag.id.desc(), limit=1)
    result, sql = await fetch(db, fetcher, [1, 2])
    assert len(sql) == 1
    for post_id, tags in result.items():
        async with db.maker() as session:
            top = await session.scalar(
                select(func.max(post_tags.c.tag_id)).where(post_tags.c.post_id == post_id)
            )
        assert [t.id for t in tags] == [top]


async def test_composite_relationships_both_ways(db: Database) -> None:
    notes = by_relationship(Account.notes)
    result, _ = await fetch(db, notes, [("acme", "ann"), ("initech", "ann")])
    assert [n.body for n in result[("acme", "ann")]] == ["a1", "a2"]
    assert result[("initech", "ann")] == []
    account = by_relationship(Note.account)
    result, _ = await fetch(db, account, [("initech", "bob")])
    assert result[("initech", "bob")].display == "bob@initech"


async def test_key_for_reads_the_parent_side_of_each_relationship_kind(db: Database) -> None:
    async with db.maker() as session:
        user = await session.get(User, 4)
        post = await session.get(Post, 33)
        note = await session.get(Note, 3)
    assert by_relationship(User.posts).key_for(user) == 4
    assert by_relationship(Post.author).key_for(post) == 4
    assert by_relationship(Post.tags).key_for(post) == 33
    assert by_relationship(Note.account).key_for(note) == ("initech", "bob")
    with pytest.raises(
        TypeError, match=re.escape("fetcher 'User.id' was not built from a relationship")
    ):
        by_column(User.id).key_for(user)


# -- objects come back fully loaded ---------------------------------------------------


async def test_objects_are_fully_loaded_after_their_session_is_gone(db: Database) -> None:
    users, _ = await fetch(db, by_column(User.id), [1])
    posts, _ = await fetch(db, by_relationship(User.posts), [1])
    tags, _ = await fetch(db, by_relationship(Post.tags, limit=1), [1])
    user = users[1]
    assert (user.id, user.name, user.email) == (1, "user1", "u1@example.org")
    assert (posts[1][0].title, posts[1][0].score) == ("post 1.1", (7 + 3) % 11)
    assert tags[1][0].name.startswith("tag")
    # Relationships are not loaded, and the models make that loud, not a hidden query.
    with pytest.raises(
        InvalidRequestError, match=re.escape("'User.posts' is not available due to lazy='raise'")
    ):
        _ = user.posts


async def test_loader_options_eager_load_relationships(db: Database) -> None:
    fetcher = by_column(User.id, options=[selectinload(User.posts).selectinload(Post.tags)])
    result, sql = await fetch(db, fetcher, [1, 2])
    assert len(sql) == 3  # the users, then selectinload's own statement per relationship
    assert len(result[2].posts) == CHILDREN
    assert all(1 <= len(p.tags) <= 2 for p in result[2].posts)


async def test_loader_options_work_with_a_per_key_limit(db: Database) -> None:
    fetcher = by_group(Post.author_id, limit=2, options=[selectinload(Post.comments)])
    result, sql = await fetch(db, fetcher, [1])
    assert len(sql) == 2
    assert [[c.body for c in p.comments] for p in result[1]] == [["on 1"], []]


async def test_shared_session_objects_stay_loaded_after_aclose(db: Database) -> None:
    shared = SharedSession(db.maker)
    users = await by_column(User.id).bind(shared)([1, 2])
    posts = await by_relationship(User.posts).bind(shared)([1])
    await shared.aclose()
    user, user_posts = users[2], posts[1]
    assert isinstance(user, User)
    assert isinstance(user_posts, list)
    assert user.email == "u2@example.org"
    assert user_posts[0].author_id == 1


# -- keys of the wrong type never reach the database ----------------------------------


async def test_a_key_of_the_wrong_type_fails_alone_and_sends_no_sql_for_it(db: Database) -> None:
    result, sql = await fetch(db, by_column(User.id), [1, "2", 2.5])
    assert len(sql) == 1
    assert set(result) == {1, "2", 2.5}
    assert result[1].id == 1
    for bad in ("2", 2.5):
        assert isinstance(result[bad], TypeError)
    assert str(result["2"]) == "loader 'User.id': key '2' is a str, but User.id holds int"


async def test_a_batch_of_only_bad_keys_sends_no_sql(db: Database) -> None:
    result, sql = await fetch(db, by_column(Account.org, Account.login), [("acme", 1), "acme"])
    assert sql == []
    assert str(result[("acme", 1)]) == (
        "loader 'Account(org, login)': key ('acme', 1) has 1 (int) at position 1, "
        "but that column holds str"
    )
    assert str(result["acme"]) == (
        "loader 'Account(org, login)': key 'acme' must be a tuple of 2 values (str, str)"
    )
    grouped, sql = await fetch(db, by_group(Post.author_id), ["1"])
    assert sql == []
    assert isinstance(grouped["1"], TypeError)


async def test_values_are_bind_parameters_never_sql_text(db: Database) -> None:
    evil = "x' OR '1'='1"
    result, sql = await fetch(db, by_column(User.email), [evil])
    assert result == {}
    assert evil not in sql[0]


async def test_an_empty_batch_sends_no_sql(db: Database) -> None:
    result, sql = await fetch(db, by_group(Post.author_id), [])
    assert (dict(result), sql) == ({}, [])


# -- bind-parameter limits ------------------------------------------------------------


async def test_keys_above_the_parameter_limit_split_into_as_few_statements_as_needed(
    db: Database,
) -> None:
    keys = list(range(1, 101))
    fetcher = by_column(Account.org, Account.login, max_params=30)
    result, sql = await fetch(db, fetcher, [("acme", str(k)) for k in keys] + [("acme", "ann")])
    assert list(result) == [("acme", "ann")]
    if db.kind == "postgres":
        assert len(sql) == 1  # one array per key column, whatever the count
    else:
        assert len(sql) == 7  # 101 keys x 2 parameters, at most 30 per statement: 15 keys each
    grouped, sql = await fetch(db, by_group(Post.author_id, max_params=40, limit=1), keys)
    if db.kind == "postgres":
        assert len(sql) == 1  # one array parameter, whatever the count
        assert "= ANY (" in sql[0]
    else:
        assert len(sql) == 3  # 39 keys per statement beside the limit parameter
    assert all(len(posts) == 1 for posts in grouped.values())


async def test_parameters_of_the_extra_filter_count_towards_the_limit(db: Database) -> None:
    fetcher = by_column(User.id, where=User.id.in_(list(range(1, 11))), max_params=14)
    result, sql = await fetch(db, fetcher, list(range(1, 21)))
    assert sorted(result) == list(range(1, 11))
    if db.kind == "sqlite":
        assert len(sql) == 5  # 10 parameters of the filter leave 4 keys per statement


def test_the_module_lists_its_public_names_each_documented() -> None:
    import gqlbatch.sqlalchemy as module

    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and str(getattr(value, "__module__", "")).startswith(f"{module.__name__}.")
        and isinstance(value, type | types.FunctionType)
    }
    assert public <= set(module.__all__)
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name).__doc__, name


# -- declaration and binding ----------------------------------------------------------


async def test_bind_returns_a_new_fetcher_and_leaves_the_declaration_unbound(
    db: Database,
) -> None:
    declared = by_column(User.id)
    bound = declared.bind(db.maker)
    assert declared.sessions is None
    assert isinstance(bound.sessions, PerBatchSessions)
    assert bound.sessions.sessionmaker is db.maker
    shared = SharedSession(db.maker)
    assert bound.bind(shared).sessions is shared
    assert isinstance(by_column(User.id, sessions=db.maker).sessions, PerBatchSessions)
    await shared.aclose()


async def test_an_unbound_fetcher_refuses_to_run() -> None:
    with pytest.raises(
        RuntimeError, match=re.escape("fetcher 'User.id' is not bound to a session source")
    ):
        await by_column(User.id)([1])


def test_loader_options_name_and_key_type() -> None:
    assert by_column(User.id).loader_options == {"name": "User.id", "key_type": int}
    assert by_column(User.email).loader_options == {"name": "User.email", "key_type": str}
    assert by_group(Post.author_id).loader_options == {"name": "Post.author_id", "key_type": int}
    assert by_relationship(User.posts).loader_options == {"name": "User.posts", "key_type": int}
    assert by_relationship(Post.tags, name="tags").loader_options == {
        "name": "tags",
        "key_type": int,
    }
    assert by_column(User.id).entity is User
    assert by_relationship(Post.tags).entity is Tag
    assert by_relationship(Post.tags).relationship is Post.tags.property


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: by_column(), TypeError, "by_column needs at least one mapped column attribute"),  # type: ignore[call-overload]
        (lambda: by_column("id"), TypeError, "by_column takes mapped column attributes"),
        (lambda: by_column(User.posts), TypeError, "use by_relationship(User.posts)"),
        (
            lambda: by_column(User.id, Post.id),
            ValueError,
            "by_column: all key columns must belong to one mapped class, got Post, User",
        ),
        (lambda: by_group(Post.author_id, limit=0), ValueError, "limit must be >= 1, got 0"),
        (lambda: by_group(Post.author_id, limit="3"), TypeError, "limit must be an int or None"),  # type: ignore[call-overload]
        (
            lambda: by_relationship(Post.author, limit=1),
            ValueError,
            "limit applies to many-rows fetchers only",
        ),
        (lambda: by_column(User.id, where="id > 1"), TypeError, "where must be one or a sequence"),
        (
            lambda: by_column(User.id, options=[1]),
            TypeError,
            "options must be one or a sequence of loader options",
        ),
        (lambda: by_relationship(User.id), TypeError, "by_relationship takes a relationship"),
        (
            lambda: by_column(User.id, sessions=object()),
            TypeError,
            "sessions must be a SessionSource",
        ),
        (lambda: by_column(User.id, name=3), TypeError, "name must be a str or None, got 3"),  # type: ignore[call-overload]
        (lambda: by_column(User.id, max_params=0), ValueError, "max_params must be >= 1, got 0"),
        (
            lambda: PerBatchSessions(object()),  # type: ignore[arg-type]
            TypeError,
            "sessionmaker must be an async_sessionmaker",
        ),
        (lambda: SharedSession(None), TypeError, "sessionmaker must be an async_sessionmaker"),  # type: ignore[arg-type]
    ],
)
def test_bad_declarations_are_rejected_naming_the_argument(
    build: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_a_relationship_with_a_richer_join_condition_is_refused() -> None:
    with pytest.raises(ValueError, match=r"User\.top_posts.*more than foreign-key equality"):
        by_relationship(User.top_posts)


def test_a_bare_sessionmaker_means_per_batch_sessions() -> None:
    maker: async_sessionmaker[Any] = async_sessionmaker()
    assert isinstance(by_column(User.id).bind(maker).sessions, PerBatchSessions)


_ = Comment  # the model is used through Post.comments
