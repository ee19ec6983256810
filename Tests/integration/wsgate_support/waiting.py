"""The one generic poll: wait until a condition holds."""

from __future__ import annotations

import time

from .constants import STEP_TIMEOUT


def wait_until(condition, timeout: float = STEP_TIMEOUT, what: str = "condition", interval: float = 0.02):
    """Poll ``condition()`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
