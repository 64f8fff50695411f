"""Option validation: wrong types raise TypeError, bad values ValueError, naming the argument."""

from __future__ import annotations

import pytest

from gqlbatch import BatchOptions, ErrorMode, RetryPolicy


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_batch_size": 0}, ValueError, "max_batch_size must be >= 1, got 0"),
        ({"max_batch_size": 1.5}, TypeError, "max_batch_size must be an int or None"),
        ({"max_batch_size": True}, TypeError, "max_batch_size must be an int or None"),
        ({"max_wait_ms": -1}, ValueError, "max_wait_ms must be a finite number >= 0, got -1"),
        ({"max_wait_ms": float("nan")}, ValueError, "max_wait_ms must be a finite number"),
        ({"max_wait_ms": "10"}, TypeError, "max_wait_ms must be a number, got '10'"),
        ({"max_queue_size": 0}, ValueError, "max_queue_size must be >= 1"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be >= 1"),
        ({"error_mode": "explode"}, ValueError, "error_mode must be one of 'continue'"),
        ({"error_mode": 3}, TypeError, "error_mode must be an ErrorMode or a str"),
        ({"retry": {"retries": 1}}, TypeError, "retry must be a RetryPolicy"),
        ({"batch_timeout_ms": 0}, ValueError, "batch_timeout_ms must be a finite number > 0"),
        ({"name": 5}, TypeError, "name must be a str or None"),
        (
            {"retry": RetryPolicy(retries=5)},
            ValueError,
            "has no effect with error_mode='continue'",
        ),
    ],
)
def test_bad_options_are_rejected_naming_the_argument(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        BatchOptions(**kwargs)  # type: ignore[arg-type]


def test_error_mode_accepts_the_spec_strings() -> None:
    # BatchOptions.error_mode is typed ErrorMode; the spec's strings are accepted at run time.
    assert BatchOptions(error_mode="fail-fast").error_mode is ErrorMode.FAIL_FAST  # type: ignore[arg-type]
    assert BatchOptions(error_mode="retry").error_mode is ErrorMode.RETRY  # type: ignore[arg-type]
    assert BatchOptions().error_mode is ErrorMode.CONTINUE


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"retries": -1}, ValueError, "RetryPolicy.retries must be >= 0"),
        ({"factor": 0.5}, ValueError, "RetryPolicy.factor must be a finite number >= 1"),
        ({"base_delay_ms": "1"}, TypeError, "RetryPolicy.base_delay_ms must be a number"),
        ({"jitter": 1}, TypeError, "RetryPolicy.jitter must be a bool"),
        ({"retry_on": [ValueError]}, TypeError, "RetryPolicy.retry_on must be a tuple"),
        ({"retry_on": (int,)}, TypeError, "RetryPolicy.retry_on must be a tuple"),
    ],
)
def test_bad_retry_policies_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay_ms=100, factor=2, max_delay_ms=350, jitter=False)
    assert [policy.delay_ms(n) for n in (1, 2, 3, 4)] == [100, 200, 350, 350]


def test_jitter_keeps_each_delay_between_half_and_all_of_it() -> None:
    policy = RetryPolicy(base_delay_ms=100, factor=2)
    assert policy.delay_ms(2, rand=lambda: 0.0) == 100
    assert policy.delay_ms(2, rand=lambda: 1.0) == 200


def test_retry_policy_counts_retries_and_filters_exception_classes() -> None:
    policy = RetryPolicy(retries=2, retry_on=(ConnectionError,))
    assert policy.should_retry(ConnectionError(), 0)
    assert policy.should_retry(ConnectionError(), 1)
    assert not policy.should_retry(ConnectionError(), 2)
    assert not policy.should_retry(ValueError(), 0)


def test_options_are_frozen() -> None:
    options = BatchOptions(max_batch_size=5)
    with pytest.raises(AttributeError):
        options.max_batch_size = 6  # type: ignore[misc]
