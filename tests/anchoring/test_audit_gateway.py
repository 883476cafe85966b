"""The auditor over the gateway's HTTP API: the same tamper scenarios, seen from outside."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3 import Web3

from gateway.app import create_app
from gateway.auth import ADMIN_PREFIX, new_secret, secret_hash
from gateway.config import Settings
from gateway.store import admin_tokens
from ledger.anchoring import Anchorer, deploy_contract
from ledger.audit import Auditor
from ledger.audit_gateway import GatewaySource
from ledger.cli import main
from ledger.keys import NamedKey
from ledger.log import Log
from tests.anchoring.conftest import _free_port

DEVICE = "boiler-01"


def payload(seq: int) -> dict[str, Any]:
    """An energy_minute payload in the past (the contract refuses future minutes)."""
    return {
        "device_id": DEVICE,
        "seq": seq,
        "start": f"2026-01-{1 + seq // 1440:02d}T{seq // 60 % 24:02d}:{seq % 60:02d}:00Z",
        "period_s": 60,
        "readings": {"t1": {"unit": "Cel", "n": 12, "missing": 0, "avg": 21.5, "min": 21.0,
                            "max": 22.25}},
    }  # fmt: skip


@dataclass
class Running:
    """A gateway under test and what the auditor needs from it."""

    client: TestClient
    log: Log
    admin: dict[str, str]
    api_key: str
    log_key: str
    device: NamedKey
    data_dir: Path

    def submit(self, seqs: range) -> None:
        """Submit signed minutes through POST /v1/entries."""
        for first in range(seqs.start, seqs.stop, 1000):
            envelopes = [
                {"payload": payload(s), "sig": self.device.sign_payload(payload(s))}
                for s in range(first, min(first + 1000, seqs.stop))
            ]
            answer = self.client.post(
                "/v1/entries", json={"contract": "energy_minute", "envelopes": envelopes}
            )
            assert answer.status_code == 200
            assert {r["status"] for r in answer.json()["results"]} == {"accepted"}

    def seal(self) -> int:
        """POST /v1/checkpoints; the new tree size."""
        answer = self.client.post("/v1/checkpoints", headers=self.admin)
        assert answer.status_code == 201, answer.text
        size: int = answer.json()["tree_size"]
        return size

    def source(self) -> GatewaySource:
        """The auditor's view of this gateway."""
        return GatewaySource("http://testserver", api_key=self.api_key, client=self.client)

    def audit(self, **kw: Any) -> Any:
        """A full audit over HTTP."""
        auditor = Auditor(source=self.source(), log_key=self.log_key, **kw.pop("auditor", {}))
        return auditor.run(full=kw.pop("full", True), **kw)

    def tamper(self, sql: str, params: tuple[Any, ...]) -> None:
        """Edit the gateway's SQLite file directly, triggers dropped first."""
        with sqlite3.connect(self.data_dir / "ledger.sqlite3") as db:
            db.execute("DROP TRIGGER IF EXISTS entries_no_update")
            db.execute("DROP TRIGGER IF EXISTS entries_no_delete")
            db.execute(sql, params)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Running]:
    """A gateway with a community, a device, 50 entries in two checkpoints, an audit key."""
    settings = Settings(data_dir=tmp_path / "gw", seal_interval=3600, seal_entries=10**9)
    app = create_app(settings)
    with TestClient(app) as client:
        state = app.state.gateway
        token = new_secret(ADMIN_PREFIX)
        with state.log.engine.connect().execution_options(patio_write=True) as c, c.begin():
            c.execute(
                admin_tokens.insert().values(
                    token_hash=secret_hash(token), created_at="2026-01-01T00:00:00.000Z"
                )
            )
        admin = {"Authorization": f"Bearer {token}"}
        device = NamedKey.generate(DEVICE)
        assert client.post("/v1/communities", json={"id": "hoa", "name": "HOA"}, headers=admin)
        answer = client.post(
            "/v1/devices",
            json={"id": DEVICE, "community_id": "hoa", "public_key": device.public_key_b64},
            headers=admin,
        )
        assert answer.status_code == 201, answer.text
        app_key = client.post(
            "/v1/apps", json={"name": "auditor", "scopes": ["audit"]}, headers=admin
        ).json()["api_key"]
        running = Running(
            client=client,
            log=state.log,
            admin=admin,
            api_key=app_key,
            log_key=client.get("/v1/log-key").text.strip(),
            device=device,
            data_dir=settings.data_dir,
        )
        running.submit(range(20))
        running.seal()
        running.submit(range(20, 48))
        running.seal()
        yield running


def test_clean_gateway_passes(gateway: Running) -> None:
    result = gateway.audit()
    report = result.report
    assert report.ok, report.summary()
    assert report.entries_checked == report.tree_size == 50  # 2 registry entries + 48
    assert report.device_signatures_checked == 50
    assert report.consistency_proofs_checked >= 2


def test_edited_entry_is_named_over_http(gateway: Running) -> None:
    stored = gateway.log.entry(30).entry
    gateway.tamper(
        "UPDATE entries SET entry = ? WHERE idx = 30",
        (stored.replace(b'"avg":21.5', b'"avg":25.5'),),
    )
    lines = [f.line() for f in gateway.audit().report.findings]
    assert lines[0].startswith("TAMPER DETECTED: entry 30 does not hash to its log tag id")
    assert lines[1].startswith("TAMPER DETECTED: entry 30 has a bad device signature")
    # GET /v1/proofs/inclusion lets the root check prove which entry the signed root excludes.
    assert lines[2] == (
        "TAMPER DETECTED: entry 30 does not match what checkpoint 50 signed: its bytes were changed"
    )


def test_deleted_entry_is_named_over_http(gateway: Running) -> None:
    gateway.tamper("DELETE FROM entries WHERE idx = 7", ())
    assert gateway.audit().report.findings[0].line() == (
        "TAMPER DETECTED: entry 7 is missing from the log: the source skips to entry 8"
    )


def test_anchor_not_matching_over_http(gateway: Running, w3: Web3, account: LocalAccount) -> None:
    contract = deploy_contract(w3, account, origin=gateway.log.origin)
    anchorer = Anchorer(log=gateway.log, w3=w3, account=account, contract=contract)
    assert anchorer.run_once(wait_seconds=5).action == "confirmed"
    assert gateway.audit(auditor={"chain": lambda: w3}).report.anchors_checked_on_chain == 1
    with sqlite3.connect(gateway.data_dir / "ledger.sqlite3") as db:
        db.execute("UPDATE anchors SET tree_size = 22")  # claims another checkpoint's anchor
    line = gateway.audit(full=False).report.findings[0].line()
    assert line.startswith("TAMPER DETECTED: checkpoint 22 anchor 0x")
    assert "at size 22, not the checkpoint's root" in line


def test_export_without_the_audit_scope_is_an_error_not_a_finding(gateway: Running) -> None:
    source = GatewaySource("http://testserver", client=gateway.client)
    with pytest.raises(Exception, match="gateway answered 401 to /v1/export"):
        Auditor(source=source, log_key=gateway.log_key).run(full=True)


@pytest.fixture
def served(gateway: Running) -> Iterator[str]:
    """The same app served over real HTTP by uvicorn, for the CLI."""
    port = _free_port()
    config = uvicorn.Config(gateway.client.app, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    server.config.lifespan = "off"  # the TestClient already runs the lifespan
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


COVERAGE = (
    f"  device {DEVICE}: 48/48 minutes (100.0%) from 2026-01-01T00:00:00Z to "
    "2026-01-01T00:47:00Z, 0 gap(s), 0 duplicate minute(s)"
)


def test_cli_audit_over_http(gateway: Running, served: str, tmp_path: Path, capsys: Any) -> None:
    report = tmp_path / "report.json"
    argv = ["audit", "--gateway", served, "--log-key", gateway.log_key, "--full"]
    argv += ["--api-key", gateway.api_key, "--report", str(report)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "50 entries replayed" in out
    assert f"{COVERAGE}, conflicts not visible from this source" in out.splitlines()
    assert json.loads(report.read_text())["coverage"][0]["present"] == 48
    assert httpx.get(f"{served}/v1/checkpoint").status_code == 200
    gateway.tamper("DELETE FROM entries WHERE idx = 49", ())
    assert main(argv) == 1
    assert "TAMPER DETECTED: entry 49 is missing" in capsys.readouterr().out
    assert main([*argv[:-4], "--report", str(report)]) == 2  # no API key: cannot audit
    assert "audit could not run" in capsys.readouterr().err


def test_cli_local_audit_of_the_gateway_database(gateway: Running, capsys: Any) -> None:
    argv = ["audit", "--local", "--dir", str(gateway.data_dir), "--log-key", gateway.log_key]
    assert main([*argv, "--full"]) == 0
    out = capsys.readouterr().out
    assert "50 entries replayed, 50 device signature(s)" in out  # device and registry keys
    assert f"{COVERAGE}, 0 conflict(s) kept" in out.splitlines()
    gateway.tamper("DELETE FROM entries WHERE idx = 3", ())
    assert main([*argv, "--full"]) == 1
    assert "TAMPER DETECTED: entry 3 is missing" in capsys.readouterr().out
