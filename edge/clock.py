"""Clocks the agent runs on: the system clock, or a scaled one for simulator demos."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the agent reads the time (seconds since the Unix epoch) and waits."""

    def now(self) -> float:
        """The current time in seconds since the epoch."""
        ...

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Wait `seconds` of this clock's time, or until `stop` is set."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        """The system time."""
        return time.time()

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Wait in real time."""
        stop.wait(max(0.0, seconds))


class ScaledClock:
    """Simulated time running `scale` times faster than real time from `anchor`.

    `now = start + (real time - anchor) * scale`. The anchor is stored in the agent's
    database on first run, so a restarted agent continues the same timeline.
    """

    def __init__(self, *, start: float, anchor: float, scale: float) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.start = start
        self.anchor = anchor
        self.scale = scale

    def now(self) -> float:
        """The simulated time."""
        return self.start + (time.time() - self.anchor) * self.scale

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Wait `seconds` of simulated time."""
        stop.wait(max(0.0, seconds) / self.scale)
