"""Test doubles for the edge agent: a clock, sysfs and I2C fakes, a gateway, a broker."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ledger.encoding import canonical_json, parse_json
from ledger.errors import LedgerError
from ledger.keys import decode_public_key, verify_signature
from tests.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
MOSQUITTO_CONF = REPO / "docker" / "mosquitto.conf"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        """The current simulated time."""
        return self.t

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Tests drive `step()` themselves; waiting is instantaneous."""


# TOML writing (the standard library only reads TOML).


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(document: Mapping[str, Any]) -> str:
    """A TOML document with scalars, tables and arrays of tables (enough for edge.toml)."""
    lines = [
        f"{k} = {_toml_value(v)}" for k, v in document.items() if not isinstance(v, dict | list)
    ]
    for key, value in document.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for table in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# 1-Wire sysfs.


def ds18b20_crc(data: bytes) -> int:
    """Dallas/Maxim CRC-8 (polynomial x^8 + x^5 + x^4 + 1, reflected 0x8C)."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def w1_slave_text(celsius: float, *, crc_ok: bool = True) -> str:
    """What the kernel's w1_therm driver prints for a DS18B20 scratchpad reading."""
    raw = round(celsius * 16) & 0xFFFF
    scratch = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    crc = ds18b20_crc(scratch)
    stored = crc if crc_ok else crc ^ 0x5A
    hexes = " ".join(f"{b:02x}" for b in [*scratch, stored])
    verdict = "YES" if crc_ok else "NO"
    return f"{hexes} : crc={stored:02x} {verdict}\n{hexes} t={round(celsius * 1000)}\n"


class W1Tree:
    """A fake /sys/bus/w1/devices folder with DS18B20 slaves the test can plug and unplug."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)

    def set(self, serial: str, celsius: float, *, crc_ok: bool = True) -> None:
        """Plug the sensor in (if needed) and set its next reading."""
        folder = self.base / f"28-{serial}"
        folder.mkdir(exist_ok=True)
        (folder / "w1_slave").write_text(w1_slave_text(celsius, crc_ok=crc_ok))

    def raw(self, serial: str, text: str) -> None:
        """Write arbitrary w1_slave content."""
        folder = self.base / f"28-{serial}"
        folder.mkdir(exist_ok=True)
        (folder / "w1_slave").write_text(text)

    def unplug(self, serial: str) -> None:
        """The kernel removes the slave folder when the sensor stops answering."""
        shutil.rmtree(self.base / f"28-{serial}", ignore_errors=True)


# ADS1115 on I2C, written from TI's datasheet (SBAS444, "Register Map") and not from the
# driver: a wrong code in the driver then reads the wrong pins, range or rate here.

ADS1115_CONFIG_RESET = 0x8583  # the config register after power-up
ADS1115_INPUTS = {  # MUX[14:12]: (AINP, AINN); AINN None is GND (single-ended)
    0b000: ("AIN0", "AIN1"), 0b001: ("AIN0", "AIN3"), 0b010: ("AIN1", "AIN3"),
    0b011: ("AIN2", "AIN3"), 0b100: ("AIN0", None), 0b101: ("AIN1", None),
    0b110: ("AIN2", None), 0b111: ("AIN3", None),
}  # fmt: skip
ADS1115_FULL_SCALE_V = {  # PGA[11:9]: +-FSR; 110 and 111 are +-0.256 V too
    0b000: 6.144, 0b001: 4.096, 0b010: 2.048, 0b011: 1.024,
    0b100: 0.512, 0b101: 0.256, 0b110: 0.256, 0b111: 0.256,
}  # fmt: skip
ADS1115_RATES = {  # DR[7:5]: samples per second
    0b000: 8, 0b001: 16, 0b010: 32, 0b011: 64, 0b100: 128, 0b101: 250, 0b110: 475, 0b111: 860,
}  # fmt: skip

Signal = Any  # Callable[[float], float]: volts on a pin at a time in seconds


@dataclass(frozen=True)
class ADS1115Config:
    """The config register's fields, bits 15..0."""

    os: int  # 15: write 1 starts a single-shot conversion; reads 0 while converting
    mux: int  # 14:12
    pga: int  # 11:9
    mode: int  # 8: 0 continuous, 1 single-shot or power-down
    dr: int  # 7:5
    comp_mode: int  # 4: 0 traditional, 1 window
    comp_pol: int  # 3: ALERT/RDY active low (0) or high (1)
    comp_lat: int  # 2: latching comparator
    comp_que: int  # 1:0: 11 disables the comparator, ALERT/RDY high impedance

    @classmethod
    def decode(cls, word: int) -> ADS1115Config:
        """Split a 16-bit register value into its fields."""
        assert 0 <= word <= 0xFFFF
        return cls(
            os=word >> 15 & 1,
            mux=word >> 12 & 0b111,
            pga=word >> 9 & 0b111,
            mode=word >> 8 & 1,
            dr=word >> 5 & 0b111,
            comp_mode=word >> 4 & 1,
            comp_pol=word >> 3 & 1,
            comp_lat=word >> 2 & 1,
            comp_que=word & 0b11,
        )

    @property
    def pins(self) -> tuple[str, str | None]:
        """The positive and negative inputs the multiplexer selects."""
        return ADS1115_INPUTS[self.mux]

    @property
    def full_scale_v(self) -> float:
        """The programmable gain amplifier's full-scale range, +- volts."""
        return ADS1115_FULL_SCALE_V[self.pga]

    @property
    def rate(self) -> int:
        """Samples per second."""
        return ADS1115_RATES[self.dr]


class FakeADS1115Bus:
    """An SMBus with one ADS1115 whose analog inputs are signals of time.

    `pins` maps AIN0..AIN3 to volts as a function of seconds (an unlisted pin is tied to
    GND). Time moves only by `sleep` (pass it to the driver as its sleep). In continuous
    mode conversion k samples the selected inputs at k / rate after the config write and
    is ready one period later; the conversion register holds the latest ready one, 16-bit
    two's complement with 1 LSB = FSR / 2**15, clipped to 0x8000..0x7FFF. `sampled` lists
    the conversion each read returned (None: the value held from before the config write).
    """

    def __init__(
        self,
        pins: Mapping[str, Signal],
        *,
        address: int = 0x48,
        vdd: float = 3.3,
        noise_counts: int = 0,
        seed: int = 1,
    ) -> None:
        import random

        assert set(pins) <= {"AIN0", "AIN1", "AIN2", "AIN3"}, sorted(pins)
        self.pins = dict(pins)
        self.address = address
        self.vdd = vdd
        self.noise_counts = noise_counts
        self.rng = random.Random(seed)
        self.t = 0.0
        self.registers = {0b00: 0x0000, 0b01: ADS1115_CONFIG_RESET, 0b10: 0x8000, 0b11: 0x7FFF}
        self.started: float | None = None  # when continuous conversions (re)started
        self.single_shot_done: float | None = None  # a single-shot conversion under way
        self.sampled: list[int | None] = []
        self.writes: list[tuple[int, list[int]]] = []
        self.fail = False
        self.closed = False

    @property
    def config(self) -> ADS1115Config:
        """The config register as last written."""
        return ADS1115Config.decode(self.registers[0b01])

    def sleep(self, seconds: float) -> None:
        """Let time pass."""
        self.t += seconds

    def volts(self, pin: str | None, t: float) -> float:
        """A pin's voltage; the datasheet's absolute maximum is GND - 0.3 V to VDD + 0.3 V."""
        if pin is None:
            return 0.0
        signal = self.pins.get(pin)
        volts = 0.0 if signal is None else float(signal(t))
        assert -0.3 <= volts <= self.vdd + 0.3, f"{pin} at {volts} V would damage the ADC"
        return volts

    def convert(self, t: float) -> int:
        """One conversion of the selected inputs at time `t`, as a register value."""
        config = self.config
        positive, negative = config.pins
        volts = self.volts(positive, t) - self.volts(negative, t)
        count = round(volts / config.full_scale_v * 32768)
        count += self.rng.randint(-self.noise_counts, self.noise_counts)
        return max(-32768, min(32767, count)) & 0xFFFF

    def _settle(self) -> None:
        """Bring the conversion register up to the present."""
        config = self.config
        if config.mode == 0 and self.started is not None:
            # A tolerance of a microsecond for the sum of the driver's sleeps.
            ready = math.floor((self.t - self.started) * config.rate + 1e-6)
            if ready >= 1:
                self.registers[0b00] = self.convert(self.started + (ready - 1) / config.rate)
                self.sampled.append(ready - 1)
                return
        elif self.single_shot_done is not None and self.t >= self.single_shot_done:
            self.registers[0b00] = self.convert(self.single_shot_done - 1 / config.rate)
            self.single_shot_done = None
            self.sampled.append(0)
            return
        self.sampled.append(None)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        """The pointer byte, then a 16-bit register value MSB first."""
        self._check(i2c_addr, register)
        self.writes.append((register, list(data)))
        assert len(data) == 2 and all(0 <= b <= 0xFF for b in data), data
        assert register != 0b00, "the conversion register is read-only"
        word = data[0] << 8 | data[1]
        if register != 0b01:
            self.registers[register] = word
            return
        # OS is a command when written: 1 starts a conversion in single-shot mode.
        self.registers[0b01] = word & 0x7FFF | 0x8000
        config = self.config
        if config.mode == 0:
            self.started, self.single_shot_done = self.t, None
        else:
            self.started = None
            if word >> 15:
                self.single_shot_done = self.t + 1 / config.rate

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """The pointer byte, then the register's 16 bits MSB first."""
        self._check(i2c_addr, register)
        assert length == 2, "every ADS1115 register is 16 bits"
        if register == 0b00:
            self._settle()
        word = self.registers[register]
        if register == 0b01:
            converting = self.config.mode == 0 or (
                self.single_shot_done is not None and self.t < self.single_shot_done
            )
            word = word & 0x7FFF | (0 if converting else 0x8000)
        return [word >> 8, word & 0xFF]

    def _check(self, i2c_addr: int, register: int) -> None:
        if self.fail:
            raise OSError(121, "Remote I/O error")  # what smbus2 raises for a NACK
        assert i2c_addr == self.address
        assert register in self.registers, f"pointer bits 7:2 are reserved (0): {register:#x}"

    def close(self) -> None:
        """Release."""
        self.closed = True


def clamp_signal(
    amps_rms: float,
    *,
    bias_v: float = 0.0,
    mains_hz: float = 50.0,
    amps_per_volt: float = 30.0,
    third_harmonic: float = 0.0,
) -> Signal:
    """The voltage an SCT-013 clamp puts on its pin for a load current.

    A 50 Hz sine (optionally with a 3rd harmonic, as motors draw) of the given RMS
    current through the clamp's volts per amp, on a DC bias.
    """
    peak = amps_rms * math.sqrt(2) / math.sqrt(1 + third_harmonic**2) / amps_per_volt

    def volts(t: float) -> float:
        return bias_v + peak * (
            math.sin(2 * math.pi * mains_hz * t)
            + third_harmonic * math.sin(2 * math.pi * 3 * mains_hz * t)
        )

    return volts


# A gateway that implements the pinned HTTP surface, for transport and crash tests.


@dataclass
class FakeGateway:
    """POST /v1/entries, POST /api/patio_save_energy and GET /v1/entries, in memory.

    Verifies device signatures, answers duplicates idempotently and refuses conflicts,
    as DESIGN.md pins. Knobs: `down` (503 for everything), `fail_next` (a status for the
    next N requests), `reject_seqs` (per-envelope "rejected"), `hold` (commit, then wait
    for `release` before answering: a crash window).
    """

    keys: dict[str, str]  # device id -> base64 public key
    entries: dict[tuple[str, int], bytes] = field(default_factory=dict)
    order: list[tuple[str, int]] = field(default_factory=list)
    conflicts: list[tuple[str, int]] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)  # (path, envelope count)
    down: bool = False
    fail_next: list[int] = field(default_factory=list)
    reject_seqs: set[int] = field(default_factory=set)
    bad_request_seqs: set[int] = field(default_factory=set)
    retry_after: int | None = None
    hold: bool = False
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def tag(self, device: str, seq: int) -> str:
        """The log tag the fake hands out: content-derived like the real one."""
        digest = hashlib.sha256(b"\x00" + self.entries[(device, seq)]).hexdigest()
        return "c274b5" + digest

    def record(self, device: str, seq: int, signed: Any, sig: str) -> dict[str, Any]:
        """Check and store one signed submission; the per-envelope result."""
        key = self.keys.get(device)
        if key is None:
            return {"status": "rejected", "log_tag_id": None, "error": f"unknown device {device}"}
        try:
            verify_signature(decode_public_key(key), canonical_json(signed), sig)
        except LedgerError as exc:
            return {"status": "rejected", "log_tag_id": None, "error": str(exc)}
        if seq in self.reject_seqs:
            return {"status": "rejected", "log_tag_id": None, "error": "refused by the test"}
        data = canonical_json({"payload": signed, "sig": sig})
        with self.lock:
            known = self.entries.get((device, seq))
            if known is None:
                self.entries[(device, seq)] = data
                self.order.append((device, seq))
                return {"status": "accepted", "log_tag_id": self.tag(device, seq), "error": None}
            if known == data:
                return {"status": "duplicate", "log_tag_id": self.tag(device, seq), "error": None}
            self.conflicts.append((device, seq))
            return {"status": "rejected", "log_tag_id": self.tag(device, seq), "error": "conflict"}

    def payloads(self, device: str) -> list[dict[str, Any]]:
        """Recorded payloads of a device, in arrival order."""
        with self.lock:
            return [json.loads(self.entries[k])["payload"] for k in self.order if k[0] == device]

    @contextlib.contextmanager
    def serve(self) -> Iterator[FakeGateway]:
        """Run on a free port in a thread."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(
                self, status: int, body: Any, kind: str = "application/json", code: int = 200
            ) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", kind)
                    if code in (429, 503) and gateway.retry_after is not None:
                        self.send_header("retry-after", str(gateway.retry_after))
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client died while we held the answer

            def _problem(self, status: int, detail: str) -> None:
                self._send(
                    status,
                    {"title": "refused", "status": status, "detail": detail},
                    "application/problem+json",
                    status,
                )

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                device = query.get("device", [""])[0]
                self._send(200, {"entries": [{"payload": p} for p in gateway.payloads(device)]})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    request = parse_json(body, what="request")
                except LedgerError as exc:
                    self._problem(400, str(exc))
                    return
                if self.path == "/v1/entries":
                    count = len(request.get("envelopes", []))
                elif self.path == "/api/patio_save_energy":
                    count = 1
                else:
                    self._problem(404, "no such route")
                    return
                gateway.requests.append((self.path, count))
                if gateway.down:
                    self._problem(503, "gateway is down")
                    return
                if gateway.fail_next:
                    self._problem(gateway.fail_next.pop(0), "failing on purpose")
                    return
                if self.path == "/v1/entries":
                    self._entries(request)
                else:
                    self._legacy(request)

            def _entries(self, request: dict[str, Any]) -> None:
                envelopes = request["envelopes"]
                if request.get("contract") != "energy_minute" or len(envelopes) > 1000:
                    self._problem(400, "bad batch")
                    return
                if any(e["payload"]["seq"] in gateway.bad_request_seqs for e in envelopes):
                    self._problem(422, "envelope does not match the energy_minute schema")
                    return
                results = [
                    gateway.record(
                        e["payload"]["device_id"], e["payload"]["seq"], e["payload"], e["sig"]
                    )
                    for e in envelopes
                ]
                self._finish(200, {"results": results})

            def _legacy(self, request: dict[str, Any]) -> None:
                keys = request["keys"]
                data = request["data"]["dataToStore"]
                signed = {"device_id": keys["device_id"], "seq": keys["seq"], "dataToStore": data}
                result = gateway.record(keys["device_id"], keys["seq"], signed, keys["sig"])
                if result["status"] == "rejected":
                    if result["error"] == "conflict":  # as the gateway answers a conflict
                        body = {
                            "title": "Conflict",
                            "status": 409,
                            "detail": "other bytes",
                            "log_tag_id": result["log_tag_id"],
                        }
                        self._send(409, body, "application/problem+json", 409)
                    else:
                        self._problem(403, result["error"])
                    return
                self._finish(200, {"dataToStore": data, "log_tag": result["log_tag_id"]})

            def _finish(self, status: int, body: Any) -> None:
                if gateway.hold:
                    gateway.held.set()  # committed; the answer waits: a crash window
                    gateway.release.wait(30)
                self._send(status, body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            server.shutdown()
            server.server_close()


# Mosquitto, started from docker/mosquitto.conf.


class Broker:
    """A private Mosquitto from the project's config on a free port; kill and restart it."""

    def __init__(self, folder: Path, overrides: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        overrides = dict(overrides or {})
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for line in MOSQUITTO_CONF.read_text().splitlines():
            if line.startswith("listener "):
                line = f"listener {self.port} 127.0.0.1"
            elif line.startswith("persistence_location "):
                line = f"persistence_location {folder}/"
            elif line.startswith("log_dest "):
                line = f"log_dest file {folder}/mosquitto.log"
            elif line.split(" ", 1)[0] in overrides:
                name = line.split(" ", 1)[0]
                line = f"{name} {overrides.pop(name)}"
            lines.append(line)
        assert not overrides, f"{sorted(overrides)} are not in docker/mosquitto.conf"
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto", who cannot write here
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @staticmethod
    def require() -> str:
        """The mosquitto binary, or skip (fail under PATIO_REQUIRE_SERVICES=1)."""
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
        )
        if binary is None:
            reason = "the mosquitto binary is not installed (apt-get install mosquitto)"
            if os.environ.get("PATIO_REQUIRE_SERVICES") == "1":
                pytest.fail(f"{reason}; PATIO_REQUIRE_SERVICES=1 demands it")
            pytest.skip(reason)
        return binary

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        process = self.process = subprocess.Popen([self.require(), "-c", str(self.conf)])

        def listening() -> bool:
            if process.poll() is not None:
                log = (self.folder / "mosquitto.log").read_text(errors="replace")[-500:]
                pytest.fail(f"mosquitto exited: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(listening, 10, "mosquitto to accept connections")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it: SIGTERM saves its persistence file, SIGKILL does not."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None


class LedgerSubmissions:
    """`gateway.submissions.Submissions` as MqttIngest sees it, over a FakeGateway's store."""

    def __init__(self, gateway: FakeGateway, communities: Mapping[str, str]) -> None:
        self.gateway = gateway
        self.communities = dict(communities)
        self.calls = 0
        self.envelopes = 0
        self.fault: Exception | None = None

    def submit(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """One result per envelope, as POST /v1/entries answers."""
        self.calls += 1
        self.envelopes += len(envelopes)
        if self.fault is not None:
            raise self.fault
        assert contract == "energy_minute"
        results = []
        for envelope in envelopes:
            payload = envelope["payload"]
            device = payload["device_id"]
            if community is not None and self.communities.get(device) != community:
                results.append(
                    {
                        "status": "rejected",
                        "log_tag_id": None,
                        "error": f"device {device} is not in community {community}",
                    }
                )
                continue
            results.append(self.gateway.record(device, payload["seq"], payload, envelope["sig"]))
        return results


# The real gateway (`patio gateway serve`) in a subprocess.

PATIO = REPO / ".venv" / "bin" / "patio"


class RealGateway:
    """`patio gateway serve` on a free port with its own data folder; stop and start it."""

    def __init__(self, folder: Path, *, mqtt_port: int | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, PATIO_DATA_DIR=str(folder), PATIO_SEAL_INTERVAL="1")
        self.env.pop("PATIO_DATABASE_URL", None)
        if mqtt_port is not None:
            self.env["PATIO_MQTT_URL"] = f"mqtt://127.0.0.1:{mqtt_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    @staticmethod
    def require() -> None:
        """Skip when the gateway package is not in this checkout."""
        if not (REPO / "gateway" / "app.py").exists():
            pytest.skip("gateway/app.py is not in this checkout yet")

    def create_token(self) -> str:
        """`patio admin create-token`: the token is the last stdout line."""
        done = subprocess.run(
            [str(PATIO), "admin", "create-token"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.token = done.stdout.strip().splitlines()[-1]
        return self.token

    def start(self) -> None:
        """Serve, and wait until /readyz answers."""
        import httpx

        log = (self.folder / "gateway.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(PATIO),
                "gateway",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                tail = (self.folder / "gateway.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the gateway exited: {tail}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "the gateway's /readyz", interval=0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def admin(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST an admin route with the bearer token."""
        import httpx

        response = httpx.post(
            f"{self.url}{path}",
            json=dict(body),
            timeout=10,
            headers={"authorization": f"Bearer {self.token}"},
        )
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    def register(self, community: str, device: str, public_key: str) -> None:
        """Create the community and register the device's key."""
        self.admin("/v1/communities", {"id": community, "name": f"HOA {community}"})
        self.admin(
            "/v1/devices", {"id": device, "community_id": community, "public_key": public_key}
        )

    def payloads(self, device: str) -> list[dict[str, Any]]:
        """Every ledger entry of a device (GET /v1/entries?device=...), all pages."""
        import httpx

        found: list[dict[str, Any]] = []
        cursor = -1
        while True:
            response = httpx.get(
                f"{self.url}/v1/entries",
                timeout=30,
                params={"device": device, "cursor": cursor, "limit": 1000},
                headers={"authorization": f"Bearer {self.token}"},
            )
            assert response.status_code == 200, response.text
            page = response.json()
            found += [item["entry"]["payload"] for item in page["entries"]]
            if page["next_cursor"] is None:
                return found
            cursor = page["next_cursor"]


class HoldingProxy:
    """An HTTP relay in front of a gateway that can hold an answer after the gateway
    committed it: the window in which `kill -9` hits an agent mid-flush."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.url = ""

    @contextlib.contextmanager
    def serve(self) -> Iterator[HoldingProxy]:
        """Relay on a free port in a thread."""
        import httpx

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                answer = httpx.post(
                    proxy.upstream + self.path,
                    content=body,
                    timeout=30,
                    headers={"content-type": "application/json"},
                )
                if proxy.hold:
                    proxy.held.set()  # the gateway has committed; the agent waits
                    proxy.release.wait(30)
                try:
                    self.send_response(answer.status_code)
                    self.send_header("content-type", answer.headers.get("content-type", ""))
                    self.send_header("content-length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            server.shutdown()
            server.server_close()
