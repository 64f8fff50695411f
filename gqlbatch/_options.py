"""Option values: the error modes, the retry policy, and the engine's knobs.

Each option is checked by its own small validator that returns the value or
raises with the argument's name and the bad value: ``TypeError`` for a wrong
type, ``ValueError`` for a value out of range. Everything is checked when the
loader or queue is constructed, never later.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["BatchOptions", "ErrorMode", "RetryPolicy"]


class ErrorMode(enum.StrEnum):
    """What a failed batch does to the rest of the work. Values are the spec's strings."""

    CONTINUE = "continue"
    """A failed batch fails its own callers, and only them."""
    FAIL_FAST = "fail-fast"
    """The first failure rejects everything waiting or in flight, then work resumes."""
    RETRY = "retry"
    """Failures are retried with exponential backoff per the :class:`RetryPolicy`."""


def _is_int(value: object) -> bool:
    """An int that is not a bool (``True`` is no batch size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int, *, optional: bool = False) -> Any:
    """Return ``value`` if it is an int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not _is_int(value):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if value < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_number(
    name: str, value: object, minimum: float, *, optional: bool = False, strict: bool = False
) -> Any:
    """Return ``value`` if it is a finite number >= ``minimum`` (> when ``strict``)."""
    if value is None and optional:
        return None
    if not _is_number(value):
        kind = "a number or None" if optional else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    bad = value <= minimum if strict else value < minimum  # type: ignore[operator]
    if bad or value != value or value == float("inf"):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {minimum}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return value


def check_callable(name: str, value: object, *, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r} ({type(value).__name__})")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({type(value).__name__})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_error_mode(value: object) -> ErrorMode:
    if isinstance(value, ErrorMode):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"error_mode must be an ErrorMode or a str, got {value!r} ({type(value).__name__})"
        )
    try:
        return ErrorMode(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in ErrorMode)
        raise ValueError(f"error_mode must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How ``error_mode="retry"`` retries a failure: exponential backoff with jitter.

    The delay before retry ``n`` (1-based) is
    ``min(max_delay_ms, base_delay_ms * factor ** (n - 1))``, and with ``jitter``
    a uniformly random value between half of that and all of it.
    """

    retries: int = 3
    """Default 3. Calls of the batch function after the first; 0 never retries."""
    base_delay_ms: float = 100
    """Default 100. Delay before the first retry, in milliseconds."""
    factor: float = 2.0
    """Default 2.0. Each further retry waits this many times longer (>= 1)."""
    max_delay_ms: float = 10_000
    """Default 10,000. Upper bound of any one delay, in milliseconds."""
    jitter: bool = True
    """Default True. Randomise each delay between 50% and 100% of its value."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Default ``(Exception,)``. Only exceptions of these classes are retried."""

    def __post_init__(self) -> None:
        check_int("RetryPolicy.retries", self.retries, 0)
        check_number("RetryPolicy.base_delay_ms", self.base_delay_ms, 0)
        check_number("RetryPolicy.factor", self.factor, 1)
        check_number("RetryPolicy.max_delay_ms", self.max_delay_ms, 0)
        check_bool("RetryPolicy.jitter", self.jitter)
        retry_on = self.retry_on
        if not isinstance(retry_on, tuple) or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in retry_on
        ):
            raise TypeError(
                f"RetryPolicy.retry_on must be a tuple of exception classes, got {retry_on!r}"
            )

    def delay_ms(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The delay in milliseconds before retry number ``retry`` (1-based)."""
        delay = min(self.max_delay_ms, self.base_delay_ms * self.factor ** (retry - 1))
        if self.jitter:
            delay *= 0.5 + 0.5 * rand()
        return float(delay)

    def should_retry(self, error: BaseException, retries_done: int) -> bool:
        """Whether ``error`` is retried after ``retries_done`` retries already happened."""
        return retries_done < self.retries and isinstance(error, self.retry_on)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOptions:
    """The engine's knobs, shared by :class:`KeyedLoader` and :class:`BatchedQueue`.

    Read them from ``loader.options``; they cannot change after construction.
    """

    name: str | None = None
    """Default None. Named in errors, statistics and traces."""
    max_batch_size: int | None = None
    """Default None (unbounded) for loaders, 10 for queues. Dispatch once this many keys wait."""
    max_wait_ms: float = 0
    """Default 0 for loaders, 1000 for queues. Dispatch this long after a batch's first key
    arrived; 0 means once an event-loop iteration passes with no new key (see the engine)."""
    max_queue_size: int | None = None
    """Default None for loaders, 1000 for queues. Keys accepted but not yet handed to the
    batch function; one more raises :class:`QueueFullError`."""
    max_concurrency: int | None = None
    """Default None (unbounded) for loaders, 1 for queues. Batch function calls at once."""
    error_mode: ErrorMode = ErrorMode.CONTINUE
    """Default ``"continue"``. See :class:`ErrorMode`."""
    retry: RetryPolicy = RetryPolicy()
    """Default ``RetryPolicy()``. Used by ``error_mode="retry"`` only."""
    batch_timeout_ms: float | None = None
    """Default None. A call of the batch function that takes longer fails (each attempt)."""

    def __post_init__(self) -> None:
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a str or None, got {self.name!r}")
        check_int("max_batch_size", self.max_batch_size, 1, optional=True)
        check_number("max_wait_ms", self.max_wait_ms, 0)
        check_int("max_queue_size", self.max_queue_size, 1, optional=True)
        check_int("max_concurrency", self.max_concurrency, 1, optional=True)
        object.__setattr__(self, "error_mode", check_error_mode(self.error_mode))
        if not isinstance(self.retry, RetryPolicy):
            raise TypeError(
                f"retry must be a RetryPolicy, got {self.retry!r} ({type(self.retry).__name__})"
            )
        if self.retry != RetryPolicy() and self.error_mode is not ErrorMode.RETRY:
            raise ValueError(
                f"retry={self.retry!r} has no effect with error_mode={self.error_mode.value!r}; "
                "pass error_mode='retry' as well"
            )
        check_number("batch_timeout_ms", self.batch_timeout_ms, 0, optional=True, strict=True)


ENGINE_OPTIONS: Final = tuple(field.name for field in dataclasses.fields(BatchOptions))
"""The names of :class:`BatchOptions`' fields, in declaration order."""
LOADER_DEFAULTS: Final = BatchOptions()
"""A loader's engine options when none is given."""
QUEUE_DEFAULTS: Final = BatchOptions(
    max_batch_size=10, max_wait_ms=1000, max_queue_size=1000, max_concurrency=1
)
"""A queue's engine options when none is given (the spec's defaults)."""


def check_options(owner: str, options: Mapping[str, object], allowed: Collection[str]) -> None:
    """Raise TypeError naming the first of ``options`` that ``owner`` does not take.

    ``**options: Unpack[...]`` is checked by type checkers only; this is the
    same check at run time, worded as Python words it for a keyword argument.
    """
    for name in options:
        if name not in allowed:
            raise TypeError(f"{owner} got an unexpected keyword argument {name!r}")


def batch_options(options: Mapping[str, Any], defaults: BatchOptions) -> BatchOptions:
    """``defaults`` with the engine options among ``options`` replaced, validated.

    The one place keyword options become a :class:`BatchOptions`; options that
    are not the engine's (``cache``, ``key_type``, ...) are left to the face.
    Options seen before are not validated again: a loader per request (a
    registry's) takes the same options every time.
    """
    given = {name: options[name] for name in ENGINE_OPTIONS if name in options}
    if not given:
        return defaults
    if defaults is not LOADER_DEFAULTS and defaults is not QUEUE_DEFAULTS:
        return dataclasses.replace(defaults, **given)
    # Each value's class is part of the key: 1, 1.0 and True are equal, not alike.
    seen = (defaults is QUEUE_DEFAULTS, *((n, v.__class__, v) for n, v in given.items()))
    try:
        made = _CHECKED.get(seen)
    except TypeError:  # an unhashable value (refused by the replace below)
        return dataclasses.replace(defaults, **given)
    if made is None:
        made = dataclasses.replace(defaults, **given)  # raises for a bad value: not kept
        if len(_CHECKED) >= _CHECKED_MOST:
            _CHECKED.clear()
        _CHECKED[seen] = made
    return made


_CHECKED: dict[tuple[Any, ...], BatchOptions] = {}
"""Options already made into a :class:`BatchOptions` from the two defaults, by value and class."""
_CHECKED_MOST: Final = 512
