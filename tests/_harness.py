"""Shared by the randomized suites: deterministic Hypothesis settings.

Each example runs with :func:`tests._loop.run_virtual`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for CI: derandomized, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
