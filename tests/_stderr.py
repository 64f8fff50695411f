"""What a subprocess run in asyncio debug mode may print on stderr and still be clean."""

from __future__ import annotations

import re

# asyncio's debug mode reports every step that held the loop over 100 ms; how long
# a start-up step takes depends on what else the machine is doing, so these timing
# reports are the only lines allowed.
_SLOW_STEP = re.compile(r"Executing <.*> took \d+\.\d+ seconds\n")


def without_slow_steps(stderr: str) -> str:
    """``stderr`` without asyncio debug mode's "Executing <...> took N seconds" lines."""
    return _SLOW_STEP.sub("", stderr)
