"""gc_tuned: the collector tuned for serving while inside, restored by the last one out."""

from __future__ import annotations

import gc

import pytest

from gqlbatch.gc_tuning import GC_YOUNG_THRESHOLD, gc_tuned


def test_gc_tuned_freezes_start_up_and_the_last_user_restores_the_collector() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0, "nothing in the test process froze objects before"
    with gc_tuned():
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
        with gc_tuned(young_threshold=50):  # a second app in the same process
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # the first one's setting
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # the first one still runs
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_gc_tuned_takes_the_young_threshold_and_restores_it_after_an_error() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []

    def serve() -> None:
        with gc_tuned(young_threshold=2_500):
            seen.append(gc.get_threshold())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        serve()
    assert seen == [(2_500, *before[1:])]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "young_threshold must be >= 1, got 0"),
        ("700", TypeError, "young_threshold must be an int, got '700' (str)"),
        (True, TypeError, "young_threshold must be an int, got True (bool)"),
    ],
)
def test_a_bad_young_threshold_is_refused_naming_it(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised, gc_tuned(young_threshold=value):  # type: ignore[arg-type]
        pass
    assert str(raised.value) == message
    assert gc.get_freeze_count() == 0
