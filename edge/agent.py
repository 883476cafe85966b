"""The agent: poll drivers, store samples, aggregate closed minutes, sign, and deliver."""

from __future__ import annotations

import fcntl
import logging
import math
import random
import stat
import threading
import time
from collections.abc import Mapping
from typing import IO

from edge.aggregate import legacy_records, readings
from edge.clock import Clock, ScaledClock, SystemClock
from edge.config import EdgeConfig
from edge.database import MINUTE_MS, Store, to_ms
from edge.drivers import Driver, Sample
from edge.errors import ConfigError, EdgeError
from edge.outbox import FlushReport, Outbox
from edge.transports import Transport
from ledger.errors import KeyFileError
from ledger.keys import NamedKey

log = logging.getLogger("patio.edge")

CURSOR = "cursor_ms"  # start of the first minute not yet aggregated
SIM_ANCHOR = "sim_anchor"  # real time of the first simulated run
SIM_BACKFILL_S = 86_400.0  # a scaled clock with no sim_start starts this long before its first run
PRUNE_EVERY_S = 600.0
MAX_SLEEP_S = 5.0  # wake at least this often (clock time) to aggregate, retry and read acks
# A Raspberry Pi has no battery clock: until NTP answers it may believe it is 1970. Samples
# stamped before this are not taken (they would become minutes decades in the past).
EARLIEST_PLAUSIBLE = 1_735_689_600.0  # 2025-01-01T00:00:00Z


def load_device_key(config: EdgeConfig) -> NamedKey:
    """The device key; refuses a key file that others can read."""
    try:
        mode = config.key_file.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(
            f"key file {config.key_file} does not exist; create it with `patio edge keygen`"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read key file {config.key_file}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {config.key_file} is open to others (mode {stat.S_IMODE(mode):04o}); "
            "chmod 600 it"
        )
    try:
        return NamedKey.load(config.key_file)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from exc


def make_transport(config: EdgeConfig) -> Transport:
    """The transport the configuration names."""
    delivery = config.delivery
    if delivery.transport == "mqtt":
        from edge.transports.mqtt import MqttTransport

        return MqttTransport(
            host=config.mqtt.host,
            port=config.mqtt.port,
            community=config.community,
            device_id=config.device_id,
            client_id=config.mqtt.client_id,
            keepalive_s=config.mqtt.keepalive_s,
            ack_timeout_s=config.mqtt.ack_timeout_s,
            window=config.mqtt.window,
        )
    from edge.transports.http import EntriesTransport, LegacyTransport

    assert delivery.url is not None  # checked by the config parser
    kind = LegacyTransport if delivery.transport == "legacy" else EntriesTransport
    return kind(url=delivery.url, batch_size=delivery.batch_size, timeout_s=delivery.timeout_s)


def make_clock(config: EdgeConfig, store: Store) -> Clock:
    """The system clock, or a scaled clock anchored at the first simulated run."""
    agent = config.agent
    if agent.time_scale == 1.0 and agent.sim_start is None:
        return SystemClock()
    anchor = store.get_state(SIM_ANCHOR)
    if anchor is None:
        anchor = repr(time.time())
        with store.transaction():
            store.set_state(SIM_ANCHOR, anchor)
    # Without a start, a demo replays the day before its first run (it may not run ahead).
    start = agent.sim_start if agent.sim_start is not None else float(anchor) - SIM_BACKFILL_S
    return ScaledClock(start=start, anchor=float(anchor), scale=agent.time_scale)


def open_outbox(config: EdgeConfig, store: Store, key: NamedKey | None = None) -> Outbox:
    """The outbox over the agent's database."""
    return Outbox(
        store=store,
        key=key,
        device_id=config.device_id,
        backoff_base_s=config.delivery.backoff_base_s,
        backoff_max_s=config.delivery.backoff_max_s,
    )


class AgentLock:
    """One agent per data folder: an flock the kernel drops when the process dies."""

    def __init__(self, config: EdgeConfig) -> None:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        path = config.data_dir / "agent.lock"
        self._handle: IO[str] = path.open("w")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._handle.close()
            raise EdgeError(f"another agent is using {config.data_dir}") from exc

    def release(self) -> None:
        """Drop the lock."""
        self._handle.close()


class Agent:
    """One device's agent. `step(now)` does one round; `run()` loops on the clock."""

    def __init__(
        self,
        *,
        config: EdgeConfig,
        clock: Clock | None = None,
        transport: Transport | None = None,
        drivers: Mapping[str, Driver] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        key = load_device_key(config)
        self._lock = AgentLock(config)
        try:
            self.store = Store.open(config.database)
            self.store.claim(config.device_id)
            self.clock = clock or make_clock(config, self.store)
            self.outbox = open_outbox(config, self.store, key)
            if rng is not None:
                self.outbox.rng = rng
            channels = [c for spec in config.sensors for c in spec.channels]
            self.store.register_channels(channels)
            self.legacy_types = {
                c.name: spec.legacy_type for spec in config.sensors for c in spec.channels
            }
            self.drivers: dict[str, Driver] = dict(drivers or {})
            for spec in config.sensors:
                if spec.name not in self.drivers:
                    self.drivers[spec.name] = spec.settings.open(self.clock)
            self.transport = transport or make_transport(config)
        except BaseException:
            self._lock.release()
            raise
        self._due = {spec.name: -math.inf for spec in config.sensors}
        self._next_prune = -math.inf
        self._clock_warned = False
        self._stop = threading.Event()
        self.last_flush = FlushReport(skipped=True)

    # One round.

    def step(self, now: float) -> float:
        """Poll due sensors, aggregate closed minutes, prune, flush; returns the next wake."""
        if now < EARLIEST_PLAUSIBLE:
            if not self._clock_warned:
                log.warning("the clock reads %.0f (before 2025): waiting for NTP", now)
                self._clock_warned = True
            return now + MAX_SLEEP_S
        self.sample(now)
        self.aggregate(now)
        if now >= self._next_prune:
            self.prune(now)
            self._next_prune = now + PRUNE_EVERY_S
        self.last_flush = self.outbox.flush(
            self.transport, now, budget_s=self.config.delivery.flush_budget_s
        )
        return min(min(self._due.values()), now + MAX_SLEEP_S)

    def sample(self, now: float) -> int:
        """Read every sensor that is due and store the samples."""
        samples: list[Sample] = []
        for spec in self.config.sensors:
            if now < self._due[spec.name]:
                continue
            self._due[spec.name] = (math.floor(now / spec.interval_s) + 1) * spec.interval_s
            try:
                samples += self.drivers[spec.name].read(now)
            except Exception:
                # A driver bug must not stop the others: its readings count as missing.
                log.exception("sensor %s failed; recording missing samples", spec.name)
                samples += [Sample(c.name, now, None) for c in spec.channels]
        if samples:
            self.store.add_samples(samples)
        return len(samples)

    def aggregate(self, now: float) -> int:
        """Turn every closed minute with samples into signed outbox items; returns minutes."""
        # Minute [m, m + 60 s) is closed once `grace` has passed after its end, so that a
        # sample stamped just before the boundary but stored a little later still counts.
        limit = (to_ms(now - self.config.agent.grace_s) // MINUTE_MS) * MINUTE_MS
        cursor = self.store.get_state(CURSOR)
        minutes = self.store.minutes_with_samples(
            since_ms=int(cursor) if cursor else 0, before_ms=limit
        )
        if not minutes:
            return 0
        channels = self.store.channels()
        legacy = self.config.delivery.transport == "legacy"
        for start in minutes:
            with self.store.transaction():
                window = self.store.window(start, start + MINUTE_MS)
                baselines = {
                    name: self.store.last_value_before(name, start)
                    for name in window
                    if name in channels and channels[name].kind == "counter"
                }
                minute = readings(channels, window, baselines)
                if legacy:
                    for record in legacy_records(
                        start_ms=start,
                        readings=minute,
                        types=self.legacy_types,
                        community=self.config.community,
                    ):
                        self.outbox.add_legacy(start, record)
                elif minute:
                    self.outbox.add_minute(start, minute)
                self.store.set_state(CURSOR, str(start + MINUTE_MS))
        return len(minutes)

    def prune(self, now: float) -> None:
        """Apply the raw-sample and acknowledged-item retention periods."""
        agent = self.config.agent
        cursor = self.store.get_state(CURSOR)
        before = to_ms(now - agent.raw_retention_s)
        if cursor is not None:
            before = min(before, int(cursor))  # never drop samples not yet aggregated
        self.store.prune_samples(before)
        self.outbox.prune_acked(to_ms(now - agent.acked_retention_s))

    # The loop.

    def run(self) -> None:
        """Step on the clock until `stop()` is called."""
        log.info(
            "agent %s started: %d sensors, %s delivery",
            self.config.device_id, len(self.config.sensors), self.config.delivery.transport,
        )  # fmt: skip
        while not self._stop.is_set():
            wake = self.step(self.clock.now())
            self.clock.wait(wake - self.clock.now(), self._stop)

    def stop(self) -> None:
        """Ask `run()` to return after the current step."""
        self._stop.set()

    def close(self) -> None:
        """Close the drivers, the transport and the database."""
        for driver in self.drivers.values():
            try:
                driver.close()
            except Exception:
                log.exception("closing a driver failed")
        self.transport.close()
        self.store.close()
        self._lock.release()
