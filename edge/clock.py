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
    """Simulated time running `scale` times faster than real time from `anchor`, until it
    reaches real time, and at real time from then on.

    `now = min(start + (real time - anchor) * scale, real time)`. The gateway refuses a
    minute that starts in the future, so a demo replays the past quickly (back-filling up
    to now) and never runs ahead. The anchor is stored in the agent's database on first
    run, so a restarted agent continues the same timeline.
    """

    def __init__(self, *, start: float, anchor: float, scale: float) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.start = start
        self.anchor = anchor
        self.scale = scale

    def now(self) -> float:
        """The simulated time, never later than the real time."""
        real = time.time()
        return min(self.start + (real - self.anchor) * self.scale, real)

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Wait `seconds` of simulated time: scaled while behind real time, real once caught up."""
        seconds = max(0.0, seconds)
        real = time.time()
        behind = real - (self.start + (real - self.anchor) * self.scale)  # at the full scale
        if behind <= 0:
            stop.wait(seconds)
            return
        # Scaled until the simulated time catches up (behind / (scale - 1) real seconds).
        catch_up = behind / (self.scale - 1) if self.scale > 1 else float("inf")
        scaled = seconds / self.scale
        stop.wait(scaled if scaled <= catch_up else catch_up + (seconds - catch_up * self.scale))
