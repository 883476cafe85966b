"""GET /v1/reports and the tariff admin API against a real gateway; `patio report verify`
against it and against a saved export, passing and failing on each tamper. SQLite and
PostgreSQL (the `gateway` fixture)."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from contracts.energy import verify as verify_module
from ledger.keys import NamedKey
from tests.docs import fenced
from tests.gateway.server import Gateway, patio

TARIFFS = Path(verify_module.__file__).parent / "tariffs"
DAY = datetime(2026, 3, 10, tzinfo=UTC)  # a Tuesday; Europe/Madrid is UTC+1
LATE = ("meter-1", 9 * 60 + 30)  # a minute the fixture leaves out, sent after a seal
METER = {"sensors": {"import_wh": {"role": "grid_import", "unit": "Wh"},
                     "export_wh": {"role": "grid_export", "unit": "Wh"}}}  # fmt: skip
PANEL = {"sensors": {"pv_w": {"role": "generation", "unit": "W"}}}


def envelope(key: NamedKey, device_id: str, minute: datetime, seq: int, rng: random.Random
             ) -> dict[str, Any]:  # fmt: skip
    """One signed minute of a meter or a panel."""
    if device_id.startswith("meter"):
        readings = {
            "import_wh": {"unit": "Wh", "sum": round(rng.uniform(0, 30), 3), "n": 12, "missing": 0},
            "export_wh": {"unit": "Wh", "sum": round(rng.uniform(0, 5), 3), "n": 12, "missing": 0},
        }
    else:
        avg = round(rng.uniform(0, 3000), 2)
        readings = {"pv_w": {"unit": "W", "n": 12, "missing": 0, "avg": avg, "min": avg,
                             "max": avg}}  # fmt: skip
    payload = {"device_id": device_id, "seq": seq, "start": minute.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "period_s": 60, "readings": readings}  # fmt: skip
    return {"payload": payload, "sig": key.sign_payload(payload)}


def post(gateway: Gateway, envelopes: list[dict[str, Any]]) -> None:
    """Submit in batches of 100."""
    with gateway.client() as client:
        for i in range(0, len(envelopes), 100):
            reply = client.post(
                "/v1/entries",
                json={"contract": "energy_minute", "envelopes": envelopes[i : i + 100]},
            )
            assert reply.status_code in (200, 201), reply.text


@pytest.fixture(scope="module")
def community(gateway: Gateway) -> dict[str, Any]:
    """A Madrid community with a meter and a panel, the 2.0TD tariff, six hours of minutes
    on 2026-03-10 (some missing), sealed."""
    reply = gateway.admin.post("/v1/communities", json={"id": "hoa-rep", "name": "Reports HOA",
                                                        "time_zone": "Europe/Madrid"})  # fmt: skip
    assert reply.status_code == 201, reply.text
    keys = {}
    for device_id, profile in (("meter-1", METER), ("panel-1", PANEL)):
        keys[device_id] = NamedKey.generate(device_id)
        reply = gateway.admin.post("/v1/devices", json={
            "id": device_id, "community_id": "hoa-rep",
            "public_key": keys[device_id].public_key_b64, "profile": profile})  # fmt: skip
        assert reply.status_code == 201, reply.text
    env = {**gateway.env, "PATIO_API_KEY": gateway.admin_token}
    done = patio("tariff", "set", "hoa-rep", str(TARIFFS / "es-2.0td.json"), "--contracted",
                 "P1=4.6", "--contracted", "P2=4.6", "--gateway", gateway.url, env=env)  # fmt: skip
    assert json.loads(done.stdout)["log_tag_id"]
    rng = random.Random(11)
    envelopes = []
    for device_id, key in keys.items():
        seq = 0
        for minute in range(7 * 60, 13 * 60):  # 08:00 to 14:00 local: P3, P2, P1
            seq += 1
            if rng.random() < 0.03 or (device_id, minute) == LATE:
                continue  # never measured: a missing minute (LATE arrives later)
            at = DAY + timedelta(minutes=minute)
            envelopes.append(envelope(key, device_id, at, seq, rng))
    rng.shuffle(envelopes)
    post(gateway, envelopes)
    gateway.seal()
    return {"keys": keys, "envelopes": len(envelopes)}


def get_report(gateway: Gateway, token: str | None = None, **params: Any) -> httpx.Response:
    with gateway.client(token or gateway.admin_token) as client:
        return client.get("/v1/reports", params={"community": "hoa-rep", **params})


def test_day_report(gateway: Gateway, community: dict[str, Any]) -> None:
    reply = get_report(gateway, period="day", date="2026-03-10")
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["period"]["time_zone"] == "Europe/Madrid"
    assert len(report["buckets"]) == 24
    provenance = report["provenance"]
    note = gateway.admin.get("/v1/checkpoint").text
    assert provenance["checkpoint"] == note
    assert provenance["tree_size"] == int(note.split("\n")[1])
    assert provenance["format"] == "patio-report-provenance/v2"
    # Every envelope is one entry, counted once though a meter's has two rolled-up sensors.
    assert provenance["entries"]["count"] == community["envelopes"]
    assert provenance["inputs"]["roles"]["meter-1"]["import_wh"] == "grid_import"
    assert report["tariff"]["id"] == "es-2.0td"
    total = report["total"]
    assert float(total["grid_import_kWh"]) > 0 and float(total["generated_kWh"]) > 0
    # 08:00-14:00 local on a Tuesday: 08-10 is P2, 10-14 P1.
    assert set(total["cost"]["energy"]) == {"P1", "P2"}
    assert total["missing_minutes"] > 0
    csv = httpx.get(f"{gateway.url}/v1/reports", params={"community": "hoa-rep", "period": "day",
                    "date": "2026-03-10"}, headers={"Accept": "text/csv",
                    "Authorization": f"Bearer {gateway.admin_token}"})  # fmt: skip
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert len(lines) == 1 + 24 + 1 and lines[-1].startswith("total,")


def test_report_is_the_log_up_to_its_checkpoint(
    gateway: Gateway, community: dict[str, Any]
) -> None:
    """Entries appended after the checkpoint change neither the rollups used nor the numbers."""
    before = get_report(gateway, period="day", date="2026-03-10").json()
    key = community["keys"]["meter-1"]
    late = envelope(key, "meter-1", DAY + timedelta(minutes=LATE[1]), 100_000,
                    random.Random(5))  # fmt: skip
    post(gateway, [late])  # a late minute of a sealed hour, not in any checkpoint yet
    after = get_report(gateway, period="day", date="2026-03-10").json()
    assert after["provenance"]["tree_size"] == before["provenance"]["tree_size"]
    assert after["total"]["grid_import_kWh"] == before["total"]["grid_import_kWh"]
    # The late minute's rollups are recomputed from entries below the checkpoint, chains too.
    assert after["provenance"]["entries"] == before["provenance"]["entries"]
    gateway.seal()
    sealed = get_report(gateway, period="day", date="2026-03-10").json()
    assert sealed["provenance"]["tree_size"] == before["provenance"]["tree_size"] + 1
    assert sealed["total"]["grid_import_kWh"] != before["total"]["grid_import_kWh"]
    entries = sealed["provenance"]["entries"]
    assert entries["count"] == before["provenance"]["entries"]["count"] + 1
    assert entries["digest"] != before["provenance"]["entries"]["digest"]


def test_scopes_and_bad_parameters(gateway: Gateway, community: dict[str, Any]) -> None:
    mine = gateway.app_key("read:hoa-rep")
    other = gateway.app_key("read:somewhere-else")
    assert get_report(gateway, mine, period="month", date="2026-03-01").status_code == 200
    refused = get_report(gateway, other, period="month", date="2026-03-01")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    with httpx.Client(base_url=gateway.url) as anonymous:
        assert anonymous.get("/v1/reports", params={"community": "hoa-rep"}).status_code == 401
    for params in (
        {"period": "day"},
        {"period": "fortnight", "date": "2026-03-10"},
        {"period": "day", "date": "2026-02-30"},
        {"period": "day", "date": "10/03/2026"},
        {"from": "2026-03-10"},
        {"from": "2026-03-10", "to": "2026-03-01"},
        {"from": "2026-03-10", "to": "2026-03-11", "period": "day", "date": "2026-03-10"},
        {"period": "custom", "date": "2026-03-10"},
        {"period": "year", "date": "2024-06-01"},  # no tariff version before 2025
        {"from": "1000-01-01", "to": "2026-01-01"},
    ):
        reply = get_report(gateway, mine, **params)
        assert reply.status_code == 422, (params, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"


def test_tariff_api(gateway: Gateway, community: dict[str, Any]) -> None:
    reader = gateway.app_key("read:hoa-rep")
    with gateway.client(reader) as client:
        shown = client.get("/v1/communities/hoa-rep/tariff")
        assert shown.status_code == 200 and shown.json()["tariff"]["id"] == "es-2.0td"
        assert client.put("/v1/communities/hoa-rep/tariff", json={}).status_code == 403
    document = json.loads((TARIFFS / "es-2.0td.json").read_text())
    broken = copy.deepcopy(document)
    broken["versions"][0]["calendar"]["schedules"]["workday"][0]["end"] = 7  # a gap at 07:00
    for body, field in (
        ({"tariff": broken, "contracted_kW": {"P1": "4.6", "P2": "4.6"}}, "versions"),
        ({"tariff": document, "contracted_kW": {"P1": "4.6"}}, "contracted_kW.P2"),
        ({"tariff": document, "contracted_kW": {"P1": 4.6, "P2": "4.6"}}, "contracted_kW.P1"),
        ({"tariff": document}, "contracted_kW.P1"),
    ):
        reply = gateway.admin.put("/v1/communities/hoa-rep/tariff", json=body)
        assert reply.status_code == 422, reply.text
        assert field in reply.json()["detail"], reply.text
    # Changing a price already in force is refused: it would rewrite past costs.
    past = copy.deepcopy(document)
    past["versions"][0]["energy"]["P1"]["price_per_kWh"] = "0.999"
    power = {"P1": "4.6", "P2": "4.6"}
    reply = gateway.admin.put(
        "/v1/communities/hoa-rep/tariff", json={"tariff": past, "contracted_kW": power}
    )
    assert reply.status_code == 409, reply.text
    assert gateway.admin.put("/v1/communities/nowhere/tariff",
                             json={"tariff": document, "contracted_kW": {"P1": "1", "P2": "1"}}
                             ).status_code == 404  # fmt: skip
    evn = json.loads((TARIFFS / "mk-evn-home.json").read_text())
    gateway.admin.post("/v1/communities", json={"id": "hoa-mk", "name": "Skopje",
                                                "time_zone": "Europe/Skopje"})  # fmt: skip
    reply = gateway.admin.put("/v1/communities/hoa-mk/tariff", json={"tariff": evn})
    assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def audit_key(gateway: Gateway) -> str:
    return gateway.app_key("audit")


def save_export(gateway: Gateway, key: str, path: Path) -> None:
    """GET /v1/export page by page into one {entries: [...]} file."""
    entries: list[Any] = []
    start: int | None = 0
    with gateway.client(key) as client:
        while start is not None:
            body = client.get("/v1/export", params={"start": start, "limit": 5000}).json()
            entries += body["entries"]
            start = body["next"]
    path.write_text(json.dumps({"entries": entries}))


def verify(gateway: Gateway, report: Path, *extra: str, key: str) -> Any:
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    return patio("report", "verify", str(report), "--log-key", log_key, *extra,
                 env={**gateway.env, "PATIO_API_KEY": key}, check=False)  # fmt: skip


def test_verify_passes_and_names_each_tamper(
    gateway: Gateway, community: dict[str, Any], audit_key: str, tmp_path: Path
) -> None:
    gateway.seal()
    report = get_report(gateway, period="day", date="2026-03-10").json()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    online = verify(gateway, path, "--gateway", gateway.url, key=audit_key)
    assert online.returncode == 0, online.stderr
    assert "report verified" in online.stdout
    export = tmp_path / "export.json"
    save_export(gateway, audit_key, export)
    offline = verify(gateway, path, "--export", str(export), key="")
    assert offline.returncode == 0, offline.stderr

    # A changed total in the report.
    edited = copy.deepcopy(report)
    edited["buckets"][9]["grid_import_kWh"] = "99.000000"
    path.write_text(json.dumps(edited))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 1 and "buckets[9].grid_import_kWh" in failed.stderr, failed.stderr
    # A changed count of the entries used.
    edited = copy.deepcopy(report)
    edited["provenance"]["entries"]["count"] += 1
    path.write_text(json.dumps(edited))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 1 and "provenance.entries.count" in failed.stderr, failed.stderr
    # A report of the former provenance format: unusable here, exit 2.
    edited["provenance"]["format"] = "patio-report-provenance/v1"
    path.write_text(json.dumps(edited))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 2 and "provenance/v1" in failed.stderr, failed.stderr
    path.write_text(json.dumps(report))

    body = json.loads(export.read_text())
    size = report["provenance"]["tree_size"]
    energy = [i for i, e in enumerate(body["entries"])
              if e["entry"]["contract"] == "energy_minute@1" and e["index"] < size]  # fmt: skip
    victim = energy[len(energy) // 2]
    index = body["entries"][victim]["index"]

    # An entry dropped from the export.
    dropped = {"entries": body["entries"][:victim] + body["entries"][victim + 1 :]}
    export.write_text(json.dumps(dropped))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 1 and f"entry {index} is missing" in failed.stderr, failed.stderr

    # An entry added to the export (a copy slipped in before the victim).
    added = copy.deepcopy(body)
    extra = copy.deepcopy(added["entries"][victim])
    added["entries"].insert(victim, extra)
    for later in added["entries"][victim + 1 :]:
        later["index"] += 1
    export.write_text(json.dumps(added))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 1 and "TAMPER DETECTED" in failed.stderr, failed.stderr

    # A reading changed in the export: its signature no longer verifies.
    changed = copy.deepcopy(body)
    readings = changed["entries"][victim]["entry"]["payload"]["readings"]
    first = next(iter(readings.values()))
    first["sum" if "sum" in first else "avg"] = 1234.5
    export.write_text(json.dumps(changed))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 1 and f"entry {index} does not hash" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    del changed["entries"][victim]["log_tag_id"]  # no tag to compare: the signature fails
    export.write_text(json.dumps(changed))
    failed = verify(gateway, path, "--export", str(export), key="")
    assert failed.returncode == 1, failed.stderr
    assert f"entry {index} has a bad device signature" in failed.stderr, failed.stderr

    # Unusable input: exit 2 with one line.
    (tmp_path / "junk.json").write_text("not json")
    unusable = verify(gateway, tmp_path / "junk.json", "--export", str(export), key="")
    assert unusable.returncode == 2 and len(unusable.stderr.strip().splitlines()) == 1


def test_verify_names_rollups_that_are_not_the_logs(
    gateway: Gateway, community: dict[str, Any], audit_key: str, tmp_path: Path
) -> None:
    """A report computed from rollups whose entries are not the log's (one entry changed,
    one too many) fails `patio report verify` at the entries' digest or count."""
    from sqlalchemy import text

    from contracts.energy.minute import extend_chain
    from ledger.storage import database_url, open_engine

    engine = open_engine(
        database_url(gateway.env.get("PATIO_DATABASE_URL"), gateway.data_dir), migrate=False
    )
    where = ("WHERE community_id = 'hoa-rep' AND device_id = 'panel-1' AND sensor = 'pv_w' "
             "AND hour = :h")  # fmt: skip
    hour = int((DAY + timedelta(hours=9)).timestamp())
    gateway.seal()
    with engine.connect() as conn:
        entries, chain = conn.execute(text(f"SELECT entries, chain FROM rollups {where}"),
                                      {"h": hour}).one()  # fmt: skip
    chain = bytes(chain)
    other = b"c274b5" + b"0" * 64  # a log tag id the log does not have
    path = tmp_path / "report.json"
    try:
        for changed, named in (
            ((entries, chain[:-1] + bytes([chain[-1] ^ 1])), "provenance.entries.digest"),
            ((entries + 1, extend_chain(chain, [other])), "provenance.entries.count"),
        ):
            with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
                conn.execute(text(f"UPDATE rollups SET entries = :e, chain = :c {where}"),
                             {"e": changed[0], "c": changed[1], "h": hour})  # fmt: skip
                conn.execute(text("DELETE FROM report_digests"))  # the day's kept digest
            path.write_text(get_report(gateway, period="day", date="2026-03-10").text)
            failed = verify(gateway, path, "--gateway", gateway.url, key=audit_key)
            assert failed.returncode == 1 and named in failed.stderr, failed.stderr
    finally:
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(text(f"UPDATE rollups SET entries = :e, chain = :c {where}"),
                         {"e": entries, "c": chain, "h": hour})  # fmt: skip
            conn.execute(text("DELETE FROM report_digests"))
        engine.dispose()
    path.write_text(get_report(gateway, period="day", date="2026-03-10").text)
    assert verify(gateway, path, "--gateway", gateway.url, key=audit_key).returncode == 0


def test_the_doc_examples_run(
    gateway: Gateway, community: dict[str, Any], audit_key: str, tmp_path: Path
) -> None:
    """docs/reports.md: its shell examples run as written, in order, against a real gateway."""
    doc = Path(__file__).parents[2] / "docs" / "reports.md"
    blocks = [block.text for block in fenced.blocks(doc) if block.session == "reports"]
    assert len(blocks) >= 3
    (tmp_path / "contracts").symlink_to(Path(__file__).parents[2] / "contracts")
    env = {
        **gateway.env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GATEWAY": gateway.url,
        "TOKEN": gateway.admin_token,
        "AUDIT_KEY": audit_key,
    }
    gateway.seal()
    for block in blocks:
        ran = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, block + ran.stdout + ran.stderr
    assert json.loads((tmp_path / "report.json").read_text())["provenance"]["tree_size"] > 0
    assert (tmp_path / "report.csv").read_text().startswith("row,")


def test_a_peak_too_large_to_rank_in_sql(gateway: Gateway, community: dict[str, Any]) -> None:
    """A peak of 2^47 mW or more is found by its own query, not the ranked MAX."""
    from sqlalchemy import text

    from ledger.storage import database_url, open_engine

    engine = open_engine(
        database_url(gateway.env.get("PATIO_DATABASE_URL"), gateway.data_dir), migrate=False
    )
    hour = int(datetime(2026, 3, 11, 10, tzinfo=UTC).timestamp())
    huge = 2**50
    try:
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            for offset, peak in ((0, huge), (3600, huge), (7200, 5)):
                conn.execute(
                    text(
                        "INSERT INTO rollups (device_id, hour, sensor, community_id, minutes, "
                        "energy_mwh, peak_mw, peak_minute, first_idx, last_idx) VALUES "
                        "('meter-1', :h, 'import_wh', 'hoa-rep', 60, 1000, :p, :m, 0, 0)"
                    ),
                    {"h": hour + offset, "p": peak, "m": hour + offset + 17 * 60},
                )
            # What Rollups._store does with every row it writes: raise the day's marker, so
            # no report_units row summed before this insert is used after it.
            conn.execute(text("UPDATE rollup_days SET changed_idx = changed_idx + 1 "
                              "WHERE community_id = 'hoa-rep' AND day = :d"),
                         {"d": hour // 86400})  # fmt: skip
        report = get_report(gateway, period="week", date="2026-03-11").json()
        peak = report["total"]["peak_demand"]
        assert peak["kW"] == f"{huge // 10**6}.{huge % 10**6:06d}"
        assert peak["at"] == "2026-03-11T11:17:00+01:00"  # the earlier of the two equal peaks
        # Rows with no chain (as g0010 keeps over dropped payloads): the entries are unknown.
        assert report["provenance"]["entries"] is None
    finally:  # rows with no entry behind them: gone, so later reports verify against the log
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(text("DELETE FROM rollups WHERE hour >= :h AND hour < :e "
                              "AND first_idx = 0 AND last_idx = 0"),
                         {"h": hour, "e": hour + 3 * 3600})  # fmt: skip
            conn.execute(text("UPDATE rollup_days SET changed_idx = changed_idx + 1 "
                              "WHERE community_id = 'hoa-rep' AND day = :d"),
                         {"d": hour // 86400})  # fmt: skip
        engine.dispose()


def test_cached_unit_sums_equal_a_recomputation(
    gateway: Gateway, community: dict[str, Any], audit_key: str, tmp_path: Path
) -> None:
    """Reports that read unit sums kept in report_units equal the same reports summed from
    the hourly rollups, after random late minutes into old months, a tariff change and a
    role change; the year's report passes `patio report verify`."""
    from sqlalchemy import text

    from ledger.storage import database_url, open_engine

    engine = open_engine(
        database_url(gateway.env.get("PATIO_DATABASE_URL"), gateway.data_dir), migrate=False
    )
    queries = [{"period": "year", "date": "2026-03-10"}, {"period": "month", "date": "2026-03-10"},
               {"period": "year", "date": "2027-02-01"}]  # fmt: skip

    def three(params: dict[str, str]) -> list[dict[str, Any]]:
        """The report with what report_units holds, again with what that request kept, and
        with report_units emptied; the same as_of (minute) for all three."""
        for _ in range(3):
            reports = [get_report(gateway, **params), get_report(gateway, **params)]
            with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
                conn.execute(text("DELETE FROM report_units"))
                conn.execute(text("DELETE FROM report_digests"))
            reports.append(get_report(gateway, **params))
            assert all(r.status_code == 200 for r in reports), reports[-1].text
            found = [r.json() for r in reports]
            if len({r["as_of"] for r in found}) == 1:
                return found
        raise AssertionError("the minute changed during every attempt")

    def check(params: dict[str, str]) -> dict[str, Any]:
        first, cached, uncached = three(params)
        assert first == uncached and cached == uncached
        return uncached

    try:
        before = [check(q) for q in queries]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM report_units")).scalar_one() > 0
            assert conn.execute(text("SELECT count(*) FROM report_digests")).scalar_one() > 0

        rng = random.Random(8)
        key = community["keys"]["panel-1"]
        late = [
            envelope(key, "panel-1", at, 200_000 + n, rng)
            for n, at in enumerate(sorted(
                {DAY + timedelta(hours=14, minutes=rng.randrange(6 * 60)) for _ in range(20)}
                | {datetime(2026, 1, day, 9, tzinfo=UTC)  # P1 hours of two days: one unit
                   + timedelta(minutes=rng.randrange(240)) for day in (15, 20) for _ in range(5)}))
        ]  # fmt: skip
        post(gateway, late)  # late minutes into old months, after their sums were kept
        gateway.seal()
        after = [check(q) for q in queries]
        assert after[0]["total"]["generated_kWh"] != before[0]["total"]["generated_kWh"]

        tariff = json.loads((TARIFFS / "es-2.0td.json").read_text())
        changed = copy.deepcopy(tariff["versions"][-1])  # from 2027 workdays are P3 all day
        changed["calendar"]["schedules"]["workday"] = [{"start": 0, "end": 24, "period": "P3"}]
        tariff["versions"][-1]["valid_to"] = changed["valid_from"] = "2027-01-01"
        tariff["versions"].append(changed)
        reply = gateway.admin.put("/v1/communities/hoa-rep/tariff", json={
            "tariff": tariff, "contracted_kW": {"P1": "4.6", "P2": "4.6"}})  # fmt: skip
        assert reply.status_code in (200, 201), reply.text
        gateway.seal()
        retariffed = [check(q) for q in queries]
        assert retariffed[2]["provenance"]["inputs"] != after[2]["provenance"]["inputs"]

        reply = gateway.admin.post("/v1/devices/panel-1/profile", json={"profile": {
            "sensors": {"pv_w": {"role": "consumption", "unit": "W"}}}})  # fmt: skip
        assert reply.status_code in (200, 201), reply.text
        gateway.seal()
        reroled = [check(q) for q in queries]
        assert reroled[0]["total"]["generated_kWh"] == "0.000000"

        path = tmp_path / "year.json"
        path.write_text(get_report(gateway, period="year", date="2026-03-10").text)
        done = verify(gateway, path, "--gateway", gateway.url, key=audit_key)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        engine.dispose()


def test_a_registry_change_reaches_the_next_report(
    gateway: Gateway, community: dict[str, Any]
) -> None:
    """The gateway replays the registry again only when its entries changed: a device
    registered after a report is in the next checkpoint's report, not before it."""
    before = get_report(gateway, period="day", date="2026-03-10").json()
    again = get_report(gateway, period="day", date="2026-03-10").json()
    assert again["provenance"] == before["provenance"]  # as_of may have moved a minute
    reply = gateway.admin.post("/v1/devices", json={
        "id": "panel-2", "community_id": "hoa-rep",
        "public_key": NamedKey.generate("panel-2").public_key_b64, "profile": PANEL})  # fmt: skip
    assert reply.status_code == 201, reply.text
    unsealed = get_report(gateway, period="day", date="2026-03-10").json()
    assert "panel-2" not in unsealed["provenance"]["inputs"]["roles"]
    gateway.seal()
    after = get_report(gateway, period="day", date="2026-03-10").json()
    declared = {sensor: spec["role"] for sensor, spec in PANEL["sensors"].items()}
    assert after["provenance"]["inputs"]["roles"]["panel-2"] == declared
    # A device without minutes adds no energy, only the minutes it was expected to measure.
    for field in ("generated_kWh", "grid_import_kWh", "grid_export_kWh"):
        assert after["total"][field] == before["total"][field]
    assert after["total"]["missing_minutes"] > before["total"]["missing_minutes"]


def test_a_past_days_kept_digest_is_read_until_a_late_minute_changes_its_day(
    gateway: Gateway, community: dict[str, Any]
) -> None:
    """A report over a local day whose UTC days are over keeps that day's count and digest
    (`report_digests`, under the day markers) and the next report reads it, even while
    today's minutes arrive; a late minute into that day changes its marker, so the kept row
    is no longer read."""
    from sqlalchemy import text

    from ledger.storage import database_url, open_engine

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = today - timedelta(days=2)  # its local day (Madrid) ends before today (UTC)
    key, rng = community["keys"]["meter-1"], random.Random(5)
    minutes = [day + timedelta(hours=12, minutes=m) for m in range(10)]
    envelopes = [envelope(key, "meter-1", at, 300_000 + m, rng) for m, at in enumerate(minutes)]
    post(gateway, envelopes[:-1])
    gateway.seal()
    params = {"period": "day", "date": day.date().isoformat()}
    engine = open_engine(
        database_url(gateway.env.get("PATIO_DATABASE_URL"), gateway.data_dir), migrate=False
    )
    kept = "SELECT entries FROM report_digests WHERE community_id = 'hoa-rep' AND start_hour = :s"
    start = int(datetime.combine(day.date(), time(), ZoneInfo("Europe/Madrid")).timestamp())
    try:
        assert get_report(gateway, **params).json()["provenance"]["entries"]["count"] == 9
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            assert conn.execute(text(kept), {"s": start}).scalar_one() == 9
            conn.execute(text("UPDATE report_digests SET entries = 1000 WHERE start_hour = :s"),
                         {"s": start})  # fmt: skip
        # Today's minutes move only today's marker: the kept row (altered here) is read.
        post(gateway, [envelope(key, "meter-1", today, 400_000, rng)])
        gateway.seal()
        entries = get_report(gateway, **params).json()["provenance"]["entries"]
        assert entries["count"] == 1000  # the day's row, read as kept
        post(gateway, envelopes[-1:])  # a late minute into that day
        gateway.seal()
        entries = get_report(gateway, **params).json()["provenance"]["entries"]
        assert entries["count"] == 10
        with engine.connect() as conn:
            assert conn.execute(text(kept), {"s": start}).scalar_one() == 10
    finally:
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(text("DELETE FROM report_digests"))
        engine.dispose()
