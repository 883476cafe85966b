"""Crash safety under load: the gateway (HTTP process, writer, sealer) SIGKILLed at seeded
random moments, restarted, and nothing it acknowledged is lost or changed."""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger import merkle
from ledger.keys import NamedKey
from ledger.note import Checkpoint, NoteVerifier
from tests.gateway.server import Gateway, free_port, patio, start_gateway
from tests.gateway.test_api import envelope, minute
from tests.wait import process_gone, wait_until

SEED = 14
KILLS = 4
DEVICES = 4
BATCH = 5
# Seal constantly, so kills land in the middle of seals too.
FAST_SEALS = {"PATIO_SEAL_INTERVAL": "0.05", "PATIO_SEAL_ENTRIES": "20"}


class Load:
    """Devices submitting batches; remembers what was acknowledged and what is in doubt."""

    def __init__(self, keys: list[NamedKey]) -> None:
        self.keys = keys
        self.seqs = [itertools.count(1) for _ in keys]
        self.acked: dict[tuple[str, int], str] = {}  # (device, seq) -> log tag id
        self.sent: dict[tuple[str, int], dict[str, Any]] = {}
        self.unsure: list[list[dict[str, Any]]] = [[] for _ in keys]  # no answer came
        self.refused: list[Any] = []
        self.progress = threading.Condition()

    def run(self, url: str, device: int, stop: threading.Event) -> None:
        """Submit until the gateway dies or `stop`; what was in doubt goes first."""
        key = self.keys[device]
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                batch = self.unsure[device] or [
                    envelope(key, minute(key.name, next(self.seqs[device]))) for _ in range(BATCH)
                ]
                if not self.send(client, device, batch):
                    return

    def wait_for(self, acked: int) -> bool:
        """Block until `acked` entries were acknowledged (or something was refused)."""
        with self.progress:
            return self.progress.wait_for(
                lambda: len(self.acked) >= acked or bool(self.refused), 120
            )

    def resend(self, url: str) -> None:
        """Send once more every batch that got no answer."""
        with httpx.Client(base_url=url, timeout=30) as client:
            for device, batch in enumerate(self.unsure):
                if batch:
                    assert self.send(client, device, batch), "no answer from a live gateway"

    def send(self, client: httpx.Client, device: int, batch: list[dict[str, Any]]) -> bool:
        """Submit one batch and record the answers; False when none came."""
        name = self.keys[device].name
        for item in batch:
            self.sent[name, item["payload"]["seq"]] = item
        self.unsure[device] = batch
        try:
            reply = client.post(
                "/v1/entries", json={"contract": "energy_minute", "envelopes": batch}
            )
        except httpx.TransportError:
            return False  # killed: the batch stays in doubt
        if reply.status_code == 503:
            return False  # the writer went down with its process
        self.unsure[device] = []
        with self.progress:
            for item, result in zip(batch, reply.json()["results"], strict=True):
                if result["status"] in ("accepted", "duplicate"):
                    slot = (name, item["payload"]["seq"])
                    earlier = self.acked.setdefault(slot, result["log_tag_id"])
                    if earlier != result["log_tag_id"]:
                        self.refused.append(("tag changed", slot, result, earlier))
                else:
                    self.refused.append(result)
            self.progress.notify_all()
        return True


def kill(gateway: Gateway) -> None:
    """SIGKILL the HTTP process (its sealer with it) and its writer."""
    writer = gateway.writer_pid()
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(10)
    os.kill(writer, signal.SIGKILL)
    wait_until(lambda: process_gone(writer), 10, "the writer to die")
    gateway.admin.close()


def verify_history(gateway: Gateway) -> int:
    """Every checkpoint is signed and consistent with the next; returns the last size."""
    verifier = NoteVerifier.parse(httpx.get(f"{gateway.url}/v1/log-key").text.strip())
    notes: list[Checkpoint] = []
    after = -1
    while True:
        page = gateway.admin.get("/v1/checkpoints", params={"limit": 1000, "after": after})
        found = page.json()["checkpoints"]
        if not found:
            break
        notes += [Checkpoint.open(c["note"], verifier) for c in found]
        after = found[-1]["tree_size"]
    sizes = [n.tree_size for n in notes]
    assert sizes == sorted(set(sizes)), sizes
    for old, new in itertools.pairwise(notes):
        proof = gateway.admin.get(
            "/v1/proofs/consistency", params={"first": old.tree_size, "second": new.tree_size}
        ).json()
        merkle.verify_consistency(
            old.tree_size,
            new.tree_size,
            [bytes.fromhex(h) for h in proof["hashes"]],
            old.root_hash,
            new.root_hash,
        )
    return sizes[-1]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_kill_9_under_load_loses_no_acknowledged_entry(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    rng = random.Random(SEED)
    port = free_port()
    gateway = start_gateway(tmp_path, database_url=url, extra_env=FAST_SEALS, port=port)
    load = Load([gateway.device(f"meter-{i}", "hoa-1") for i in range(DEVICES)])
    try:
        in_doubt = 0  # batches whose request a kill cut off
        for _ in range(KILLS):
            stop = threading.Event()
            clients = [
                threading.Thread(target=load.run, args=(gateway.url, d, stop))
                for d in range(DEVICES)
            ]
            for client in clients:
                client.start()
            # A seeded random moment: after some more acknowledged entries, mid-load.
            target = len(load.acked) + rng.randint(10, 120)
            assert load.wait_for(target), "the load stalled"
            kill(gateway)
            stop.set()
            for client in clients:
                client.join(60)
            assert not load.refused, load.refused[:3]
            in_doubt += sum(bool(batch) for batch in load.unsure)
            gateway = start_gateway(tmp_path, database_url=url, extra_env=FAST_SEALS, port=port)
        assert in_doubt > 0, "no kill hit a request in flight"
        load.resend(gateway.url)
        assert not load.refused, load.refused[:3]
        gateway.seal()

        logged = {
            (item["entry"]["payload"]["device_id"], item["entry"]["payload"]["seq"]): item
            for item in gateway.export()
            if item["entry"]["contract"].startswith("energy_minute")
        }
        indexes = sorted(item["index"] for item in gateway.export())
        assert indexes == list(range(len(indexes))), "a gap or a duplicate index"
        for slot, tag in load.acked.items():
            assert logged[slot]["log_tag_id"] == tag, slot
        assert len(logged) >= len(load.acked) > 0

        # Clients resending everything they were told about get duplicates only.
        with gateway.client() as client:
            everything = sorted(load.sent)
            for start in range(0, len(everything), 200):
                slots = everything[start : start + 200]
                body = {"contract": "energy_minute", "envelopes": [load.sent[s] for s in slots]}
                results = client.post("/v1/entries", json=body).json()["results"]
                for slot, result in zip(slots, results, strict=True):
                    assert result["status"] == "duplicate", (slot, result)
                    assert result["log_tag_id"] == logged[slot]["log_tag_id"]

        assert verify_history(gateway) == len(indexes)
        log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
        audit = patio(
            "audit", "--local", "--full", "--log-key", log_key, env=gateway.env, check=False
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        if gateway.process.poll() is None:
            gateway.stop()
