"""Property tests of KeyedLoader: whatever the keys, options, results and cancellations,
every caller gets exactly its own key's outcome, nothing hangs, nothing is reported.

Each example builds a loader with random options, a batch function whose answer for
each key is fixed by the example (a value, a miss, a per-key exception, or "poison":
any call holding the key raises), and a crowd of callers that await a random number
of times (or a random virtual time) before ``load``/``load_many``, some of which are
cancelled at random points. The batch function records every call, so the outcome of
each caller is checked against what the batch function actually did, and the
statistics against the record.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gqlbatch import BatchError, KeyedLoader, MissingKeyError, RetryPolicy
from tests._harness import bounded
from tests._loop import run_virtual

# -- the example's world --------------------------------------------------------------

VALUE, MISSING, ERROR, POISON = "value", "missing", "error", "poison"


@dataclass(frozen=True)
class Row:
    """A row of the rows forms (``key_of``): ``key`` as the batch function spells it."""

    key: Any
    ident: int
    n: int


@dataclass
class Caller:
    keys: list[int]  # key idents; one for ``load``
    spelling: list[bool]  # with cache_key: upper-case spelling of each key
    how: str  # "load", "many" (load_many), "many_exc" (return_exceptions=True)
    awaits: int  # sleep(0) before loading
    delay_ms: int  # then a virtual sleep before loading
    cancel_at: int | None  # cancel the caller's task after this many iterations


@dataclass
class World:
    form: str  # "mapping", "rows" (key_of) or "many" (key_of, many=True)
    fate: dict[int, str]
    callers: list[Caller]
    cache: bool
    cache_key: bool  # keys are strings "k3"/"K3" and cache_key=str.lower
    missing: str
    max_batch_size: int | None
    max_wait_ms: int
    max_concurrency: int | None
    shuffle: bool
    extra: bool
    fn_awaits: int
    fn_sleep_ms: int
    rand: random.Random


@dataclass
class Call:
    keys: list[Any]
    idents: list[int]
    raised: BaseException | None = None
    errors: dict[int, BaseException] = field(default_factory=dict)


def rows_of(ident: int) -> int:
    """How many rows a VALUE key has in the ``many`` form."""
    return ident % 3 + 1


@st.composite
def worlds(draw: st.DrawFn) -> World:
    form = draw(st.sampled_from(["mapping", "rows", "many"]))
    n_keys = draw(st.integers(1, 10))
    fates = [VALUE, MISSING, POISON] + ([ERROR] if form == "mapping" else [])
    fate = {
        i: draw(st.sampled_from(fates) if draw(st.integers(0, 3)) == 0 else st.just(VALUE))
        for i in range(n_keys)
    }
    max_wait_ms = draw(st.sampled_from([0, 0, 1, 5]))
    callers = []
    for _ in range(draw(st.integers(1, 14))):
        how = draw(st.sampled_from(["load", "load", "many", "many_exc"]))
        size = 1 if how == "load" else draw(st.integers(0, 4))
        keys = draw(st.lists(st.integers(0, n_keys - 1), min_size=size, max_size=size))
        callers.append(
            Caller(
                keys=keys,
                spelling=draw(st.lists(st.booleans(), min_size=size, max_size=size)),
                how=how,
                awaits=draw(st.integers(0, 3)),
                delay_ms=draw(st.sampled_from([0, 0, 0, 2, 7])),
                cancel_at=draw(st.none() | st.integers(0, 8)),
            )
        )
    return World(
        form=form,
        fate=fate,
        callers=callers,
        cache=draw(st.booleans()),
        cache_key=draw(st.booleans()),
        missing=draw(st.sampled_from(["none", "error"])),
        max_batch_size=draw(st.none() | st.integers(1, 5)),
        max_wait_ms=max_wait_ms,
        max_concurrency=draw(st.none() | st.integers(1, 3)),
        shuffle=draw(st.booleans()),
        extra=draw(st.booleans()),
        fn_awaits=draw(st.integers(0, 2)),
        fn_sleep_ms=draw(st.sampled_from([0, 0, 1, 3])),
        rand=draw(st.randoms(use_true_random=False)),
    )


class Scenario:
    """One loader, its recording batch function, and the checks of what callers got."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.calls: list[Call] = []
        self.loads = 0
        self.batch_errors: list[BatchError] = []
        kwargs: dict[str, Any] = {}
        if world.form != "mapping":
            kwargs["key_of"] = lambda row: row.key
            kwargs["many"] = world.form == "many"
        if world.cache_key:
            kwargs["cache_key"] = str.lower
        kwargs.update(
            missing=world.missing,
            max_batch_size=world.max_batch_size,
            max_wait_ms=world.max_wait_ms,
            max_concurrency=world.max_concurrency,
            cache=world.cache,
            name="prop",
        )
        self.loader: KeyedLoader[Any, Any] = KeyedLoader(self.batch_fn, **kwargs)

    # -- keys ----------------------------------------------------------------------

    def key(self, ident: int, upper: bool) -> Any:
        if not self.w.cache_key:
            return ident
        return f"K{ident}" if upper else f"k{ident}"

    def ident(self, key: Any) -> int:
        return key if isinstance(key, int) else int(key[1:])

    # -- the batch function ----------------------------------------------------------

    async def batch_fn(self, keys: list[Any]) -> Any:
        w = self.w
        call = Call(keys=list(keys), idents=[self.ident(k) for k in keys])
        self.calls.append(call)
        for _ in range(w.fn_awaits):
            await asyncio.sleep(0)
        if w.fn_sleep_ms:
            await asyncio.sleep(w.fn_sleep_ms / 1000)
        poisoned = [i for i in call.idents if w.fate[i] == POISON]
        if poisoned:
            call.raised = RuntimeError(f"poison key {poisoned[0]}")
            raise call.raised
        # Answer with keys spelled either way: correlation goes through cache_key.
        answered = [(self.key(i, w.rand.random() < 0.5), i) for i in call.idents]
        if w.extra:
            answered.append((self.key(1000 + len(self.calls), False), 1000 + len(self.calls)))
        if w.shuffle:
            w.rand.shuffle(answered)
        if w.form == "mapping":
            out: dict[Any, Any] = {}
            for key, i in answered:
                fate = w.fate.get(i, VALUE)
                if fate == VALUE:
                    out[key] = ("value", i)
                elif fate == ERROR:
                    out[key] = call.errors[i] = LookupError(f"no luck for {i}")
            return out
        rows: list[Any] = []
        for key, i in answered:
            if w.fate.get(i, VALUE) == VALUE:
                count = rows_of(i) if w.form == "many" else 1
                rows.extend(Row(key, i, n) for n in range(count))
        if w.shuffle:
            w.rand.shuffle(rows)
        return iter(rows)  # any iterable will do

    # -- callers ---------------------------------------------------------------------

    async def call(self, c: Caller) -> Any:
        for _ in range(c.awaits):
            await asyncio.sleep(0)
        if c.delay_ms:
            await asyncio.sleep(c.delay_ms / 1000)
        keys = [self.key(i, up) for i, up in zip(c.keys, c.spelling, strict=True)]
        if c.how == "load":
            future = self.loader.load(keys[0])
        else:
            future = self.loader.load_many(keys, return_exceptions=c.how == "many_exc")
        self.loads += len(keys)
        return await future

    async def run(self) -> None:
        callers = self.w.callers
        tasks = [asyncio.create_task(self.call(c)) for c in callers]
        for step in range(9):
            for c, task in zip(callers, tasks, strict=True):
                if c.cancel_at == step:
                    task.cancel()
            await asyncio.sleep(0)
        await asyncio.wait(tasks)
        await self.loader.flush()
        for c, task in zip(callers, tasks, strict=True):
            if task.cancelled():
                assert c.cancel_at is not None, f"{c} was cancelled, but nobody cancelled it"
                continue
            self.check_caller(c, task.exception() or task.result())
        self.check_stats()
        await self.loader.aclose()

    # -- checks ----------------------------------------------------------------------

    def check_caller(self, c: Caller, got: Any) -> None:
        if c.how == "load":
            self.check_outcome(c.keys[0], got)
        elif c.how == "many_exc" or not isinstance(got, BaseException):
            assert isinstance(got, list), got
            assert len(got) == len(c.keys)
            seen: set[int] = set()  # one load_many is one caller: a repeated key may share
            for ident, outcome in zip(c.keys, got, strict=True):
                if c.how == "many":
                    assert not isinstance(outcome, BaseException)
                self.check_outcome(ident, outcome, record=id(outcome) not in seen)
                seen.add(id(outcome))
        else:  # load_many failed with the failure of one of its keys
            assert any(self.is_outcome(i, got) for i in c.keys), (c, got)
            if isinstance(got, BatchError):
                self.batch_errors.append(got)

    def is_outcome(self, ident: int, got: BaseException) -> bool:
        try:
            self.check_outcome(ident, got, record=False)
        except AssertionError:
            return False
        return True

    def check_outcome(self, ident: int, got: Any, *, record: bool = True) -> None:
        w = self.w
        fate = w.fate[ident]
        mine = [call for call in self.calls if ident in call.idents]
        assert mine, f"key {ident} was answered ({got!r}) but never fetched"
        if isinstance(got, BatchError):
            assert self.ident(got.key) == ident, (got.key, ident)
            assert got.loader == "prop"
            assert got.attempts == 1
            assert any(got.__cause__ is call.raised for call in mine), got.__cause__
            assert str(got.__cause__) in str(got)
            if record:
                self.batch_errors.append(got)
            return
        answered = [call for call in mine if call.raised is None]
        assert answered, f"key {ident}: {got!r} though every call holding it raised"
        if isinstance(got, MissingKeyError):
            assert fate == MISSING and w.missing == "error" and w.form != "many"
            assert self.ident(got.key) == ident
            return
        if isinstance(got, BaseException):
            assert fate == ERROR, (ident, fate, got)
            assert any(got is call.errors.get(ident) for call in answered), got
            return
        if fate == MISSING:
            assert got == ([] if w.form == "many" else None), got
            assert w.form == "many" or w.missing == "none"
        elif w.form == "mapping":
            assert fate == VALUE and got == ("value", ident)
        elif w.form == "rows":
            assert fate == VALUE and isinstance(got, Row) and got.ident == ident
        else:
            assert fate == VALUE and isinstance(got, list)
            assert all(row.ident == ident for row in got)
            assert sorted(row.n for row in got) == list(range(rows_of(ident)))

    def check_stats(self) -> None:
        w = self.w
        stats = self.loader.stats
        sizes = [len(call.keys) for call in self.calls]
        assert stats.loads == self.loads
        assert stats.batches == len(self.calls)
        assert stats.keys_dispatched == sum(sizes)
        assert stats.largest_batch == max(sizes, default=0)
        assert stats.failed_batches == sum(call.raised is not None for call in self.calls)
        assert stats.retries == stats.rejected == 0
        assert stats.cache_hits <= stats.loads
        assert self.loader.size == len(self.loader) == 0
        if not w.cache:
            assert stats.cache_hits == 0
        for call in self.calls:
            assert len(set(call.idents)) == len(call.idents), f"duplicate keys in {call.keys}"
            assert w.max_batch_size is None or len(call.keys) <= w.max_batch_size
        if w.cache:  # a value or a miss, once answered, is never fetched again
            for ident, fate in w.fate.items():
                if fate in (VALUE, MISSING):
                    answered = [c for c in self.calls if ident in c.idents and c.raised is None]
                    assert len(answered) <= 1, (ident, [c.keys for c in self.calls])
        # Each failing caller has a BatchError of its own, deduplicated callers included.
        assert len({id(e) for e in self.batch_errors}) == len(self.batch_errors)


@given(worlds())
@bounded(max_examples=200)
def test_every_caller_gets_exactly_its_own_keys_outcome(world: World) -> None:
    scenario = Scenario(world)
    run_virtual(scenario.run)


# -- retry mode ------------------------------------------------------------------------


@dataclass
class RetryWorld:
    plan: dict[int, list[str]]  # per key, per attempt: "ok", "exc" (per-key), "fatal", "raise"
    callers: list[int]
    retries: int
    base_delay_ms: int
    factor: float
    max_batch_size: int | None
    max_concurrency: int | None


@st.composite
def retry_worlds(draw: st.DrawFn) -> RetryWorld:
    n_keys = draw(st.integers(1, 8))
    steps = st.sampled_from(["ok", "exc", "exc", "raise", "fatal", "kfatal"])
    plan = {i: draw(st.lists(steps, min_size=1, max_size=5)) for i in range(n_keys)}
    return RetryWorld(
        plan=plan,
        callers=draw(st.lists(st.integers(0, n_keys - 1), min_size=1, max_size=16)),
        retries=draw(st.integers(0, 3)),
        base_delay_ms=draw(st.sampled_from([0, 10, 100])),
        factor=draw(st.sampled_from([1.0, 2.0, 3.0])),
        max_batch_size=draw(st.none() | st.integers(1, 4)),
        max_concurrency=draw(st.none() | st.integers(1, 2)),
    )


class Flaky(OSError):
    """Retried (in ``retry_on``)."""


class Fatal(ValueError):
    """Not retried (outside ``retry_on``)."""


@given(retry_worlds())
@bounded(max_examples=150)
def test_retry_mode_retries_only_the_failed_keys_and_counts_attempts(world: RetryWorld) -> None:
    policy = RetryPolicy(
        retries=world.retries,
        base_delay_ms=world.base_delay_ms,
        factor=world.factor,
        max_delay_ms=250,
        jitter=False,
        retry_on=(Flaky,),
    )
    # (start time, keys, raised, per-key outcomes) of each call
    calls: list[tuple[float, list[int], BaseException | None, dict[int, Any]]] = []
    seen: dict[int, int] = {}  # calls that held each key so far

    async def fetch(keys: list[int]) -> dict[int, Any]:
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(0.001)
        steps = {}
        for k in keys:
            plan = world.plan[k]
            steps[k] = plan[min(seen.get(k, 0), len(plan) - 1)]
            seen[k] = seen.get(k, 0) + 1
        raised: BaseException | None = None
        if "raise" in steps.values():
            raised = Flaky(f"call {len(calls)} failed")
        elif "fatal" in steps.values():
            raised = Fatal(f"call {len(calls)} failed for good")
        out: dict[int, Any] = {}
        for k, step in steps.items():
            if step in ("ok", "raise", "fatal"):
                out[k] = f"v{k}"
            elif step == "kfatal":
                out[k] = Fatal(f"key {k} is beyond repair")
            else:
                out[k] = Flaky(f"key {k}, attempt {seen[k]}")
        calls.append((start, list(keys), raised, out))
        if raised is not None:
            raise raised
        return out

    async def main() -> None:
        loader = KeyedLoader(
            fetch,
            error_mode="retry",
            retry=policy,
            max_batch_size=world.max_batch_size,
            max_concurrency=world.max_concurrency,
            name="flaky",
        )
        results = await asyncio.gather(
            *(loader.load(k) for k in world.callers), return_exceptions=True
        )
        await loader.aclose()
        errors = [r for r in results if isinstance(r, BatchError)]
        assert len({id(e) for e in errors}) == len(errors)
        for key, got in zip(world.callers, results, strict=True):
            mine = [c for c in calls if key in c[1]]
            assert mine, key
            # Every call but the last holding the key failed it in a retryable way.
            for _, _, raised, out in mine[:-1]:
                assert isinstance(raised, Flaky) or isinstance(out[key], Flaky)
            assert len(mine) <= policy.retries + 1
            _, _, raised, out = mine[-1]
            if raised is None and not isinstance(out[key], BaseException):
                assert got == f"v{key}"
                continue
            if raised is None and (isinstance(out[key], Fatal) or policy.retries == 0):
                # A per-key exception that is never retried reaches callers as it is.
                assert got is out[key]
                continue
            assert isinstance(got, BatchError), got
            assert got.key == key and got.loader == "flaky"
            assert got.attempts == len(mine)
            assert got.__cause__ is (raised if raised is not None else out[key])
            if not isinstance(got.__cause__, Fatal):  # retryable: given up only when out
                assert len(mine) == policy.retries + 1
        # Each retry waited its backoff after the previous attempt of the same keys.
        for n, (start, keys, _, _) in enumerate(calls):
            before = [c for c in calls[:n] if set(keys) <= set(c[1])]
            if not before:
                continue
            attempt = sum(1 for c in before if keys[0] in c[1])
            delay = policy.delay_ms(attempt) / 1000
            ready = before[-1][0] + 0.001 + delay
            if world.max_concurrency is None:
                assert abs(start - ready) < 1e-6, (start, ready)
            else:
                assert start >= ready - 1e-6
        stats = loader.stats
        distinct = len(set(world.callers))
        first_calls = -(-distinct // (world.max_batch_size or distinct))
        assert stats.batches == len(calls)
        assert stats.retries == len(calls) - first_calls
        assert stats.keys_dispatched == sum(len(c[1]) for c in calls)
        assert stats.failed_batches == sum(
            1
            for n, (_, keys, raised, _) in enumerate(calls)
            if raised is not None and not any(set(keys) <= set(c[1]) for c in calls[n + 1 :])
        )

    run_virtual(main)


# -- the harness itself: a property suite that cannot fail proves nothing --------------


async def _unretrieved() -> None:
    asyncio.get_running_loop().create_future().set_exception(ValueError("lost"))


async def _hang() -> None:
    await asyncio.get_running_loop().create_future()


async def _leftover() -> None:
    asyncio.get_running_loop().create_task(asyncio.sleep(1000))


@pytest.mark.parametrize(
    ("main", "complaint"),
    [
        (_unretrieved, "never retrieved"),
        (_hang, "hung"),
        (_leftover, "tasks still running"),
    ],
)
def test_the_harness_fails_an_example_that_leaks_hangs_or_leaves_a_report(
    main: Any, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint):
        run_virtual(main)
