"""Statistics snapshots."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoaderStats"]


@dataclass(frozen=True, slots=True)
class LoaderStats:
    """A snapshot of a loader's or queue's counters since it was created.

    Counters only grow; ``BatchedQueue.clear()`` does not reset them.
    """

    loads: int = 0
    """Calls of ``load`` (one per key for ``load_many``) or ``enqueue``, refused ones included."""
    cache_hits: int = 0
    """Loads answered from the cache, or joined to a batch already in flight."""
    batches: int = 0
    """Calls of the batch function, retries included."""
    keys_dispatched: int = 0
    """Keys (or items) handed to the batch function, summed over its calls."""
    largest_batch: int = 0
    """The most keys handed to one call of the batch function."""
    retries: int = 0
    """Calls of the batch function that were retries (``error_mode="retry"``)."""
    failed_batches: int = 0
    """Calls whose failure reached callers as :class:`BatchError` (after any retries)."""
    rejected: int = 0
    """Loads refused with :class:`QueueFullError`."""
    cancelled_batches: int = 0
    """Running batches cancelled because every caller had gone and nothing could use
    the result (``cache=False``, or the loader closing)."""
    value_cache_hits: int = 0
    """Keys the shared cache (``value_cache``) answered."""
    value_cache_misses: int = 0
    """Keys the shared cache was asked for and lacked."""
    value_cache_errors: int = 0
    """Calls of the shared cache that raised or timed out (the loader went on without it)."""
    value_cache_skips: int = 0
    """Keys not asked of the shared cache because its circuit breaker was open."""
    value_cache_ms: float = 0.0
    """Milliseconds spent in calls of the shared cache."""
