"""Edge agent benchmark: RSS and CPU of `patio edge run` with 8 sensors at 1 Hz, and the
outbox drain rate to a local gateway after an outage.

    .venv/bin/python bench/edge.py [--seconds 60] [--aggregates 20000] [--sink]

Part 1 runs the real agent (`patio edge run`, real clock) with eight simulated sensors
sampled every second, delivering each minute to the gateway, and reads its RSS and CPU
time from /proc. Part 2 fills an outbox with signed minute aggregates of those eight
sensors, as an outage would, then times the agent's own flush (batches of 1000 over
HTTP) until the gateway has acknowledged all of them. Part 3 does the same over MQTT
through a Mosquitto started from docker/mosquitto.conf and the gateway's MQTT ingest
(skipped when mosquitto is not installed). With --sink, or when gateway/app.py is absent,
parts 1 and 2 deliver to a local HTTP server that only answers "accepted", and say so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.database import Store  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.transports import Transport  # noqa: E402
from edge.transports.http import EntriesTransport  # noqa: E402
from edge.transports.mqtt import MqttTransport  # noqa: E402
from ledger.keys import NamedKey  # noqa: E402
from tests.edge.fakes import Broker, RealGateway, toml_text  # noqa: E402

PATIO = REPO / ".venv" / "bin" / "patio"
COMMUNITY = "bench"
AGENT_DEVICE = "bench-1"  # the running agent
HTTP_DEVICE = "bench-http"  # the outbox drained over HTTP: its own seqs
MQTT_DEVICE = "bench-mqtt"  # the outbox drained over MQTT
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SENSORS = [
    {"driver": "simulator", "name": f"{kind}{i}", "kind": kind, "seed": i, "interval_s": 1.0}
    for i, kind in enumerate(
        ["solar", "solar", "household", "household", "household", "boiler", "boiler", "solar"]
    )
]


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used, resident bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return cpu, rss


class Sink:
    """A local HTTP server answering every envelope "accepted" (no ledger behind it)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                result = {"status": "accepted", "log_tag_id": "c274b5" + "00" * 32, "error": None}
                data = json.dumps({"results": [result] * len(body["envelopes"])}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def stop(self) -> None:
        """Shut down."""
        self.server.shutdown()


def agent_footprint(folder: Path, url: str, seconds: float) -> dict[str, float]:
    """Run `patio edge run` for `seconds`; peak RSS, average CPU and samples stored per s."""
    config = folder / "edge.toml"
    document = {
        "device_id": AGENT_DEVICE,
        "community": COMMUNITY,
        "key_file": "device.key",
        "data_dir": "agent",
        "agent": {"grace_s": 2.0},
        "delivery": {"url": url},
        "sensor": SENSORS,
    }
    config.write_text(toml_text(document))
    log = (folder / "agent.log").open("wb")
    command = [str(PATIO), "edge", "run", "--config", str(config), "--log-level", "WARNING"]
    child = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        time.sleep(5)  # imports and first samples
        cpu0, _ = proc_usage(child.pid)
        start = time.monotonic()
        peak = 0
        while time.monotonic() - start < seconds:
            time.sleep(1)
            if child.poll() is not None:
                raise SystemExit(f"the agent exited: {(folder / 'agent.log').read_text()}")
            peak = max(peak, proc_usage(child.pid)[1])
        cpu1, _ = proc_usage(child.pid)
        elapsed = time.monotonic() - start
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(20)
        log.close()
    store = Store.open(folder / "agent" / "edge.db")
    samples, span = store.connection.execute(
        "SELECT count(*), (max(ts_ms) - min(ts_ms)) / 1000.0 FROM samples"
    ).fetchone()
    acked = store.connection.execute(
        "SELECT count(*) FROM outbox WHERE acked_ms IS NOT NULL"
    ).fetchone()[0]
    store.close()
    return {
        "rss_mb": peak / 2**20,
        "cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
        "samples_per_s": samples / span if span else 0.0,
        "acked": acked,
    }


def fill_outbox(folder: Path, device: str, count: int) -> tuple[Outbox, float]:
    """An outbox holding `count` signed aggregates of the 8 sensors; (outbox, fills/s)."""
    key = NamedKey.load(folder / "device.key")
    store = Store.open(folder / f"{device}.db")
    outbox = Outbox(store=store, key=key, device_id=device, rng=random.Random(1))
    rng = random.Random(7)
    first = (int(time.time()) // 60 - count - 10) * 60_000  # minutes of the outage, all past
    started = time.perf_counter()
    with store.transaction():
        for k in range(count):
            readings: dict[str, Any] = {}
            for sensor in SENSORS:
                name = str(sensor["name"])
                if sensor["kind"] == "boiler":
                    water = round(60 + rng.random() * 6, 4)
                    readings[f"{name}_water"] = {
                        "unit": "Cel", "n": 60, "missing": 0, "avg": water, "min": 60.0,
                        "max": 66.0,
                    }  # fmt: skip
                    readings[f"{name}_fan"] = {
                        "unit": "bool", "any": True, "on_fraction": 0.35, "n": 60, "missing": 0,
                    }  # fmt: skip
                else:
                    watts = round(rng.random() * 3000, 4)
                    readings[f"{name}_w"] = {
                        "unit": "W", "n": 60, "missing": 0, "avg": watts, "min": 0.0,
                        "max": 3000.0,
                    }  # fmt: skip
                    readings[f"{name}_wh"] = {
                        "unit": "Wh", "sum": round(watts / 60, 4), "n": 60, "missing": 0,
                    }  # fmt: skip
            outbox.add_minute(first + 60_000 * k, readings)
    return outbox, count / (time.perf_counter() - started)


def drain(outbox: Outbox, transport: Transport) -> tuple[int, float]:
    """Flush until every item is acknowledged: (delivered, seconds)."""
    started = time.perf_counter()
    delivered = 0
    while outbox.pending("energy_minute", 1):
        report = outbox.flush(transport, time.time(), budget_s=3600)
        if report.dead or (report.error and transport.synchronous):
            raise SystemExit(f"drain failed: {report.error or 'dead letters'}")
        delivered += report.delivered
        if not transport.synchronous:
            time.sleep(0.002)
    seconds = time.perf_counter() - started
    transport.close()
    outbox.store.close()
    return delivered, seconds


def main() -> int:
    """Run the parts and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="agent measurement window")
    parser.add_argument("--aggregates", type=int, default=20_000, help="outbox size to drain")
    parser.add_argument("--sink", action="store_true", help="deliver to a local HTTP sink")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the figures only
    with tempfile.TemporaryDirectory(prefix="patio-bench-edge-") as tmp:
        folder = Path(tmp)
        key = NamedKey.generate(AGENT_DEVICE)
        key.save(folder / "device.key")
        gateway = sink = broker = None
        try:
            if not args.sink and (REPO / "gateway" / "app.py").exists():
                if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
                    broker = Broker(folder / "mosquitto")
                    broker.start()
                gateway = RealGateway(folder / "gateway", mqtt_port=broker.port if broker else None)
                gateway.folder.mkdir()
                gateway.create_token()
                gateway.start()
                gateway.register(COMMUNITY, AGENT_DEVICE, key.public_key_b64)
                for device in (HTTP_DEVICE, MQTT_DEVICE):
                    gateway.admin(
                        "/v1/devices",
                        {"id": device, "community_id": COMMUNITY, "public_key": key.public_key_b64},
                    )
                url, target = gateway.url, "the real gateway (patio gateway serve, SQLite)"
            else:
                sink = Sink()
                url, target = sink.url, "a local HTTP sink that answers 'accepted' (no gateway)"

            usage = agent_footprint(folder, url, args.seconds)
            print(f"agent: 8 simulated sensors at 1 Hz for {args.seconds:.0f} s, to {target}")
            print(f"  peak RSS {usage['rss_mb']:.1f} MB (target <= 60 MB)")
            print(f"  CPU {usage['cpu_percent']:.2f} % of one core (target <= 3 %)")
            print(f"  {usage['samples_per_s']:.1f} samples stored per second, "
                  f"{usage['acked']:.0f} minutes acknowledged")  # fmt: skip

            outbox, fill_rate = fill_outbox(folder, HTTP_DEVICE, args.aggregates)
            print(
                f"outbox filled as during an outage: {fill_rate:.0f} aggregates/s signed and stored"
            )
            delivered, seconds = drain(
                outbox, EntriesTransport(url=url, batch_size=1000, timeout_s=120)
            )
            print(f"drain over HTTP, batches of 1000, to {target}")
            print(f"  {delivered} aggregates in {seconds:.2f} s: {delivered / seconds:.0f}/s"
                  " (target >= 5000/s)")  # fmt: skip

            if broker is not None:
                outbox, _ = fill_outbox(folder, MQTT_DEVICE, args.aggregates)
                mqtt = MqttTransport(
                    host="127.0.0.1",
                    port=broker.port,
                    community=COMMUNITY,
                    device_id=MQTT_DEVICE,
                    window=1000,
                    ack_timeout_s=600,
                )
                mqtt.wait_connected(10)
                delivered, seconds = drain(outbox, mqtt)
                print(f"drain over MQTT, QoS 1, window 1000, docker/mosquitto.conf, to {target}")
                print(f"  {delivered} aggregates in {seconds:.2f} s: {delivered / seconds:.0f}/s")
        finally:
            if gateway is not None:
                gateway.stop()
            if sink is not None:
                sink.stop()
            if broker is not None:
                broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
