"""The compose stack's end-to-end check, driven from the host through the proxy only.

Run by docker/test.sh (`make docker-test`): registers the edge devices and a probe device,
submits through the proxy while reading the event stream through it, verifies a proof with
`patio verify`, runs the `--then` command (starts the edge devices), runs the kill command
(one gateway) while they deliver, submits again (every envelope must be
accepted through the other gateway), verifies a proof sealed after the kill, and audits the
whole log with `patio audit --full`. Exit 0 when every check passed; one line per failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from ledger.keys import NamedKey

COMMUNITY = "hoa-docker"
TIMEOUT = 30


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--token", required=True, help="an admin token")
    parser.add_argument("--edge", action="append", default=[], metavar="ID=PUBLIC_KEY")
    parser.add_argument("--kill", required=True, help="shell command that kills one gateway")
    parser.add_argument(
        "--then", default="true", help="shell command to run after the stream check (edges)"
    )
    parser.add_argument("--before", type=int, default=20, help="envelopes before the kill")
    parser.add_argument("--after", type=int, default=50, help="envelopes after the kill")
    args = parser.parse_args()
    admin = httpx.Client(
        base_url=args.proxy, headers={"Authorization": f"Bearer {args.token}"}, timeout=TIMEOUT
    )
    created = admin.post("/v1/communities", json={"id": COMMUNITY, "name": "Docker test"})
    check(created.status_code in (201, 409), f"community: {created.text}")
    for item in args.edge:
        device, _, public_key = item.partition("=")
        register(admin, device, public_key)
    probe = NamedKey.generate("probe")
    register(admin, probe.name, probe.public_key_b64)
    auditor = app_key(admin, ["audit"])
    log_key = httpx.get(f"{args.proxy}/v1/log-key", timeout=TIMEOUT).text.strip()

    stream = Stream(args.proxy, app_key(admin, [f"read:{COMMUNITY}"]))
    stream.start()
    check(stream.opened.wait(TIMEOUT), "the event stream did not open through the proxy")
    tags = [submit(args.proxy, probe, seq) for seq in range(1, args.before + 1)]
    check(stream.seen(tags), "the event stream did not deliver every probe entry")
    print(f"{len(tags)} entries accepted through the proxy, each seen on the event stream")
    verify(admin, auditor, tags[-1], log_key)
    # Submissions so far went one at a time. Concurrent ones through two gateways can commit
    # out of index order, and a community's stream then skips an entry indexed late: the
    # known gap of several writers on one database, so the stream is checked before.
    subprocess.run(args.then, shell=True, check=True)

    subprocess.run(args.kill, shell=True, check=True)
    more = [
        submit(args.proxy, probe, seq)
        for seq in range(args.before + 1, args.before + args.after + 1)
    ]
    print(f"{len(more)} entries accepted through the proxy after the kill")
    verify(admin, auditor, more[-1], log_key)
    audit = subprocess.run(
        [
            "patio",
            "audit",
            "--gateway",
            args.proxy,
            "--log-key",
            log_key,
            "--full",
            "--api-key",
            auditor,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    check(audit.returncode == 0, f"patio audit --full: {audit.stdout} {audit.stderr}")
    print(audit.stdout.strip().splitlines()[-1])
    return 0


class Failed(Exception):
    """A check of the stack failed."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def register(admin: httpx.Client, device: str, public_key: str) -> None:
    reply = admin.post(
        "/v1/devices", json={"id": device, "community_id": COMMUNITY, "public_key": public_key}
    )
    check(reply.status_code == 201, f"registering {device}: {reply.text}")


def app_key(admin: httpx.Client, scopes: list[str]) -> str:
    reply = admin.post("/v1/apps", json={"name": "docker-test", "scopes": scopes})
    check(reply.status_code == 201, f"app key: {reply.text}")
    key: str = reply.json()["api_key"]
    return key


FIRST_MINUTE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)


def submit(proxy: str, key: NamedKey, seq: int) -> str:
    """Submit one envelope (a new connection each time, as a device would); its log tag id."""
    start = FIRST_MINUTE + timedelta(minutes=seq)
    payload = {
        "device_id": key.name,
        "seq": seq,
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period_s": 60,
        "readings": {
            "load": {"unit": "W", "n": 6, "missing": 0, "avg": 5.0, "min": 1.0, "max": 9.0}
        },
    }
    body = {
        "contract": "energy_minute",
        "envelopes": [{"payload": payload, "sig": key.sign_payload(payload)}],
    }
    reply = httpx.post(f"{proxy}/v1/entries", json=body, timeout=TIMEOUT)
    check(reply.status_code == 200, f"seq {seq}: HTTP {reply.status_code} {reply.text}")
    [result] = reply.json()["results"]
    check(result["status"] == "accepted", f"seq {seq}: {result}")
    tag: str = result["log_tag_id"]
    return tag


def verify(admin: httpx.Client, auditor: str, tag: str, log_key: str) -> None:
    """Seal through the proxy, fetch the entry's proof, and check it with `patio verify`."""
    check(admin.post("/v1/checkpoints").status_code == 201, "sealing through the proxy")
    reply = admin.get(f"/v1/entries/{tag}/proof", headers={"Authorization": f"Bearer {auditor}"})
    check(reply.status_code == 200, f"proof of {tag}: {reply.text}")
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "bundle.json"
        bundle.write_text(reply.text)
        done = subprocess.run(
            ["patio", "verify", str(bundle), "--log-key", log_key],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    check(done.returncode == 0, f"patio verify: {done.stdout} {done.stderr}")
    print(done.stdout.strip())


class Stream(threading.Thread):
    """Reads /v1/stream through the proxy, collecting the log tag ids of entry events."""

    def __init__(self, proxy: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{proxy}/v1/stream"
        self.key = key
        self.opened = threading.Event()
        self.tags: set[str] = set()
        self.changed = threading.Condition()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        params = {"community": COMMUNITY}
        with httpx.stream("GET", self.url, headers=headers, params=params, timeout=None) as reply:
            fields: dict[str, str] = {}
            for line in reply.iter_lines():
                if line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.strip()
                    continue
                if fields.get("event") == "ready":
                    self.opened.set()
                elif fields.get("event") == "entry":
                    data: dict[str, Any] = json.loads(fields["data"])
                    with self.changed:
                        self.tags.add(data["log_tag_id"])
                        self.changed.notify_all()
                fields = {}

    def seen(self, tags: list[str]) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: set(tags) <= self.tags, timeout=TIMEOUT)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as exc:
        print(f"docker-test: FAILED {exc}", file=sys.stderr)
        sys.exit(1)
