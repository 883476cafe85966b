"""`patio demo`: the gateway and a demo community fed by simulated edge agents, with 30 days
of back-filled history, until Ctrl-C or SIGTERM stops everything it started.

Each device's history is made by its own edge agent (`edge.agent.Agent`: the simulator
driver, minute aggregation, signing, the outbox and the HTTP transport), stepped through
the past at full speed by `python -m gateway.demo back-fill`, then `patio edge run`
continues on the same edge database in real time."""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import IO, Any

import httpx

from ledger.cli import EXIT_FAILED, EXIT_OK, CommandError
from ledger.keys import NamedKey

BACK_FILL_SECONDS_PER_FLUSH = 1000 * 60  # a batch of 1,000 minutes per POST /v1/entries
COMMUNITY = {"id": "demo-hoa", "name": "Calle Mayor 5", "time_zone": "Europe/Madrid"}
HISTORY = timedelta(days=30)
TARIFF = "es-2.0td"  # shipped in contracts/energy/tariffs/
CONTRACTED_KW = {"P1": "15", "P2": "15"}
SAMPLE_INTERVAL_S = 20  # the live agents'
BACK_FILL_STEP_S = 60  # history: one sample a minute (a third of the work of every 20 s)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LIVE_WITHIN = timedelta(minutes=3)  # a device whose newest minute is this recent is live


@dataclass(frozen=True)
class DemoDevice:
    """One simulated device: its id, device type, edge sensor and simulator options."""

    id: str
    type: str
    sensor: str
    kind: str
    options: str = ""


DEVICES = (
    DemoDevice("solar-roof", "solar_simulator", "solar", "solar", "peak_w = 9000"),
    DemoDevice("flat-1a", "household_simulator", "house", "household", "base_w = 220"),
    DemoDevice("flat-1b", "household_simulator", "house", "household", "base_w = 160"),
    DemoDevice("flat-2a", "household_simulator", "house", "household", "base_w = 300"),
    DemoDevice("boiler-1", "boiler_simulator", "boiler", "boiler"),
)


def _die_with_parent() -> None:
    """Children get SIGTERM if the demo dies without stopping them (a `kill -9`)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Demo:
    """The processes the demo started, so that one stop ends them all."""

    def __init__(self, data_dir: Path, host: str, port: int) -> None:
        self.data_dir = data_dir
        self.url = f"http://{host}:{port}"
        self.host, self.port = host, port
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: list[IO[bytes]] = []
        self.stopping = threading.Event()
        self.env = {**os.environ, "PATIO_DATA_DIR": str(data_dir / "gateway")}

    def spawn(self, name: str, *args: str, module: bool = False) -> subprocess.Popen[bytes]:
        """Start `patio ARGS` (or `python -m ARGS`), its output in logs/NAME.log."""
        log = (self.data_dir / "logs" / f"{name}.log").open("ab")
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", *([] if module else ["ledger.cli"]), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # one prctl call: safe between fork and exec
        )
        self.processes.append((name, process))
        return process

    def check_children(self) -> None:
        """A child that exited on its own ends the demo: say which, and where its log is."""
        for name, process in self.processes:
            if process.poll() is not None:
                log = self.data_dir / "logs" / f"{name}.log"
                raise CommandError(f"{name} exited with {process.returncode}; see {log}")

    def wait_ready(self, client: httpx.Client) -> None:
        """Until GET /readyz answers 200 (polled: the gateway has no other signal)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.stopping.is_set():
            self.check_children()
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise CommandError(f"the gateway did not become ready within {READY_TIMEOUT_S} s")
            self.stopping.wait(0.1)

    def stop(self) -> None:
        """SIGTERM the agents, then the gateway (it stops its writer); SIGKILL any laggard."""
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _name, process in reversed(self.processes):
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


def admin_token(demo: Demo) -> str:
    """A new admin token for the demo's gateway (`patio admin create-token`)."""
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "admin", "create-token"],
        env=demo.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(f"patio admin create-token failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


def created(reply: httpx.Response) -> None:
    """201, or 409 when an earlier run of the demo registered it already."""
    if reply.status_code not in (201, 409):
        raise CommandError(f"{reply.request.url.path}: {reply.status_code} {reply.text}")


def edge_config(demo: Demo, device: DemoDevice, seed: int) -> Path:
    """The device's key (kept across runs, as its edge database is) and edge.toml."""
    folder = demo.data_dir / "edge" / device.id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = folder / "device.key"
    if not key_file.exists():
        NamedKey.generate(device.id).save(key_file)
    config = folder / "edge.toml"  # rewritten each run: the port may differ
    config.write_text(
        f'device_id = "{device.id}"\n'
        f'community = "{COMMUNITY["id"]}"\n'
        'key_file = "device.key"\n'
        'data_dir = "."\n'
        "[delivery]\n"
        'transport = "http"\n'
        f'url = "{demo.url}"\n'
        "batch_size = 1000\n"
        "[[sensor]]\n"
        'driver = "simulator"\n'
        f'name = "{device.sensor}"\n'
        f'kind = "{device.kind}"\n'
        f"seed = {seed}\n"
        f"interval_s = {SAMPLE_INTERVAL_S}\n"
        f"{device.options}\n"
    )
    return config


def register(demo: Demo, client: httpx.Client) -> None:
    """The community and its devices, each by its device type (idempotent across runs)."""
    created(client.post("/v1/communities", json=COMMUNITY))
    for seed, device in enumerate(DEVICES, start=1):
        config = edge_config(demo, device, seed)
        key = NamedKey.load(config.parent / "device.key")
        body: dict[str, Any] = {
            "id": device.id,
            "community_id": COMMUNITY["id"],
            "public_key": key.public_key_b64,
            "type": device.type,
            "sensor": device.sensor,
        }
        if device.kind != "boiler":
            # The simulator types declare both the W gauge and the Wh counter of one sensor
            # with the energy role, so reports and /latest would count its energy twice:
            # the counter is the energy, the gauge is shown but not summed.
            gauge = {"role": "other", "unit": "W"}
            body["profile"] = {"sensors": {f"{device.sensor}_w": gauge}}
        created(client.post("/v1/devices", json=body))
    tariff_path = f"/v1/communities/{COMMUNITY['id']}/tariff"
    if client.get(tariff_path).status_code == 404:  # not set by an earlier run
        document = json.loads(
            (resources.files("contracts.energy") / "tariffs" / f"{TARIFF}.json").read_text()
        )
        reply = client.put(tariff_path, json={"tariff": document, "contracted_kW": CONTRACTED_KW})
        if reply.status_code != 200:
            raise CommandError(f"{tariff_path}: {reply.status_code} {reply.text}")


def read_key(client: httpx.Client) -> str:
    """An app key that reads the demo community only."""
    reply = client.post(
        "/v1/apps", json={"name": "demo dashboard", "scopes": [f"read:{COMMUNITY['id']}"]}
    )
    reply.raise_for_status()
    key: str = reply.json()["api_key"]
    return key


def newest_minutes(client: httpx.Client) -> dict[str, datetime]:
    """Each device's newest minute on the log (GET /v1/communities/{id}/latest)."""
    reply = client.get(f"/v1/communities/{COMMUNITY['id']}/latest")
    reply.raise_for_status()
    return {
        d["device_id"]: datetime.fromisoformat(d["start"].replace("Z", "+00:00"))
        for d in reply.json()["devices"]
    }


def config_of(demo: Demo, device: DemoDevice) -> Path:
    """The device's edge.toml."""
    return demo.data_dir / "edge" / device.id / "edge.toml"


def follow_back_fill(
    demo: Demo,
    client: httpx.Client,
    back_fills: dict[DemoDevice, subprocess.Popen[bytes]],
    began: float,
) -> None:
    """Start each device's live agent once its history is in; say how far they are until
    every device is live, then how long it took."""
    said = -1
    while not demo.stopping.is_set():
        for device, process in list(back_fills.items()):
            if process.poll() is None:
                continue
            demo.processes.remove((f"{device.id}-back-fill", process))
            del back_fills[device]
            if process.returncode != 0:
                log = demo.data_dir / "logs" / f"{device.id}-back-fill.log"
                raise CommandError(f"the back-fill of {device.id} failed; see {log}")
            demo.spawn(device.id, "edge", "run", "--config", str(config_of(demo, device)))
        demo.check_children()
        newest = newest_minutes(client)
        now = datetime.now(UTC)
        if (
            not back_fills
            and len(newest) == len(DEVICES)
            and min(newest.values()) >= now - LIVE_WITHIN
        ):
            took = time.monotonic() - began
            print(f"back-filled {HISTORY.days} days of {len(DEVICES)} devices in {took:.0f} s; "
                  "live now. Ctrl-C stops everything.", flush=True)  # fmt: skip
            return
        oldest = min(newest.values(), default=now - HISTORY)
        days = max(0, (now - oldest).days)
        if days != said and days % 5 == 0:
            print(f"back-filling: {days} days to go", flush=True)
            said = days
        demo.stopping.wait(1.0)


def run(data_dir: Path, host: str, port: int) -> int:
    """Start everything, print where to look, wait for Ctrl-C or SIGTERM, stop everything."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "logs").mkdir(exist_ok=True, mode=0o700)
    demo = Demo(data_dir, host, port)

    def stop(signum: int, frame: Any) -> None:
        demo.stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    began = time.monotonic()
    try:
        token = admin_token(demo)
        demo.spawn("gateway", "gateway", "serve", "--host", host, "--port", str(port))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=demo.url, headers=headers, timeout=30) as client:
            demo.wait_ready(client)
            register(demo, client)
            key = read_key(client)
            back_fills = {
                device: demo.spawn(f"{device.id}-back-fill", "gateway.demo", "back-fill",
                                   str(config_of(demo, device)), module=True)
                for device in DEVICES
            }  # fmt: skip
            print(
                f"Patio demo: community {COMMUNITY['id']} ({COMMUNITY['name']}), "
                f"{len(DEVICES)} simulated edge agents, data in {data_dir}\n"
                f"  dashboard    {demo.url}/?community={COMMUNITY['id']}\n"
                f"  read key     {key}\n"
                f"  admin token  {token}\n"
                f"ready after {time.monotonic() - began:.1f} s; "
                f"back-filling {HISTORY.days} days through POST /v1/entries",
                flush=True,
            )
            follow_back_fill(demo, client, back_fills, began)
            while not demo.stopping.wait(1.0):
                demo.check_children()
    except (CommandError, httpx.HTTPError) as exc:
        if not demo.stopping.is_set():  # else: a child saw the same Ctrl-C first
            demo.stop()
            print(f"patio: demo: {exc}", file=sys.stderr)
            return EXIT_FAILED
    finally:
        demo.stop()
    print("demo stopped", flush=True)
    return EXIT_OK


def back_fill(config_path: Path) -> int:
    """Step one device's edge agent through its missing history at full speed: sample every
    BACK_FILL_STEP_S of simulated time, aggregate each closed minute, sign, and deliver a
    batch of 1,000 minutes per POST; from the agent's cursor (a restart fills the gap) or
    30 days ago, up to now."""
    from edge.agent import CURSOR, Agent
    from edge.clock import SystemClock
    from edge.config import load_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops its children with SIGTERM
    config = load_config(config_path)
    agent = Agent(config=config, clock=SystemClock())
    # Simulated history: no fsync per commit (4x faster); WAL still survives a crash of the
    # process, and the live agent that follows goes back to synchronous=FULL.
    agent.store.connection.execute("PRAGMA synchronous=NORMAL")
    try:
        cursor = agent.store.get_state(CURSOR)
        since = int(cursor) / 1000 if cursor else time.time() - HISTORY.total_seconds()
        t = math.ceil(max(since, time.time() - HISTORY.total_seconds()) / BACK_FILL_STEP_S)
        t *= BACK_FILL_STEP_S
        next_flush = t + BACK_FILL_SECONDS_PER_FLUSH
        while t <= time.time() - BACK_FILL_STEP_S:
            agent.sample(t)
            if t % 60 == 0:  # a minute ended: aggregate it (and sign it into the outbox)
                agent.aggregate(t)
            if t >= next_flush:
                deliver(agent, t)
                next_flush = t + BACK_FILL_SECONDS_PER_FLUSH
            t += BACK_FILL_STEP_S
        deliver(agent, time.time())
    finally:
        agent.close()
    return EXIT_OK


def deliver(agent: Any, now: float) -> None:
    """Flush the agent's outbox until it is empty; a refusal or failure ends the back-fill."""
    while True:
        report = agent.outbox.flush(agent.transport, now, budget_s=60.0)
        if report.error is not None or report.dead:
            raise SystemExit(f"back-fill of {agent.config.device_id}: {report}")
        if report.delivered == 0:
            return


if __name__ == "__main__":
    if sys.argv[1:2] != ["back-fill"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m gateway.demo back-fill EDGE_TOML")
    sys.exit(back_fill(Path(sys.argv[2])))
