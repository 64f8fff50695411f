"""The GraphQL schema of the blog. Every relation is read through ``info.context.loaders``.

No resolver below runs its own query for a relation: each asks a loader for
its parent's key and awaits the batch (see :mod:`example_api.loaders`); the
plain reads by id are ``loader_field``s, which skip the await when the loader
already holds the value. Root
fields run one query for their page. Mutations write in their own session,
then prime or clear the request's loaders so that the rest of the request
reads what was just written; a write to a user or a post also deletes it from
the shared cache (``EXAMPLE_API_REDIS_URL``) before the mutation answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info
from strawberry.types.field import StrawberryField

from example_api import models
from example_api.auth import TokenError
from example_api.context import AppContext
from example_api.loaders import Loaders, PageKey
from example_api.views import ViewQueueFullError, ViewsClosedError
from gqlbatch.strawberry import invalidate, loader_field, write_through

__all__ = ["Comment", "Mutation", "Post", "Query", "Tag", "User", "UserInputError"]

Ctx = Info[AppContext, None]


Resolver = Callable[..., Any]


def field(description: str) -> Callable[[Resolver], StrawberryField]:
    """``@strawberry.field(description=...)``, typed like the bare decorator (Strawberry
    types the called form ``Any``, which hides the resolvers from mypy)."""
    return partial(strawberry.field, description=description)


def mutation(description: str) -> Callable[[Resolver], StrawberryField]:
    """``@strawberry.mutation(description=...)``, typed like the bare decorator."""
    return partial(strawberry.mutation, description=description)


class UserInputError(GraphQLError):
    """A request the client can fix; its message reaches the client even in production."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message, extensions={"code": code})


def page_of(info: Ctx, limit: int, offset: int) -> tuple[int, int]:
    """The page a list field was asked for, checked against the maximum page size."""
    maximum = info.context.settings.max_page_size
    if not 0 <= limit <= maximum:
        raise UserInputError(
            f"limit must be between 0 and {maximum} (the maximum page size), got {limit}"
        )
    if offset < 0:
        raise UserInputError(f"offset must be >= 0, got {offset}")
    return limit, offset


def page_key(parent: object, info: Ctx, limit: int, offset: int) -> PageKey:
    """The key of ``parent``'s page in a paged loader: ``(id, limit, offset)``."""
    return (int(parent.id), *page_of(info, limit, offset))  # type: ignore[attr-defined]


MAX_ID = 2**31 - 1
"""The largest id: the primary keys are 32-bit on PostgreSQL (``int4``)."""

EXCERPT = 40
"""Most characters of a client's value an error message repeats."""


def excerpt(value: object) -> str:
    """``repr(value)``, cut to :data:`EXCERPT` characters: an error never echoes a megabyte."""
    text = str(value)
    if len(text) <= EXCERPT:
        return repr(text)
    return f"{text[:EXCERPT]!r}... ({len(text)} characters)"


def _viewer(info: Ctx) -> int | None:
    """The user the request's bearer token names (None: no token); a bad token is refused."""
    try:
        return info.context.viewer()
    except TokenError as error:
        raise UserInputError(str(error), code="UNAUTHENTICATED") from None


def acting_user(
    info: Ctx, author_id: strawberry.ID | None = None, argument: str = "authorId"
) -> int | None:
    """Who a mutation acts as: with tokens checked, the token's user (``author_id``, when
    given, must name them); without, ``author_id`` as given (None when not given)."""
    if not info.context.auth_required:
        return None if author_id is None else id_of(author_id, argument)
    viewer = _viewer(info)
    if viewer is None:
        raise UserInputError(
            "mutations need 'Authorization: Bearer <token>' (python -m example_api token USER_ID)",
            code="UNAUTHENTICATED",
        )
    if author_id is not None and id_of(author_id, argument) != viewer:
        raise UserInputError(
            f"{argument} must be the token's user ({viewer}), got {excerpt(author_id)}",
            code="FORBIDDEN",
        )
    return viewer


def id_of(value: strawberry.ID, argument: str) -> int:
    """The integer behind an ``ID`` argument, or a clear error naming the argument.

    Checked before any SQL: an id no row can have (0, negative, past
    :data:`MAX_ID`, not a number) fails this field only, never the batch
    holding the other keys.
    """
    text = str(value).strip()
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else 0
    if not 0 < number <= MAX_ID or str(number) != text:
        raise UserInputError(
            f"{argument} must be a positive integer id up to {MAX_ID}, got {excerpt(value)}"
        )
    return number


@strawberry.type
class User:
    """Someone who writes posts and comments."""

    id: strawberry.ID
    name: str
    created_at: datetime

    @field(
        "This user's email. When the server checks tokens (EXAMPLE_API_AUTH_SECRET), "
        "only the user it belongs to reads it; others get null and a FORBIDDEN error."
    )
    def email(self, info: Ctx) -> str | None:
        row: Any = self  # an ORM row: its email column
        if info.context.auth_required and _viewer(info) != int(self.id):
            raise UserInputError("email is visible to its owner only", code="FORBIDDEN")
        return str(row.email)

    @field("This user's posts, oldest first.")
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        key = page_key(self, info, limit, offset)
        return await info.context.loaders.posts_of_user.load(key)  # type: ignore[no-any-return]


@strawberry.type
class Post:
    """A post, written by one user."""

    id: strawberry.ID
    title: str
    body: str
    view_count: int = strawberry.field(
        description="Views recorded with recordView (each answered once written in bulk)."
    )
    created_at: datetime
    author_id: strawberry.Private[int]
    # A foreign key holds the author: never null. No await when the loader holds it.
    author: User = loader_field(Loaders.user, key="author_id")

    @field("Comments on this post, oldest first.")
    async def comments(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Comment]:
        key = page_key(self, info, limit, offset)
        return await info.context.loaders.comments_of_post.load(key)  # type: ignore[no-any-return]

    @field("Tags of this post, by name.")
    async def tags(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Tag]:
        key = page_key(self, info, limit, offset)
        return await info.context.loaders.tags_of_post.load(key)  # type: ignore[no-any-return]


@strawberry.type
class Comment:
    """A comment by one user on one post."""

    id: strawberry.ID
    body: str
    created_at: datetime
    author_id: strawberry.Private[int]
    post_id: strawberry.Private[int]
    author: User = loader_field(Loaders.user, key="author_id")
    post: Post = loader_field(Loaders.post, key="post_id")


@strawberry.type
class Tag:
    """A label that any number of posts carry."""

    id: strawberry.ID
    name: str

    @field("Posts carrying this tag, oldest first.")
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        key = page_key(self, info, limit, offset)
        return await info.context.loaders.posts_of_tag.load(key)  # type: ignore[no-any-return]


@strawberry.type
class RecordViewPayload:
    """A view written: the bulk UPDATE holding it committed before this answer."""

    post_id: strawberry.ID
    accepted: bool


async def _page(info: Ctx, model: type[models.Base], limit: int, offset: int) -> list[Any]:
    limit, offset = page_of(info, limit, offset)
    async with info.context.sessions.session() as session:
        stmt = select(model).order_by(model.id).limit(limit).offset(offset)  # type: ignore[attr-defined]
        return list((await session.scalars(stmt)).all())


@strawberry.type
class Query:
    """Entry points: pages of users, posts and tags, and single lookups by id."""

    @field("Users by id.")
    async def users(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[User]:
        return await _page(info, models.User, limit, offset)

    @field("Posts by id.")
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        return await _page(info, models.Post, limit, offset)

    @field("Tags by id.")
    async def tags(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Tag]:
        return await _page(info, models.Tag, limit, offset)

    @field("One user, or null.")
    async def user(self, info: Ctx, id: strawberry.ID) -> User | None:
        return await info.context.loaders.user.load(id_of(id, "id"))  # type: ignore[no-any-return]  # an ORM row

    @field("One post, or null.")
    async def post(self, info: Ctx, id: strawberry.ID) -> Post | None:
        return await info.context.loaders.post.load(id_of(id, "id"))  # type: ignore[no-any-return]  # an ORM row


async def _existing_post(info: Ctx, post_id: int) -> models.Post:
    post = await info.context.loaders.post.load(post_id)
    if post is None:
        raise UserInputError(f"post {post_id} does not exist", code="NOT_FOUND")
    return post  # type: ignore[no-any-return]  # an ORM row


async def _existing_user(info: Ctx, user_id: int, argument: str) -> models.User:
    user = await info.context.loaders.user.load(user_id)
    if user is None:
        raise UserInputError(f"{argument}: user {user_id} does not exist", code="NOT_FOUND")
    return user  # type: ignore[no-any-return]  # an ORM row


async def _insert_new(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows``, skipping those a unique key already holds (a concurrent request's)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(table).on_conflict_do_nothing(), rows)


MAX_TAGS_PER_POST = 20
"""Most tag names ``createPost`` accepts; more is refused before any SQL runs."""


def _tag_names(names: Iterable[str]) -> list[str]:
    """The distinct, lower-cased tag names, checked: 1-50 characters, at most 20 of them."""
    wanted = sorted({name.strip().lower() for name in names})
    if len(wanted) > MAX_TAGS_PER_POST:
        raise UserInputError(
            f"tags: at most {MAX_TAGS_PER_POST} tags at once, got {len(wanted)}",
            code="TOO_MANY_TAGS",
        )
    for name in wanted:
        if not name or len(name) > 50:
            raise UserInputError(f"tag names must have 1 to 50 characters, got {excerpt(name)}")
        _check_storable(name, "tags")
    return wanted


async def _tags_named(session: AsyncSession, wanted: list[str]) -> list[int]:
    """The ids of the tags of these checked names (:func:`_tag_names`), created when missing."""
    if not wanted:
        return []
    tags = models.Tag.__table__
    await _insert_new(session, tags, [{"name": name} for name in wanted])  # type: ignore[arg-type]
    found = await session.execute(select(models.Tag.id).where(models.Tag.name.in_(wanted)))
    return sorted(found.scalars())


async def _link_tags(session: AsyncSession, post_id: int, tag_ids: list[int]) -> list[int]:
    """Attach the tags to the post (links that exist stay as they are); return their ids."""
    links = [{"post_id": post_id, "tag_id": tag_id} for tag_id in tag_ids]
    await _insert_new(session, models.post_tags, links)
    return tag_ids


MAX_BODY = 10_000
"""Most characters of a post's or a comment's body."""


def _check_storable(value: str, argument: str) -> None:
    """Refuse what the databases cannot store: NUL (PostgreSQL), lone surrogates (UTF-8)."""
    if "\x00" in value:
        raise UserInputError(f"{argument} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError(f"{argument} must be valid Unicode (no lone surrogates)") from None


def _check_text(value: str, argument: str, maximum: int) -> str:
    value = value.strip()
    if not value or len(value) > maximum:
        raise UserInputError(f"{argument} must have 1 to {maximum} characters")
    _check_storable(value, argument)
    return value


@strawberry.type
class Mutation:
    """Writes. Each one keeps the request's loaders in step with what it wrote."""

    @mutation("Write a post, with up to 20 tags (created when new).")
    async def create_post(
        self,
        info: Ctx,
        author_id: strawberry.ID,
        title: str,
        body: str = "",
        tags: list[str] | None = None,
    ) -> Post:
        author_number = acting_user(info, author_id)
        assert author_number is not None  # authorId is required
        author = await _existing_user(info, author_number, "authorId")
        title = _check_text(title, "title", 200)
        body = _check_text(body, "body", MAX_BODY) if body.strip() else ""
        tag_names = _tag_names(tags or ())
        loaders = info.context.loaders
        async with info.context.sessions.session() as session, session.begin():
            post = models.Post(author_id=author.id, title=title, body=body)
            session.add(post)
            await session.flush()
            tag_ids = await _link_tags(session, post.id, await _tags_named(session, tag_names))
            await session.refresh(post)
        await write_through(loaders.post, post.id, post)
        invalidate(loaders.posts_of_user)  # every cached page: any may now hold the post
        if tag_ids:
            invalidate(loaders.posts_of_tag)
        return post  # type: ignore[return-value]

    @mutation("Change a post's title or body (or both); tags and views stay as they are.")
    async def update_post(
        self,
        info: Ctx,
        id: strawberry.ID,
        title: str | None = None,
        body: str | None = None,
    ) -> Post:
        post_id = id_of(id, "id")
        editor = acting_user(info)  # None: tokens are not checked
        values: dict[str, str] = {}
        if title is not None:
            values["title"] = _check_text(title, "title", 200)
        if body is not None:
            values["body"] = _check_text(body, "body", MAX_BODY) if body.strip() else ""
        if not values:
            raise UserInputError("updatePost needs a title or a body to change")
        async with info.context.sessions.session() as session, session.begin():
            post = await session.get(models.Post, post_id)
            if post is None:
                raise UserInputError(f"post {post_id} does not exist", code="NOT_FOUND")
            if editor is not None and post.author_id != editor:
                raise UserInputError(
                    f"post {post_id} is not yours to change (it is user {post.author_id}'s)",
                    code="FORBIDDEN",
                )
            for name, value in values.items():
                setattr(post, name, value)
            await session.flush()
            await session.refresh(post)
        # Committed: no request that starts after this answer may read the old post,
        # in any process (the shared cache's entry is deleted before we answer).
        await write_through(info.context.loaders.post, post.id, post)
        return post  # type: ignore[no-any-return]  # an ORM row

    @mutation("Rename a user.")
    async def update_user(self, info: Ctx, id: strawberry.ID, name: str) -> User:
        user_id = acting_user(info, id, "id")
        assert user_id is not None  # id is required
        name = _check_text(name, "name", 100)
        async with info.context.sessions.session() as session, session.begin():
            user = await session.get(models.User, user_id)
            if user is None:
                raise UserInputError(f"user {user_id} does not exist", code="NOT_FOUND")
            user.name = name
            await session.flush()
            await session.refresh(user)
        await write_through(info.context.loaders.user, user.id, user)
        return user  # type: ignore[no-any-return]  # an ORM row

    @mutation("Comment on a post.")
    async def add_comment(
        self, info: Ctx, post_id: strawberry.ID, author_id: strawberry.ID, body: str
    ) -> Comment:
        author_number = acting_user(info, author_id)
        assert author_number is not None  # authorId is required
        post = await _existing_post(info, id_of(post_id, "postId"))
        author = await _existing_user(info, author_number, "authorId")
        body = _check_text(body, "body", MAX_BODY)
        async with info.context.sessions.session() as session, session.begin():
            comment = models.Comment(post_id=post.id, author_id=author.id, body=body)
            session.add(comment)
            await session.flush()
            await session.refresh(comment)
        invalidate(info.context.loaders.comments_of_post)
        return comment  # type: ignore[return-value]

    @mutation("Put a tag (created when new) on a post.")
    async def tag_post(self, info: Ctx, post_id: strawberry.ID, tag: str) -> Post:
        acting_user(info)
        post = await _existing_post(info, id_of(post_id, "postId"))
        tag_names = _tag_names([tag])
        async with info.context.sessions.session() as session, session.begin():
            tag_ids = await _link_tags(session, post.id, await _tags_named(session, tag_names))
        if tag_ids:
            invalidate(info.context.loaders.tags_of_post)
            invalidate(info.context.loaders.posts_of_tag)
        return post  # type: ignore[return-value]

    @mutation(
        "Count one view of a post. Views from all requests are written together in bulk; "
        "the answer comes once this view's UPDATE committed (within the flush window). "
        "Null with an error when the view was not written: VIEW_QUEUE_FULL, SHUTTING_DOWN, "
        "VIEW_NOT_WRITTEN; each recordView of a request answers for itself."
    )
    async def record_view(self, info: Ctx, post_id: strawberry.ID) -> RecordViewPayload | None:
        acting_user(info)
        post = await _existing_post(info, id_of(post_id, "postId"))
        try:
            written = info.context.views.record(post.id)
        except ViewQueueFullError as exc:
            raise UserInputError(str(exc), code="VIEW_QUEUE_FULL") from None
        except ViewsClosedError as exc:
            raise UserInputError(str(exc), code="SHUTTING_DOWN") from None
        try:
            # shielded: a client that leaves does not take back a view the queue accepted
            await asyncio.shield(written)
        except Exception:
            raise UserInputError(
                f"the view of post {post.id} was not written; retry", code="VIEW_NOT_WRITTEN"
            ) from None
        return RecordViewPayload(post_id=strawberry.ID(str(post.id)), accepted=True)
