"""gqlbatch.strawberry through ``schema.execute``: registry, extension, mutations, bridge."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import strawberry
from aiodataloader import DataLoader as AioDataLoader
from strawberry.dataloader import DataLoader as StrawberryDataLoader
from strawberry.types import ExecutionResult

import gqlbatch
import gqlbatch.strawberry as gs
from gqlbatch import BatchError, KeyedLoader, LoaderClosedError, WrongEventLoopError
from gqlbatch.strawberry import (
    BatchLengthError,
    Context,
    LoaderExtension,
    LoaderRegistry,
    RegistryClosedError,
    from_index_batch,
    invalidate,
    loader,
    write_through,
)
from tests._harness import each_is

# --------------------------------------------------------------------------- a tiny data layer


@dataclass
class UserRow:
    id: int
    name: str
    team_id: int


USERS = {i: UserRow(i, f"user{i}", i % 3) for i in range(1, 201)}
CALLS: list[tuple[str, list[Any]]] = []


async def fetch_users(ids: list[int]) -> dict[int, UserRow]:
    CALLS.append(("user", sorted(ids)))
    await asyncio.sleep(0)
    return {i: USERS[i] for i in ids if i in USERS}


async def fetch_team_members(team_ids: list[int]) -> list[UserRow]:
    CALLS.append(("members", sorted(team_ids)))
    return [u for u in USERS.values() if u.team_id in team_ids]


async def fetch_scores(ids: list[int]) -> dict[int, int | BaseException]:
    CALLS.append(("score", sorted(ids)))
    return {i: (ValueError(f"no score for user {i}") if i % 10 == 0 else i * 10) for i in ids}


class Loaders(LoaderRegistry):
    user = loader(fetch_users, key_type=int)
    members = loader(fetch_team_members, key_of=lambda row: row.team_id, many=True)
    score = loader(fetch_scores, missing="error")


@pytest.fixture(autouse=True)
def _reset_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def batches(name: str) -> list[list[Any]]:
    return [keys for loader_name, keys in CALLS if loader_name == name]


# --------------------------------------------------------------------------- the schema

Info = strawberry.Info[Context[Loaders], None]


@strawberry.type
class User:
    id: int
    name: str
    team_id: strawberry.Private[int]

    @staticmethod
    def of(row: UserRow) -> User:
        return User(id=row.id, name=row.name, team_id=row.team_id)

    @strawberry.field
    async def score(self, info: Info) -> int:
        return await info.context.loaders.score.load(self.id)

    @strawberry.field
    async def teammates(self, info: Info) -> list[User]:
        rows = await info.context.loaders.members.load(self.team_id)
        return [User.of(r) for r in rows[:2]]


@strawberry.type
class Item:
    id: int
    user_id: int
    checks: int

    @strawberry.field
    async def user(self, info: Info) -> User | None:
        for _ in range(self.checks):  # an async permission check, or three
            await asyncio.sleep(0)
        row = await info.context.loaders.user.load(self.user_id)
        return User.of(row) if row else None


@strawberry.type
class Branch:
    user_id: int

    @strawberry.field
    async def user(self, info: Info) -> User | None:
        row = await info.context.loaders.user.load(self.user_id)
        return User.of(row) if row else None

    @strawberry.field
    async def boom(self) -> str:
        raise RuntimeError("boom")


@strawberry.type
class Query:
    @strawberry.field
    async def user(self, info: Info, id: int) -> User | None:
        row = await info.context.loaders.user.load(id)
        return User.of(row) if row else None

    @strawberry.field
    def items(self, count: int = 100) -> list[Item]:
        return [Item(id=i, user_id=i, checks=i % 4) for i in range(1, count + 1)]

    @strawberry.field
    def branch(self, user_id: int) -> Branch | None:
        return Branch(user_id=user_id)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def rename(self, info: Info, id: int, name: str) -> User:
        loaders = info.context.loaders
        row = await loaders.user.load(id)
        assert row is not None
        renamed = UserRow(row.id, name, row.team_id)  # the write
        write_through(loaders.user, id, renamed)
        return User.of(renamed)

    @strawberry.mutation
    async def rename_without_priming(self, info: Info, id: int, name: str) -> User | None:
        row = await info.context.loaders.user.load(id)
        assert row is not None
        USERS[id] = UserRow(row.id, name, row.team_id)
        invalidate(info.context.loaders.user, id)
        fresh = await info.context.loaders.user.load(id)
        return User.of(fresh) if fresh else None

    @strawberry.mutation
    async def forget_team(self, info: Info, team_id: int) -> bool:
        invalidate(info.context.loaders.members, team_id)  # creates the loader, loads nothing
        return True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def watch(self, info: Info, id: int, times: int = 3) -> AsyncGenerator[User, None]:
        for _ in range(times):
            row = await info.context.loaders.user.load(id)
            assert row is not None
            yield User.of(row)


schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=[LoaderExtension])
stats_schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[LoaderExtension.with_statistics()],
)


def new_context() -> Context[Loaders]:
    return Context(loaders=Loaders())


# --------------------------------------------------------------------------- declaring loaders


def test_a_declared_loader_is_a_keyed_loader_named_after_its_attribute() -> None:
    loaders = Loaders()
    assert isinstance(loaders.user, KeyedLoader)
    assert loaders.user.name == "user"
    assert loaders.user is loaders.user
    assert isinstance(Loaders.user, gs.LoaderSpec)
    assert Loaders.declared() == ("user", "members", "score")


def test_loaders_are_created_lazily_one_per_attribute_touched() -> None:
    namespace: dict[str, Any] = {f"l{i}": loader(fetch_users) for i in range(50)}
    Fifty = type("Fifty", (LoaderRegistry,), namespace)
    registry = Fifty()
    assert registry.created() == {}
    _ = registry.l3, registry.l41, registry.l3
    assert sorted(registry.created()) == ["l3", "l41"]


def test_each_registry_instance_has_its_own_loaders() -> None:
    first, second = Loaders(), Loaders()
    assert first.user is not second.user


def test_subclasses_inherit_and_may_override_or_remove_declarations() -> None:
    async def other(ids: list[int]) -> dict[int, int]:
        return {}

    class More(Loaders):
        user = loader(other, name="other_user")  # type: ignore[assignment]  # another value type
        score = None  # type: ignore[assignment]
        extra = loader(other)

    assert More.declared() == ("user", "members", "extra")
    assert More().user.name == "other_user"


def test_options_are_validated_when_the_class_is_defined() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be >= 1, got 0"):
        loader(fetch_users, max_batch_size=0)
    with pytest.raises(TypeError, match="needs a batch function or a fetcher, got 3"):
        loader(3)  # type: ignore[call-overload]


def test_a_loader_cannot_shadow_a_registry_method() -> None:
    with pytest.raises(TypeError, match="a loader cannot be named 'close'"):
        type("Bad", (LoaderRegistry,), {"close": loader(fetch_users)})


def test_declared_loaders_cannot_be_assigned() -> None:
    with pytest.raises(AttributeError, match=r"Loaders.user is a declared loader"):
        Loaders().user = None


def test_get_names_unknown_loaders() -> None:
    loaders = Loaders()
    assert loaders.get("user") is loaders.user
    with pytest.raises(KeyError, match="declares no loader 'nope'; it declares 'user'"):
        loaders.get("nope")


class FakeFetcher:
    """Structurally a fetcher: bind(sessions) and loader_options."""

    loader_options: Mapping[str, Any] = {"key_type": int, "name": "User.id", "missing": "error"}

    def __init__(self, sessions: Any = None) -> None:
        self.sessions = sessions

    def bind(self, sessions: Any) -> FakeFetcher:
        return FakeFetcher(sessions)

    async def __call__(self, keys: list[int]) -> dict[int, str]:
        return {k: f"{k} via {self.sessions}" for k in keys}


async def test_fetchers_are_bound_to_the_registrys_sessions_with_their_default_options() -> None:
    class WithFetcher(LoaderRegistry):
        user = loader(FakeFetcher())
        loose = loader(FakeFetcher(), missing="none")

    registry = WithFetcher(sessions="sessions-of-this-request")
    assert await registry.user.load(1) == "1 via sessions-of-this-request"
    assert registry.user.name == "user"  # the attribute wins over the fetcher's default name
    with pytest.raises(TypeError, match="expected int"):
        registry.user.load("1")  # type: ignore[arg-type]


async def test_registry_options_reach_every_loader_unless_its_declaration_says_otherwise() -> None:
    class Tuned(LoaderRegistry):
        user = loader(FakeFetcher(), max_batch_size=5)
        other = loader(fetch_users)

    registry = Tuned(
        sessions="s", options={"max_batch_size": 50, "batch_timeout_ms": 250, "error_mode": "retry"}
    )
    assert registry.user.options.max_batch_size == 5  # the declaration wins
    assert registry.user.options.batch_timeout_ms == 250
    assert registry.other.options.max_batch_size == 50
    assert registry.other.options.error_mode == gqlbatch.ErrorMode.RETRY
    assert Tuned(sessions="s").other.options.batch_timeout_ms is None  # per instance
    assert await registry.user.load(1) == "1 via s"


def test_a_misspelt_loader_option_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(
        TypeError, match="loader\\(\\) got an unexpected keyword argument 'max_batch_sise'"
    ):
        loader(fetch_users, max_batch_sise=10)  # type: ignore[call-overload]


def test_registry_options_are_checked_when_the_registry_is_made() -> None:
    with pytest.raises(TypeError, match=r"Loaders\(options=...\): 'key_type', 'name' cannot be"):
        Loaders(options={"name": "x", "key_type": int})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_size"):
        Loaders(options={"max_batch_size": 0})


def test_registry_options_checked_once_are_still_refused_every_time_they_are_bad() -> None:
    good: gqlbatch.EngineOptions = {"max_batch_size": 50}
    for _ in range(3):  # the same options, as a server's functools.partial passes them
        assert Loaders(options=good).user.options.max_batch_size == 50
        with pytest.raises(ValueError, match="max_batch_size"):
            Loaders(options={"max_batch_size": 0})
    with pytest.raises(ValueError, match="max_batch_size"):
        Loaders(options={"max_batch_size": -1, "retry": gqlbatch.RetryPolicy()})
    with pytest.raises(TypeError, match="max_batch_size"):  # unhashable: checked, not kept
        Loaders(options={"max_batch_size": [50]})  # type: ignore[arg-type]  # the bad value tested


async def test_a_closed_registry_refuses_to_hand_out_loaders() -> None:
    loaders = Loaders()
    pending = loaders.user.load(1)
    loaders.close()
    with pytest.raises(LoaderClosedError):
        await pending
    with pytest.raises(
        RegistryClosedError,
        match=r"Loaders is closed \(its request has ended\) and cannot hand out loader 'user'",
    ):
        _ = loaders.user


async def test_aclose_lets_dispatched_batches_finish() -> None:
    async with Loaders() as loaders:
        first = loaders.user.load(1)
        await asyncio.sleep(0)
    row = await first
    assert row is not None
    assert row.name == "user1"
    assert loaders.closed


# --------------------------------------------------------------------------- through schema.execute


async def test_each_loader_dispatches_one_batch_per_query_level() -> None:
    query = "{ items { user { name score teammates { name } } } }"
    result = await schema.execute(query, context_value=new_context())
    assert result.errors is not None  # every tenth score fails, see below
    assert batches("user") == [list(range(1, 101))]
    assert batches("score") == [list(range(1, 101))]
    assert batches("members") == [[0, 1, 2]]
    assert result.data is not None
    users = [item["user"] for item in result.data["items"]]
    assert users[0] == {
        "name": "user1",
        "score": 10,
        "teammates": [{"name": "user3"}] * 0 + users[0]["teammates"],
    }
    assert users[9] is None  # its non-null score failed


async def test_loader_errors_become_graphql_errors_on_their_own_path() -> None:
    query = "{ items(count: 20) { user { score } } }"
    result = await schema.execute(query, context_value=new_context())
    assert result.errors is not None
    failed = sorted((e.path, e.message) for e in result.errors)
    assert failed == [
        (["items", 9, "user", "score"], "no score for user 10"),
        (["items", 19, "user", "score"], "no score for user 20"),
    ]
    assert result.data is not None
    users = [item["user"] for item in result.data["items"]]
    assert users[9] is None and users[19] is None  # score is non-null, so user is nulled
    assert users[0] == {"score": 10}


async def test_a_whole_batch_failure_reaches_each_field_with_its_own_key() -> None:
    async def broken(ids: list[int]) -> dict[int, int]:
        raise ConnectionError("database down")

    class Broken(LoaderRegistry):
        user = loader(broken)

    @strawberry.type
    class Q:
        @strawberry.field
        async def a(self, info: strawberry.Info[Context[Broken], None]) -> int | None:
            return await info.context.loaders.user.load(1)

        @strawberry.field
        async def b(self, info: strawberry.Info[Context[Broken], None]) -> int | None:
            return await info.context.loaders.user.load(2)

        @strawberry.field
        def c(self) -> str:
            return "fine"

    result = await strawberry.Schema(Q, extensions=[LoaderExtension]).execute(
        "{ a b c }", context_value=Context(loaders=Broken())
    )
    assert result.data == {"a": None, "b": None, "c": "fine"}
    assert result.errors is not None
    by_path = {e.path[0]: e for e in result.errors if e.path}
    assert "for key 1: ConnectionError: database down" in by_path["a"].message
    assert "for key 2: ConnectionError: database down" in by_path["b"].message
    assert isinstance(by_path["a"].original_error, BatchError)


async def test_the_extension_closes_every_loader_when_the_operation_ends() -> None:
    context = new_context()
    seen: list[KeyedLoader[Any, Any]] = []

    @strawberry.type
    class Q:
        @strawberry.field
        async def leak(self, info: strawberry.Info[Context[Loaders], None]) -> int:
            seen.append(info.context.loaders.user)
            info.context.loaders.user.load(150)  # never awaited: pending at the end
            return 1

    await strawberry.Schema(Q, extensions=[LoaderExtension]).execute("{ leak }", None, context)
    assert context.loaders.created() == {}
    with pytest.raises(LoaderClosedError):
        seen[0].load(1)
    # the registry itself lives on (one request may run several operations),
    # but hands the next operation a fresh loader, never the previous one
    assert context.loaders.user is not seen[0]


async def test_operations_sharing_a_context_start_with_empty_caches() -> None:
    context = new_context()
    await schema.execute("{ user(id: 7) { name } }", context_value=context)
    await schema.execute("{ user(id: 7) { name } }", context_value=context)
    assert batches("user") == [[7], [7]]


async def test_concurrent_operations_on_one_context_share_loaders_until_the_last_ends() -> None:
    context = new_context()
    results = await asyncio.gather(
        schema.execute("{ user(id: 7) { name } }", context_value=context),
        schema.execute("{ user(id: 8) { name } }", context_value=context),
    )
    assert [r.data for r in results] == [{"user": {"name": "user7"}}, {"user": {"name": "user8"}}]
    assert batches("user") == [[7, 8]]
    assert context.loaders.created() == {}


async def test_statistics_are_added_to_the_response_extensions_when_enabled() -> None:
    query = "{ items(count: 30) { user { name teammates { name } } } a: user(id: 1) { name } }"
    result = await stats_schema.execute(query, context_value=new_context())
    assert result.errors is None
    assert result.extensions == {
        "gqlbatch": {
            "loaders": {
                "user": {
                    "loads": 31,
                    "cache_hits": 0,  # user 1 twice in one batch: deduplicated, not a hit
                    "batches": 1,
                    "largest_batch": 30,
                    "keys_dispatched": 30,
                    "failed_batches": 0,
                },
                "members": {
                    "loads": 30,
                    "cache_hits": 0,
                    "batches": 1,
                    "largest_batch": 3,
                    "keys_dispatched": 3,
                    "failed_batches": 0,
                },
            }
        }
    }
    plain = await schema.execute(query, context_value=new_context())
    assert plain.extensions == {}


async def test_statistics_leave_out_loaders_the_operation_did_not_load_from() -> None:
    query = 'mutation { forgetTeam(teamId: 1) a: rename(id: 2, name: "b") { name } }'
    result = await stats_schema.execute(query, context_value=new_context())
    assert result.errors is None
    assert result.extensions is not None
    assert list(result.extensions["gqlbatch"]["loaders"]) == ["user"]  # not "members"


async def test_statistics_can_be_decided_per_operation() -> None:
    debug = strawberry.Schema(
        Query,
        extensions=[
            LoaderExtension.with_statistics(lambda ec: ec.operation_name == "Debug", key="batching")
        ],
    )
    query = "query Debug { user(id: 1) { name } } query Quiet { user(id: 1) { name } }"
    on = await debug.execute(query, context_value=new_context(), operation_name="Debug")
    off = await debug.execute(query, context_value=new_context(), operation_name="Quiet")
    assert on.extensions is not None
    assert on.extensions["batching"]["loaders"]["user"]["batches"] == 1
    assert off.extensions == {}


class CountingScope:
    def __init__(self) -> None:
        self.count = 0


class FakeStatementCounter:
    """Counts each batch-function call as one statement, in every open scope."""

    def __init__(self) -> None:
        self.open: list[CountingScope] = []

    @contextmanager
    def scope(self) -> Iterator[CountingScope]:
        scope = CountingScope()
        self.open.append(scope)
        try:
            yield scope
        finally:
            self.open.remove(scope)

    def statement(self) -> None:
        for scope in self.open:
            scope.count += 1


async def test_statistics_report_sql_statements_from_the_contexts_counter() -> None:
    counter = FakeStatementCounter()

    async def counted_users(ids: list[int]) -> dict[int, UserRow]:
        counter.statement()
        return await fetch_users(ids)

    class Counted(LoaderRegistry):
        user = loader(counted_users)

    @strawberry.type
    class Q:
        @strawberry.field
        async def names(self, info: strawberry.Info[Context[Counted], None]) -> list[str]:
            rows = await info.context.loaders.user.load_many([1, 2, 3])
            counter.statement()  # a statement outside any loader
            return [r.name for r in rows if r]

    counted = strawberry.Schema(Q, extensions=[LoaderExtension.with_statistics()])
    result = await counted.execute(
        "{ names }", context_value=Context(loaders=Counted(statements=counter))
    )
    assert result.data == {"names": ["user1", "user2", "user3"]}
    assert result.extensions is not None
    report = result.extensions["gqlbatch"]
    assert report["loaders"]["user"]["sql_statements"] == 1
    assert report["sql_statements"] == 2


def test_extensions_are_classes_or_factories_never_shared_instances() -> None:
    factory = LoaderExtension.with_statistics()
    assert factory() is not factory()
    with pytest.raises(TypeError, match="statistics must be a bool or a callable"):
        LoaderExtension.with_statistics("yes")  # type: ignore[arg-type]


async def test_a_dict_context_with_loaders_works_too() -> None:
    @strawberry.type
    class Q:
        @strawberry.field
        async def name(self, info: strawberry.Info[dict[str, Any], None]) -> str:
            row = await info.context["loaders"].user.load(5)
            return str(row.name)

    context = {"loaders": Loaders()}
    result = await strawberry.Schema(Q, extensions=[LoaderExtension]).execute(
        "{ name }", context_value=context
    )
    assert result.data == {"name": "user5"}
    assert context["loaders"].created() == {}


# --------------------------------------------------------------------------- mutations


async def test_write_through_makes_the_mutation_response_show_the_new_value() -> None:
    query = (
        'mutation { rename(id: 3, name: "ada") { name } again: rename(id: 3, name: "bo") { name } }'
    )
    result = await schema.execute(query, context_value=new_context())
    assert result.errors is None
    assert result.data == {"rename": {"name": "ada"}, "again": {"name": "bo"}}
    assert USERS[3].name == "user3"  # the fake write went nowhere, the cache said otherwise


async def test_invalidate_makes_the_next_load_read_again() -> None:
    try:
        query = 'mutation { renameWithoutPriming(id: 4, name: "grace") { name } }'
        result = await schema.execute(query, context_value=new_context())
        assert result.data == {"renameWithoutPriming": {"name": "grace"}}
        assert batches("user") == [[4], [4]]
    finally:
        USERS[4] = UserRow(4, "user4", 1)


async def test_invalidate_without_keys_drops_the_whole_cache() -> None:
    loaders = Loaders()
    await loaders.user.load_many([1, 2])
    invalidate(loaders.user)
    await loaders.user.load_many([1, 2])
    assert batches("user") == [[1, 2], [1, 2]]


# --------------------------------------------------------------------------- cancellation


CANCEL_QUERY = (
    "{ left: branch(userId: 1) { user { name } boom } right: branch(userId: 1) { user { name } } }"
)


async def test_a_cancelled_branch_never_takes_down_another_loading_the_same_key() -> None:
    # `boom` is non-null and fails, so graphql-core 3.3 nulls `left` and cancels
    # its sibling `user`, which is waiting for key 1 -- as is `right`.
    nullable = strawberry.Schema(Query, extensions=[LoaderExtension])
    result = await nullable.execute(CANCEL_QUERY, context_value=new_context())
    assert result.data == {"left": None, "right": {"user": {"name": "user1"}}}
    assert result.errors is not None
    assert [e.message for e in result.errors] == ["boom"]


async def load_users_by_index(ids: list[int]) -> list[UserRow | None]:
    await asyncio.sleep(0)
    return [USERS.get(i) for i in ids]


@strawberry.type
class SUser:
    name: str


@strawberry.type
class SBranch:
    user_id: int

    @strawberry.field
    async def user(self, info: strawberry.Info[dict[str, Any], None]) -> SUser | None:
        row = await info.context["users"].load(self.user_id)
        return SUser(name=row.name) if row else None

    @strawberry.field
    async def boom(self) -> str:
        raise RuntimeError("boom")


@strawberry.type
class SQuery:
    @strawberry.field
    def branch(self, user_id: int) -> SBranch | None:
        return SBranch(user_id=user_id)


async def test_strawberrys_own_dataloader_lets_the_cancellation_spread() -> None:
    # The same query with Strawberry's DataLoader: the cancelled branch cancels the
    # future it shares with the other branch, and schema.execute raises.
    with pytest.raises(asyncio.CancelledError):
        await strawberry.Schema(SQuery).execute(
            CANCEL_QUERY, context_value={"users": StrawberryDataLoader(load_users_by_index)}
        )


# --------------------------------------------------------------------------- event loops


async def test_a_loader_used_from_another_event_loop_raises_a_clear_error() -> None:
    loaders = Loaders()
    user = loaders.user
    await user.load(1)
    errors: list[BaseException] = []

    def elsewhere() -> None:
        async def use() -> None:
            try:
                await user.load(2)
            except BaseException as exc:
                errors.append(exc)
            try:
                _ = loaders.user
            except BaseException as exc:
                errors.append(exc)
            try:
                _ = loaders.members  # not created yet, but its siblings live elsewhere
            except BaseException as exc:
                errors.append(exc)

        asyncio.run(use())

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(timeout=30)
    assert [type(e) for e in errors] == [WrongEventLoopError] * 3
    assert "loader 'user' is bound to another event loop" in str(errors[0])
    assert "loader 'user' is bound to another event loop" in str(errors[1])


def test_a_registry_reused_on_a_later_event_loop_of_the_same_thread_refuses_at_access() -> None:
    loaders = Loaders()

    async def first() -> None:
        await loaders.user.load(1)

    async def later() -> None:
        _ = loaders.user

    asyncio.run(first())
    with pytest.raises(WrongEventLoopError, match="loader 'user' is bound to another event loop"):
        asyncio.run(later())


# --------------------------------------------------------------------------- the bridge


async def test_an_index_based_batch_function_backs_a_keyed_loader() -> None:
    async def load_names(ids: list[int]) -> list[str | BaseException]:
        return [f"n{i}" if i != 2 else KeyError(i) for i in ids]

    names = KeyedLoader(from_index_batch(load_names), name="names")
    assert await names.load_many([3, 1, 3], return_exceptions=True) == ["n3", "n1", "n3"]
    with pytest.raises(KeyError):
        await names.load(2)


async def test_an_aiodataloader_batch_function_can_be_bridged() -> None:
    class Names(AioDataLoader[int, str]):
        async def batch_load_fn(self, keys: list[int]) -> list[str]:
            return [f"n{k}" for k in keys]

    class Bridged(LoaderRegistry):
        names = loader(from_index_batch(Names().batch_load_fn))

    assert await Bridged().names.load_many([1, 2]) == ["n1", "n2"]


async def test_a_list_of_the_wrong_length_fails_with_an_error_naming_the_loader() -> None:
    async def short(ids: list[int]) -> list[str]:
        return ["only one"]

    class Short(LoaderRegistry):
        names = loader(from_index_batch(short, name="names"))

    registry = Short()
    results = await registry.names.load_many([1, 2, 3], return_exceptions=True)
    error = each_is(BatchError, results)[0]
    assert "loader 'names'" in str(error)
    assert isinstance(error.__cause__, BatchLengthError)
    assert str(error.__cause__) == (
        "index-based batch function names returned 1 value for 3 keys; it must return "
        "exactly one value (or exception) per key, in the order of the keys"
    )


async def test_a_non_list_result_is_rejected_by_the_bridge() -> None:
    async def wrong(ids: list[int]) -> Any:
        return {i: i for i in ids}

    with pytest.raises(TypeError, match="must return a list aligned with its keys, got dict"):
        await from_index_batch(wrong)([1])


# --------------------------------------------------------------------------- the surface


def test_all_is_sorted_and_complete() -> None:
    assert gs.__all__ == sorted(gs.__all__)
    for name in gs.__all__:
        assert getattr(gs, name).__doc__, name


def test_importing_the_integration_needs_neither_sqlalchemy_nor_starlette() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gqlbatch.strawberry; "
        "assert 'sqlalchemy' not in sys.modules and 'gqlbatch.sqlalchemy' not in sys.modules; "
        "assert 'gqlbatch.strawberry.asgi' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


TYPED = """
import strawberry
from gqlbatch.strawberry import Context, LoaderRegistry, from_index_batch, loader

async def fetch(ids: list[int]) -> dict[int, str]:
    return {}

async def rows(ids: list[int]) -> list[bytes]:
    return []

async def index(ids: list[int]) -> list[float]:
    return []

class Loaders(LoaderRegistry):
    name = loader(fetch, key_type=int)
    strict = loader(fetch, missing="error")
    grouped = loader(rows, key_of=len, many=True)
    legacy = loader(from_index_batch(index))

def resolver(info: strawberry.Info[Context[Loaders], None]) -> None:
    reveal_type(info.context.loaders.name)
    reveal_type(info.context.loaders.strict)
    reveal_type(info.context.loaders.grouped)
    reveal_type(info.context.loaders.legacy)
    info.context.loaders.name.load("1")
"""


def test_mypy_knows_the_type_of_each_declared_loader(tmp_path: Path) -> None:
    import subprocess
    import sys

    source = tmp_path / "typed.py"
    source.write_text(TYPED)
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(source)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=Path(__file__).resolve().parents[2],
    )
    revealed = [
        line.split("Revealed type is ")[1] for line in run.stdout.splitlines() if "Revealed" in line
    ]
    assert revealed == [
        '"gqlbatch._loader.KeyedLoader[int, str | None]"',
        '"gqlbatch._loader.KeyedLoader[int, str]"',
        '"gqlbatch._loader.KeyedLoader[int, list[bytes]]"',
        '"gqlbatch._loader.KeyedLoader[int, float | None]"',
    ], run.stdout + run.stderr
    assert 'Argument 1 to "load" of "KeyedLoader" has incompatible type "str"' in run.stdout


async def test_an_operation_on_a_closed_registry_fails_with_a_clear_error() -> None:
    context = new_context()
    await context.aclose()
    result = await schema.execute("{ user(id: 1) { name } }", context_value=context)
    assert result.errors is not None
    assert [e.message for e in result.errors] == [
        "Loaders is closed (its request has ended) and cannot serve another operation; "
        "create one Loaders per request"
    ]


async def test_each_subscription_event_resolves_with_fresh_loaders_and_its_own_statistics() -> None:
    context = new_context()
    events = await stats_schema.subscribe(
        "subscription { watch(id: 9) { name score } }", context_value=context
    )
    received = []
    assert not isinstance(events, ExecutionResult)
    async for event in events:
        assert event.errors is None
        assert event.extensions is not None
        received.append((event.data, event.extensions["gqlbatch"]["loaders"]["user"]["loads"]))
    assert received == [({"watch": {"name": "user9", "score": 90}}, 1)] * 3
    assert batches("user") == [[9], [9], [9]]  # nothing cached from one event to the next
    assert batches("score") == [[9], [9], [9]]
    assert context.loaders.created() == {}


# --------------------------------------------------------------------------- misuse


class UnboundFetcher(FakeFetcher):
    def __repr__(self) -> str:
        return "<fetcher User.id unbound>"


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: Loaders(statements=3), TypeError, "statements must have a scope"),  # type: ignore[arg-type]
        (lambda: Context(loaders=object()), TypeError, "loaders must be a LoaderRegistry"),  # type: ignore[type-var]
        (lambda: from_index_batch(3), TypeError, "batch_fn must be callable, got 3"),  # type: ignore[arg-type]
        (
            lambda: gs.context_getter(Loaders, sessions_factory=3),  # type: ignore[arg-type]
            TypeError,
            "sessions_factory must be callable, got 3",
        ),
        (
            lambda: gs.GraphQL(schema, registry=3),  # type: ignore[arg-type]
            TypeError,
            "registry must be a LoaderRegistry subclass, got 3",
        ),
        (
            lambda: type("L", (LoaderRegistry,), {"user": loader(UnboundFetcher())})().user,
            TypeError,
            r"L.user reads through <fetcher User.id unbound>, which needs a session source: "
            r"create the registry with L\(sessions=...\)",
        ),
    ],
)
def test_misuse_raises_errors_naming_what_is_wrong(
    build: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()


def test_reprs_say_what_and_how_much() -> None:
    loaders = Loaders()
    _ = loaders.user
    assert repr(loaders) == "<Loaders 1/3 created>"
    assert repr(Loaders.user).startswith("<loader Loaders.user of <function fetch_users")
    loaders.close()
    assert repr(loaders) == "<Loaders closed>"


async def test_the_extension_leaves_contexts_without_a_registry_alone() -> None:
    @strawberry.type
    class Q:
        @strawberry.field
        def hello(self) -> str:
            return "world"

    plain = strawberry.Schema(Q, extensions=[LoaderExtension.with_statistics()])
    result = await plain.execute("{ hello }", context_value={"user": "ada"})
    assert result.data == {"hello": "world"}
    assert result.extensions == {}


async def test_from_index_batch_works_with_unhashable_keys_and_cache_key() -> None:
    async def load_names(filters: list[dict[str, int]]) -> list[str]:
        return [f"user {f['id']}" for f in filters]

    names = KeyedLoader(from_index_batch(load_names), cache_key=lambda f: f["id"])
    assert await names.load_many([{"id": 1}, {"id": 2}, {"id": 1}]) == [
        "user 1",
        "user 2",
        "user 1",
    ]


async def test_write_through_on_a_waiting_key_reaches_later_loads() -> None:
    async def load_titles(ids: list[int]) -> dict[int, str]:
        return {i: "old" for i in ids}

    titles = KeyedLoader(load_titles)
    waiting = titles.load(1)
    write_through(titles, 1, "new")
    assert await waiting == "old"  # fetched for a caller that asked before the write
    assert await titles.load(1) == "new"


async def test_invalidate_on_a_waiting_key_makes_later_loads_fetch_again() -> None:
    calls: list[list[int]] = []

    async def load_titles(ids: list[int]) -> dict[int, str]:
        calls.append(ids)
        return {i: f"t{len(calls)}" for i in ids}

    titles = KeyedLoader(load_titles)
    waiting = titles.load(1)
    await asyncio.sleep(0)
    invalidate(titles, 1)
    assert await waiting == "t1"
    assert await titles.load(1) == "t2"
