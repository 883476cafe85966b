"""Retention and erasure through a real gateway (SQLite and PostgreSQL): policies over the
admin API, payloads gone from every read API, proofs verified by `patio verify`, the audit
over dropped ranges both `--local` and `--gateway`, the erasure on the record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from contracts.device_registry import REGISTRY_DEVICE
from ledger.keys import NamedKey
from ledger.log import Appended, Log, Submission
from ledger.storage import database_url as database_url_for
from tests.gateway.server import Gateway, patio, start_gateway
from tests.gateway.test_api import envelope, is_problem, minute, submit
from tests.sse import events

DAY = timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite in the data dir, else a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


def _old_entries(
    data_dir: Path, database: str | None, key: NamedKey, seqs: range, received: datetime
) -> None:
    """Entries of `key`'s device as if the gateway had received them at `received`, written
    while the gateway is stopped (its start indexes them)."""
    log = Log.open(url=database_url_for(database, data_dir), signer=None, origin="test")
    log.append([_signed(key, minute(key.name, seq)) for seq in seqs], now=received)
    log.engine.dispose()


def _signed(key: NamedKey, payload: dict[str, Any]) -> Submission:
    """`payload` signed by `key`, as the energy_minute contract hands it to the log."""
    return Submission(
        contract="energy_minute@1",
        payload=payload,
        sig=key.sign_payload(payload),
        device_id=key.name,
        seq=payload["seq"],
        minute=payload["start"],
    )


def _resend_changed(
    data_dir: Path, database: str | None, key: NamedKey, seq: int, received: datetime
) -> None:
    """A second, different payload for `key`'s seq, refused and kept in `conflicts` as if
    received at `received` (written while the gateway is stopped)."""
    log = Log.open(url=database_url_for(database, data_dir), signer=None, origin="test")
    payload = minute(key.name, seq, readings={"m": {"unit": "Wh", "sum": 1.0}})
    [outcome] = log.append([_signed(key, payload)], now=received)
    assert not isinstance(outcome, Appended), outcome
    log.engine.dispose()


def _evidence(data_dir: Path, database: str | None) -> list[tuple[Any, ...]]:
    """Each conflict: device, whether its entry is kept, and its redaction (reason,
    reference, whether the kept leaf hash is that of the bytes it had)."""
    engine = create_engine(database_url_for(database, data_dir))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.device_id, c.entry IS NOT NULL, r.reason, r.reference, r.leaf_hash "
                    "FROM conflicts c LEFT JOIN conflict_redactions r ON r.conflict_id = c.id "
                    "ORDER BY c.id"
                )
            ).all()
    finally:
        engine.dispose()
    return [
        (d, kept, reason, ref, leaf is not None and len(leaf) == 32)
        for d, kept, reason, ref, leaf in rows
    ]


def _stream_indexes(gateway: Gateway, token: str, community: str, until: str) -> set[int]:
    """Entry indexes the stream replays for a community from the start, up to tag `until`."""
    seen: set[int] = set()
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": "-1:-1"}
    with httpx.stream(
        "GET",
        f"{gateway.url}/v1/stream",
        params={"community": community},
        headers=headers,
        timeout=20,
    ) as reply:
        assert reply.status_code == 200
        for event, _, data in events(reply):
            if event == "entry":
                seen.add(data["index"])
                if data["log_tag_id"] == until:
                    return seen
    raise AssertionError("the stream ended before the marker entry")


def _payload_anywhere(
    gateway: Gateway, auditor: str, reader: str, community: str, tag: str, index: int
) -> list[str]:
    """Every read API that still serves the payload of entry `tag` (should be none)."""
    served = []
    with gateway.client(auditor) as client:
        one = client.get(f"/v1/entries/{tag}").json()
        if one["entry"] is not None or one.get("redacted") is None:
            served.append("GET /v1/entries/{tag}")
        listed = client.get("/v1/entries", params={"community": community, "limit": 1000}).json()
        if any(e["index"] == index and e["entry"] is not None for e in listed["entries"]):
            served.append("GET /v1/entries")
    exported = [e for e in gateway.export() if e["index"] == index]
    if exported[0]["entry"] is not None or "redacted" not in exported[0]:
        served.append("GET /v1/export")
    with gateway.client(reader) as client:
        latest = client.get(f"/v1/communities/{community}/latest")
        assert latest.status_code == 200, latest.text
        if tag in latest.text:
            served.append("GET /v1/communities/{id}/latest")
    return served


def _verify(gateway: Gateway, auditor: str, tag: str, tmp_path: Path) -> str:
    """`patio verify` of the entry's bundle; its stdout (exit 0 asserted)."""
    with gateway.client(auditor) as client:
        bundle = client.get(f"/v1/entries/{tag}/proof")
        assert bundle.status_code == 200, bundle.text
        log_key = client.get("/v1/log-key").text
    path = tmp_path / f"{tag[:16]}.json"
    path.write_text(bundle.text)
    done = patio("verify", str(path), "--log-key", log_key, env=gateway.env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_retention_drops_old_payloads_and_proofs_still_verify(
    database: str | None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    gateway = start_gateway(data_dir, database_url=database)
    try:
        old_device = gateway.device("meter-old", "hoa-r")
        new_device = gateway.device("meter-new", "hoa-r")
        elsewhere = gateway.device("meter-other", "hoa-keep")
        # A policy for an unknown community, or out of range, is refused.
        assert is_problem(
            gateway.admin.put("/v1/communities/nope/retention", json={"payload_days": 30}), 404
        )
        assert is_problem(
            gateway.admin.put("/v1/communities/hoa-r/retention", json={"payload_days": 0}), 422
        )
    finally:
        gateway.stop()
    long_ago = datetime.now(UTC) - 40 * DAY
    _old_entries(data_dir, database, old_device, range(1, 6), long_ago)
    _resend_changed(data_dir, database, old_device, 2, long_ago)  # old evidence: dropped too
    _old_entries(data_dir, database, elsewhere, range(1, 4), long_ago)
    gateway = start_gateway(data_dir, database_url=database)
    try:
        recent = submit(gateway, envelope(new_device, minute(new_device.name, 1)))
        assert recent[0]["status"] == "accepted"
        changed = minute(new_device.name, 1, readings={"m": {"unit": "Wh", "sum": 1.0}})
        assert submit(gateway, envelope(new_device, changed))[0]["status"] == "rejected"
        gateway.seal()
        reply = gateway.admin.put("/v1/communities/hoa-r/retention", json={"payload_days": 30})
        assert reply.status_code == 200 and reply.json()["payload_days"] == 30
        assert gateway.admin.get("/v1/communities/hoa-r/retention").json()["payload_days"] == 30
        applied = gateway.admin.post("/v1/retention/apply")
        assert applied.status_code == 200 and applied.json()["dropped"] == {"hoa-r": 5}
        # Idempotent: a second run finds nothing more.
        assert gateway.admin.post("/v1/retention/apply").json()["dropped"] == {"hoa-r": 0}
        # The cron path finds nothing either.
        done = patio("retention", "apply", env=gateway.env)
        assert "hoa-r: 0 payload(s) dropped" in done.stdout

        exported = gateway.export()
        by_device: dict[str, list[dict[str, Any]]] = {}
        for item in exported:
            device_id = (item["entry"] or {}).get("payload", {}).get("device_id")
            by_device.setdefault(device_id or "dropped", []).append(item)
        dropped = by_device["dropped"]
        assert len(dropped) == 5
        assert all(item["redacted"]["reason"] == "retention" for item in dropped)
        assert all(item["redacted"]["reference"] == "retention:hoa-r:30d" for item in dropped)
        assert len(by_device["meter-other"]) == 3  # another community, no policy: kept
        assert len(by_device["meter-new"]) == 1  # recent: kept
        # The refused resubmissions: the old one's payload dropped under the policy, its leaf
        # hash kept (still counted), the recent one kept.
        assert _evidence(data_dir, database) == [
            ("meter-old", False, "retention", "retention:hoa-r:30d", True),
            ("meter-new", True, None, None, False),
        ]

        auditor = gateway.app_key("audit")
        reader = gateway.app_key("read:hoa-r")
        tag, index = dropped[0]["log_tag_id"], dropped[0]["index"]
        assert _payload_anywhere(gateway, auditor, reader, "hoa-r", tag, index) == []
        out = _verify(gateway, auditor, tag, tmp_path)
        assert "PAYLOAD REMOVED: under retention (retention:hoa-r:30d)" in out
        assert "PAYLOAD REMOVED" not in _verify(gateway, auditor, recent[0]["log_tag_id"], tmp_path)

        log_key = gateway.client().get("/v1/log-key").text
        remote = patio(
            "audit", "--gateway", gateway.url, "--api-key", auditor, "--log-key", log_key,
            "--full", env=gateway.env, check=False,
        )  # fmt: skip
        assert remote.returncode == 0, remote.stdout + remote.stderr
        assert "5 entries with payloads removed" in remote.stdout
        local = patio(
            "audit", "--local", "--log-key", log_key, "--full", env=gateway.env, check=False
        )
        assert local.returncode == 0, local.stdout + local.stderr
        assert "5 entries with payloads removed" in local.stdout
    finally:
        gateway.stop()


def _rollup_minutes(data_dir: Path, database: str | None, device_id: str) -> int:
    engine = create_engine(database_url_for(database, data_dir))
    try:
        with engine.connect() as conn:
            minutes = conn.execute(
                text("SELECT coalesce(sum(minutes), 0) FROM rollups WHERE device_id = :d"),
                {"d": device_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(minutes)


def test_erasure_drops_a_device_at_once_and_is_on_the_record(
    database: str | None, tmp_path: Path
) -> None:
    gateway = start_gateway(tmp_path / "data", database_url=database)
    try:
        erased = gateway.device("boiler-1", "hoa-e")
        kept = gateway.device("boiler-2", "hoa-e")
        results = submit(gateway, *(envelope(erased, minute(erased.name, s)) for s in range(1, 5)))
        submit(gateway, envelope(kept, minute(kept.name, 1)))
        changed = {"m": {"unit": "Wh", "sum": 1.0}}
        for key in (erased, kept):  # a refused resubmission each, kept as evidence
            refused = submit(gateway, envelope(key, minute(key.name, 1, readings=changed)))
            assert refused[0]["status"] == "rejected"
        gateway.seal()
        assert is_problem(gateway.admin.post("/v1/devices/nobody/erase", json={"reason": "x"}), 404)
        assert is_problem(gateway.admin.post("/v1/devices/boiler-1/erase", json={}), 422)
        with gateway.client() as anonymous:
            assert is_problem(
                anonymous.post("/v1/devices/boiler-1/erase", json={"reason": "x"}), 401
            )
        rolled_up = _rollup_minutes(tmp_path / "data", database, "boiler-1")
        assert rolled_up > 0
        reply = gateway.admin.post(
            "/v1/devices/boiler-1/erase", json={"reason": "GDPR art. 17 request 2026-11"}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["dropped"] == 4 and body["device_id"] == "boiler-1"
        assert body["evidence_dropped"] == 1
        assert _evidence(tmp_path / "data", database) == [
            ("boiler-1", False, "erasure", body["log_tag_id"], True),
            ("boiler-2", True, None, None, False),
        ]
        # After the erasure: a marker entry the stream reads up to.
        marker = submit(gateway, envelope(kept, minute(kept.name, 2)))[0]["log_tag_id"]
        gateway.seal()

        exported = gateway.export()
        record = next(e for e in exported if e["log_tag_id"] == body["log_tag_id"])
        payload = record["entry"]["payload"]
        assert payload["device_id"] == REGISTRY_DEVICE
        assert payload["action"] == "erase_device_payloads"
        assert payload["subject"] == {
            "id": "boiler-1",
            "first_index": body["first_index"],
            "last_index": body["last_index"],
            "reason": "GDPR art. 17 request 2026-11",
        }
        redacted = [e for e in exported if e["entry"] is None]
        assert [e["log_tag_id"] for e in redacted] == [r["log_tag_id"] for r in results]
        assert all(e["redacted"]["reference"] == body["log_tag_id"] for e in redacted)
        # The registry entry verifies with the registry key, like any registry entry.
        auditor = gateway.app_key("audit")
        assert "PAYLOAD REMOVED" not in _verify(gateway, auditor, body["log_tag_id"], tmp_path)
        out = _verify(gateway, auditor, results[0]["log_tag_id"], tmp_path)
        assert f"PAYLOAD REMOVED: under erasure ({body['log_tag_id']})" in out

        reader = gateway.app_key("read:hoa-e")
        for item in redacted:
            assert (
                _payload_anywhere(
                    gateway, auditor, reader, "hoa-e", item["log_tag_id"], item["index"]
                )
                == []
            )
        streamed = _stream_indexes(gateway, reader, "hoa-e", marker)
        assert not streamed & {e["index"] for e in redacted}
        # A second erasure drops nothing more but is recorded too.
        again = gateway.admin.post("/v1/devices/boiler-1/erase", json={"reason": "again"})
        assert again.status_code == 200 and again.json()["dropped"] == 0
        # The device resending an erased reading stores nothing (a duplicate).
        resent = submit(gateway, envelope(erased, minute(erased.name, 1)))
        assert resent[0]["status"] == "duplicate"
        assert all(
            e["entry"] is None
            for e in gateway.export()
            if e["index"] in {r["index"] for r in redacted}
        )

        # A report over the erased device's minutes says they come from the rollups.
        day = minute(erased.name, 1)["start"][:10]
        report = gateway.admin.get(
            "/v1/reports", params={"community": "hoa-e", "period": "day", "date": day}
        )
        assert report.status_code == 200, report.text
        removed = report.json()["provenance"]["payloads_removed"]
        assert removed["erased_devices"] == ["boiler-1"] and removed["retention_days"] is None
        # The rollups kept their chains: the entries used are still counted and digested.
        used = report.json()["provenance"]["entries"]
        assert used["count"] > 0 and len(used["digest"]) == 64, used
        (tmp_path / "report.json").write_text(report.text)
        saved = str(tmp_path / "report.json")
        export = str(tmp_path / "none.json")
        refused = patio(
            "report", "verify", saved, "--log-key", "x", "--export", export,
            env=gateway.env, check=False,
        )  # fmt: skip
        assert refused.returncode == 2 and "payloads were removed" in refused.stderr
        # The hourly rollups stay, and are never rebuilt over dropped payloads.
        assert _rollup_minutes(tmp_path / "data", database, "boiler-1") == rolled_up
        rebuild = patio("reports", "rebuild", env=gateway.env, check=False)
        assert rebuild.returncode == 1 and "cannot be recomputed" in rebuild.stderr
        assert _rollup_minutes(tmp_path / "data", database, "boiler-1") == rolled_up
        # The registry replay of the audit accepts the erasure entries.
        log_key = gateway.client().get("/v1/log-key").text
        audit = patio(
            "audit", "--gateway", gateway.url, "--api-key", auditor, "--log-key", log_key,
            "--full", env=gateway.env, check=False,
        )  # fmt: skip
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "4 entries with payloads removed" in audit.stdout

        cli = patio("retention", "erase", "boiler-2", "--reason", "moved out", env=gateway.env)
        assert "2 payload(s) of boiler-2 dropped" in cli.stdout
        assert "and 1 refused resubmission(s) kept as evidence" in cli.stdout
        assert [kept for _, kept, *_ in _evidence(tmp_path / "data", database)] == [False, False]
    finally:
        gateway.stop()
