"""`patio demo`: the gateway and a demo community fed by simulated edge agents, live within
a minute, with 30 days of history back-filled meanwhile, until Ctrl-C or SIGTERM stops
everything it started.

Each device has two agents with its own key (`edge.agent.Agent`: the simulator driver,
minute aggregation, signing, the outbox and the HTTP transport), in two edge databases:
`patio edge run` in real time from the minute the demo starts, and `python -m gateway.demo
back-fill`, which steps through the missing past at full speed, newest day first. They
never sign the same minute, and their seqs never meet: a back-filled minute's seq is its
Unix minute (start / 60 s), and the live agent counts on from the Unix minute of its first
minute, one seq per minute at most, so every seq stays at or below its minute's Unix minute
and seq order is minute order (docs/edge-recovery.md: one entry per seq, one per minute).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import httpx

from ledger.cli import EXIT_FAILED, EXIT_OK, CommandError
from ledger.keys import NamedKey

COMMUNITY = {"id": "demo-hoa", "name": "Calle Mayor 5", "time_zone": "Europe/Madrid"}
HISTORY = timedelta(days=30)
TARIFF = "es-2.0td"  # shipped in contracts/energy/tariffs/
CONTRACTED_KW = {"P1": "15", "P2": "15"}
SAMPLE_INTERVAL_S = 20  # the live agents'
MINUTE_MS = 60_000  # history: one sample a minute (a third of the work of every 20 s)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LIVE_WITHIN = timedelta(minutes=3)  # a device whose newest minute is this recent is live
RECENT_FIRST = 5  # minutes the back-fill delivers before anything else
LIVE_RUNS = "demo_live_runs"  # live edge database state: [[from_ms, to_ms or null], ...]


@dataclass(frozen=True)
class DemoDevice:
    """One simulated device: its id, device type, edge sensor and simulator options."""

    id: str
    type: str
    sensor: str
    kind: str
    seed: int
    options: str = ""


BEHIND_THE_METER = (
    DemoDevice("solar-roof", "solar_simulator", "solar", "solar", 1, "peak_w = 9000"),
    DemoDevice("flat-1a", "household_simulator", "house", "household", 2, "base_w = 220"),
    DemoDevice("flat-1b", "household_simulator", "house", "household", 3, "base_w = 160"),
    DemoDevice("flat-2a", "household_simulator", "house", "household", 4, "base_w = 300"),
)
# The meter at the building's grid connection sees the same simulated solar array and
# households (the same seeds and options): what they draw beyond the solar output is
# imported, the rest exported, so the reports' net and self-sufficiency add up.
GRID_MEMBERS = ", ".join(
    f'{{kind = "{d.kind}", seed = {d.seed}, {d.options}}}' for d in BEHIND_THE_METER
)
DEVICES = (
    *BEHIND_THE_METER,
    DemoDevice("boiler-1", "boiler_simulator", "boiler", "boiler", 5),
    DemoDevice("grid-meter", "grid_meter_simulator", "grid", "grid", 6,
               f"members = [{GRID_MEMBERS}]"),
)  # fmt: skip


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

    def spawn(
        self, name: str, *args: str, module: bool = False, progress: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start `patio ARGS` (or `python -m ARGS`), its output in logs/NAME.log (its
        standard output on the demo's when it reports `progress`)."""
        log = (self.data_dir / "logs" / f"{name}.log").open("ab")
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", *([] if module else ["ledger.cli"]), *args],
            env=self.env,
            stdout=None if progress else log,
            stderr=log if progress else subprocess.STDOUT,
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


def edge_config(demo: Demo, device: DemoDevice) -> Path:
    """The device's key (kept across runs, as its edge databases are) and edge.toml."""
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
        "[agent]\n"
        # The simulator samples in the agent's own thread: nothing stamped before a minute's
        # end is stored after it, so a minute closes at its end, not 5 s later.
        "grace_s = 0\n"
        "[delivery]\n"
        'transport = "http"\n'
        f'url = "{demo.url}"\n'
        "batch_size = 1000\n"
        "timeout_s = 60\n"  # a batch of history on a busy machine takes a while
        "[[sensor]]\n"
        'driver = "simulator"\n'
        f'name = "{device.sensor}"\n'
        f'kind = "{device.kind}"\n'
        f"seed = {device.seed}\n"
        f"interval_s = {SAMPLE_INTERVAL_S}\n"
        f"{device.options}\n"
    )
    return config


def register(demo: Demo, client: httpx.Client) -> None:
    """The community and its devices, each by its device type (idempotent across runs)."""
    created(client.post("/v1/communities", json=COMMUNITY))
    for device in DEVICES:
        config = edge_config(demo, device)
        key = NamedKey.load(config.parent / "device.key")
        body = {
            "id": device.id,
            "community_id": COMMUNITY["id"],
            "public_key": key.public_key_b64,
            "type": device.type,
            "sensor": device.sensor,
        }
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


def live_from(now: float) -> int:
    """The first minute the live agents sign (ms): this one, unless it ends within 10 s
    (too soon for them to start and sample it), then the next; the history ends before it."""
    return int((now + 10) // 60) * MINUTE_MS


def hand_over(config_path: Path, first_ms: int) -> None:
    """Set the live agent's edge database to start at minute `first_ms`: its cursor there
    (older minutes are the history's), its next seq at least that minute's Unix minute, and
    `first_ms` noted as the start of a live run, after closing the previous run at the
    cursor it reached (the history fills the minutes between runs, never a run's)."""
    from edge.agent import CURSOR
    from edge.config import load_config
    from edge.database import Store
    from edge.outbox import NEXT_SEQ

    store = Store.open(load_config(config_path).database)
    try:
        with store.transaction():
            cursor = store.get_state(CURSOR)
            runs = json.loads(store.get_state(LIVE_RUNS) or "[]")
            if cursor is not None and runs:
                runs[-1][1] = int(cursor)
            elif cursor is not None:  # written by a demo that kept history and live in one
                runs = [[0, int(cursor)]]
            first_ms = max(first_ms, int(cursor or 0))
            runs.append([first_ms, None])
            store.set_state(LIVE_RUNS, json.dumps(runs))
            store.set_state(CURSOR, str(first_ms))
            next_seq = int(store.get_state(NEXT_SEQ) or 1)
            store.set_state(NEXT_SEQ, str(max(next_seq, first_ms // MINUTE_MS)))
    finally:
        store.close()


def follow(
    demo: Demo,
    client: httpx.Client,
    back_fill: subprocess.Popen[bytes],
    first_ms: int,
    began: float,
) -> None:
    """Say when every device's live agent has delivered its first minute, and when the
    history is in."""
    live = filled = False
    first = datetime.fromtimestamp(first_ms / 1000, UTC)
    while not demo.stopping.is_set() and not (live and filled):
        if not filled and back_fill.poll() is not None:
            demo.processes.remove(("back-fill", back_fill))
            if back_fill.returncode != 0:
                log = demo.data_dir / "logs" / "back-fill.log"
                raise CommandError(f"the back-fill failed; see {log}")
            print(f"back-filled {HISTORY.days} days of {len(DEVICES)} devices "
                  f"after {time.monotonic() - began:.0f} s", flush=True)  # fmt: skip
            filled = True
        demo.check_children()
        if not live:
            newest = newest_minutes(client)
            if len(newest) == len(DEVICES) and min(newest.values()) >= first:
                took = time.monotonic() - began
                print(f"live now after {took:.0f} s: every device's agent delivers its "
                      "minutes. Ctrl-C stops everything.", flush=True)  # fmt: skip
                live = True
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
    began, started = time.monotonic(), time.time()
    try:
        token = admin_token(demo)
        demo.spawn("gateway", "gateway", "serve", "--host", host, "--port", str(port))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=demo.url, headers=headers, timeout=30) as client:
            demo.wait_ready(client)
            register(demo, client)
            first_ms = live_from(time.time())
            configs = [str(config_of(demo, device)) for device in DEVICES]
            for config in configs:
                hand_over(Path(config), first_ms)
                demo.spawn(Path(config).parent.name, "edge", "run", "--config", config)
            back_fill = demo.spawn("back-fill", "gateway.demo", "back-fill", str(first_ms),
                                   repr(started), *configs, module=True, progress=True)  # fmt: skip
            key = read_key(client)
            print(
                f"Patio demo: community {COMMUNITY['id']} ({COMMUNITY['name']}), "
                f"{len(DEVICES)} simulated edge agents, data in {data_dir}\n"
                f"  dashboard    {demo.url}/?community={COMMUNITY['id']}\n"
                f"  read key     {key}\n"
                f"  admin token  {token}\n"
                f"ready after {time.monotonic() - began:.1f} s; live agents started, "
                f"from minute {datetime.fromtimestamp(first_ms / 1000, UTC):%Y-%m-%dT%H:%M:%SZ}; "
                f"back-filling {HISTORY.days} days through POST /v1/entries, newest first",
                flush=True,
            )
            follow(demo, client, back_fill, first_ms, began)
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


class History:
    """One device's back-fill: an agent on its own edge database (`history/` beside the
    live one), sampling the simulator once a simulated minute, signing each minute with its
    Unix minute as seq, delivering through the HTTP transport."""

    def __init__(self, config_path: Path) -> None:
        from edge.agent import Agent
        from edge.clock import SystemClock
        from edge.config import load_config

        live = load_config(config_path)
        self.live_database = live.database
        config = replace(live, data_dir=live.data_dir / "history")
        self.agent = Agent(config=config, clock=SystemClock())
        # Simulated history: no fsync per commit (4x faster); WAL still survives a crash of
        # the process.
        self.agent.store.connection.execute("PRAGMA synchronous=NORMAL")
        self.channels = self.agent.store.channels()
        self.counters = [n for n, c in self.channels.items() if c.kind == "counter"]
        db = self.agent.store.connection
        self.signed = {
            row[0]
            for row in db.execute(
                "SELECT start_ms FROM outbox UNION SELECT start_ms FROM dead_letters"
            )
        }

    def live_runs(self) -> list[tuple[int, float]]:
        """The minutes the live agent signs or signed: [from, to) per run of the demo."""
        uri = f"file:{self.live_database}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (LIVE_RUNS,)).fetchone()
        runs = json.loads(row[0]) if row else []
        return [(start, math.inf if end is None else end) for start, end in runs]

    def missing(self, since_ms: int, until_ms: int, runs: list[tuple[int, float]]) -> list[int]:
        """Minutes in [since, until) that neither agent has signed."""
        return [
            m
            for m in range(since_ms, until_ms, MINUTE_MS)
            if m not in self.signed and not any(a <= m < b for a, b in runs)
        ]

    def read(self, ts_ms: int) -> dict[str, float | None]:
        """Every channel's sample at `ts_ms`."""
        return {
            sample.channel: sample.value
            for driver in self.agent.drivers.values()
            for sample in driver.read(ts_ms / 1000)
        }

    def sign(self, minutes: list[int]) -> None:
        """Sample and sign `minutes` (ascending) into the outbox, in one transaction: each
        minute's one sample at its start, its counters' increase since the minute before."""
        from edge.aggregate import readings

        previous: tuple[int, dict[str, float | None]] | None = None
        with self.agent.store.transaction():
            for minute in minutes:
                if previous is None or previous[0] != minute - MINUTE_MS:
                    previous = (minute - MINUTE_MS, self.read(minute - MINUTE_MS))
                values = self.read(minute)
                window = {name: [value] for name, value in values.items()}
                baselines = {name: previous[1][name] for name in self.counters}
                self.agent.outbox.add_minute(
                    minute, readings(self.channels, window, baselines), seq=minute // MINUTE_MS
                )
                self.signed.add(minute)
                previous = (minute, values)

    def deliver(self, stopping: threading.Event) -> None:
        """Flush the outbox until it is empty; a failure waits out the outbox's backoff and
        tries again, a refusal ends the back-fill."""
        outbox = self.agent.outbox
        while not stopping.is_set():
            report = outbox.flush(self.agent.transport, time.time(), budget_s=60.0)
            if report.dead:
                raise SystemExit(f"back-fill of {self.agent.config.device_id}: {report}")
            if report.error is not None or report.skipped:
                stopping.wait(max(0.1, outbox.next_attempt - time.time()))
            elif report.delivered == 0:
                return


def back_fill(until_ms: int, started: float, config_paths: list[Path]) -> int:
    """Fill each device's missing minutes of the HISTORY before `until_ms` (where the live
    agents start), a community day at a time, newest first, so today's report fills first.
    One thread per device; they wait for each other at the end of each day. Progress is
    timed from `started`, when the demo started."""
    zone = ZoneInfo(COMMUNITY["time_zone"])
    since_ms = until_ms - int(HISTORY.total_seconds() * 1000)
    days: list[tuple[date, int, int]] = []  # (local date, first minute, end), newest first
    day = datetime.fromtimestamp((until_ms - MINUTE_MS) / 1000, zone).date()

    def midnight_ms(day: date) -> int:
        return int(datetime.combine(day, datetime.min.time(), zone).timestamp() * 1000)

    while True:
        start, end = midnight_ms(day), midnight_ms(day + timedelta(days=1))
        days.append((day, max(start, since_ms), min(end, until_ms)))
        if start <= since_ms:
            break
        day -= timedelta(days=1)
    stopping = threading.Event()
    each_day = threading.Barrier(len(config_paths))

    def stop(signum: int, frame: Any) -> None:
        stopping.set()
        each_day.abort()  # threads waiting for the others' day return too

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops its children with SIGTERM
    signal.signal(signal.SIGTERM, stop)
    failures: list[BaseException] = []

    def fill(config_path: Path) -> None:
        history = None
        try:
            history = History(config_path)
            history.deliver(stopping)  # what an interrupted run signed and did not send
            runs = history.live_runs()
            # The last minutes first, before the rest of today: the cards show a reading
            # that is not stale within seconds, while the live agents' first minute runs.
            history.sign(history.missing(until_ms - RECENT_FIRST * MINUTE_MS, until_ms, runs))
            history.deliver(stopping)
            for number, (day, start, end) in enumerate(days, start=1):
                if stopping.is_set():
                    return
                history.sign(history.missing(start, end, runs))
                history.deliver(stopping)
                if each_day.wait() == 0:
                    print(f"back-filled {day} ({number} of {len(days)} days) "
                          f"after {time.time() - started:.1f} s", flush=True)  # fmt: skip
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:
            failures.append(exc)
            each_day.abort()
            raise
        finally:
            if history is not None:
                history.agent.close()

    threads = [threading.Thread(target=fill, args=(path,)) for path in config_paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return EXIT_FAILED if failures else EXIT_OK


if __name__ == "__main__":
    if sys.argv[1:2] != ["back-fill"] or len(sys.argv) < 5:
        raise SystemExit("usage: python -m gateway.demo back-fill UNTIL_MS STARTED EDGE_TOML...")
    paths = [Path(arg) for arg in sys.argv[4:]]
    sys.exit(back_fill(int(sys.argv[2]), float(sys.argv[3]), paths))
