"""Alerts through a real gateway process: the admin API and CLI, readings over HTTP, an e-mail
to a real SMTP server, the delivery and its alert entry in the API, metrics, and a restart
in the middle of a pending alert."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.keys import NamedKey
from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.alerts.site import temperature
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_crash_safety import kill

COMMUNITY = "hoa-alerts"
WAIT = 30.0
PATIO = str(Path(sys.executable).with_name("patio"))  # the installed command, as users run it


def patio(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `patio`."""
    return subprocess.run(
        [PATIO, *args], env=env, capture_output=True, text=True, check=check, timeout=120
    )


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpReceiver]:
    made = SmtpReceiver()
    made.start()
    yield made
    made.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the data dir) or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    schema = f"a_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def serve(data_dir: Path, database: str | None, smtp: SmtpReceiver) -> Gateway:
    env = {
        "PATIO_SMTP_URL": smtp.url,
        "PATIO_ALERT_INTERVAL": "0.2",
        "PATIO_ALERT_RETRY_SECONDS": "1",
        "PATIO_ALERT_CLAIM_SECONDS": "1",  # an attempt cut off by a kill: settled at restart
    }
    return start_gateway(data_dir, database_url=database, extra_env=env)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, database: str | None, smtp: SmtpReceiver
) -> Iterator[Gateway]:
    server = serve(tmp_path_factory.mktemp("alerts-gateway"), database, smtp)
    server.community(COMMUNITY)
    yield server
    server.stop()


class Device:
    """A device submitting minutes over HTTP, a few minutes in the past (never in the future)."""

    def __init__(self, gateway: Gateway, device_id: str) -> None:
        self.gateway = gateway
        self.key = gateway.device(device_id, COMMUNITY)
        self.seq = 0
        self.base = (int(time.time()) // 60 - 30) * 60

    def send(self, n: int, value: float) -> None:
        self.seq += 1
        start = datetime.fromtimestamp(self.base + 60 * n, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload = {
            "device_id": self.key.name,
            "seq": self.seq,
            "start": start,
            "period_s": 60,
            "readings": {"t": temperature(value)},
        }
        envelope = {"payload": payload, "sig": NamedKey.sign_payload(self.key, payload)}
        reply = self.gateway.admin.post(
            "/v1/entries", json={"contract": "energy_minute", "envelopes": [envelope]}
        )
        assert reply.json()["results"][0]["status"] == "accepted", reply.text


def alerts(gateway: Gateway, until: Any) -> dict[str, Any]:
    """GET .../alerts until `until(body)` holds (AssertionError after WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    while True:
        body: dict[str, Any] = gateway.admin.get(f"/v1/communities/{COMMUNITY}/alerts").json()
        if until(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"alerts never reached the expected state: {body}")
        time.sleep(0.1)


def test_rules_crud_and_refusals(gateway: Gateway) -> None:
    rules = f"/v1/communities/{COMMUNITY}/alert-rules"
    rule = {
        "name": "hot",
        "condition": {"kind": "threshold", "sensor": "x", "op": ">", "value": 30, "for": 5},
    }
    created = gateway.admin.post(rules, json=rule)
    assert created.status_code == 201, created.text
    assert created.json()["condition"]["for"] == 5
    rule_id = created.json()["id"]
    changed = gateway.admin.put(f"{rules}/{rule_id}", json={**rule, "name": "hotter"})
    assert changed.json()["name"] == "hotter"
    assert gateway.admin.delete(f"{rules}/{rule_id}").status_code == 204
    missing = gateway.admin.get(f"{rules}/{rule_id}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = gateway.admin.post(rules, json={"name": "x", "condition": {"kind": "psychic"}})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    huge = gateway.admin.get(f"{rules}/{2**40}")
    assert huge.status_code == 422 and huge.headers["content-type"] == "application/problem+json"
    nowhere = gateway.admin.get("/v1/communities/nowhere/alert-rules")
    assert nowhere.status_code == 404
    assert gateway.client().get(rules).status_code == 401


def test_settings_hide_secrets_and_silences_come_and_go(gateway: Gateway) -> None:
    base = f"/v1/communities/{COMMUNITY}"
    hook = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 20}
    put = gateway.admin.put(f"{base}/alert-settings", json={"channels": [hook]})
    assert put.status_code == 200 and put.json()["channels"][0]["secret"] == "(set)"
    assert gateway.admin.get(f"{base}/alert-settings").json()["channels"][0]["secret"] == "(set)"
    short = gateway.admin.put(
        f"{base}/alert-settings", json={"channels": [{**hook, "secret": "x"}]}
    )
    assert short.status_code == 422
    window = {
        "starts_at": "2026-11-22T02:00:00Z",
        "ends_at": "2026-11-22T06:00:00Z",
        "comment": "boiler service",
    }
    created = gateway.admin.post(f"{base}/alert-silences", json=window)
    assert created.status_code == 201, created.text
    silence_id = created.json()["id"]
    listed = gateway.admin.get(f"{base}/alert-silences").json()["silences"]
    assert [s["comment"] for s in listed] == ["boiler service"]
    backwards = gateway.admin.post(
        f"{base}/alert-silences", json={**window, "ends_at": "2026-11-22T01:00:00Z"}
    )
    assert backwards.status_code == 422
    assert gateway.admin.delete(f"{base}/alert-silences/{silence_id}").status_code == 204
    assert gateway.admin.delete(f"{base}/alert-silences/{silence_id}").status_code == 404
    gateway.admin.put(f"{base}/alert-settings", json={"channels": []})


def test_an_alert_is_mailed_recorded_on_the_log_and_verifiable(
    gateway: Gateway, smtp: SmtpReceiver, tmp_path: Path
) -> None:
    settings = {"channels": [{"type": "email", "to": ["ops@example.org"]}]}
    put = gateway.admin.put(f"/v1/communities/{COMMUNITY}/alert-settings", json=settings)
    assert put.status_code == 200, put.text
    rule_file = tmp_path / "rule.json"
    rule_file.write_text(
        json.dumps(
            {
                "name": "freezing",
                "condition": {
                    "kind": "threshold",
                    "sensor": "t",
                    "op": "<",
                    "value": 5,
                    "device": "probe-1",
                },
            }
        )
    )
    env = {
        **gateway.env,
        "PATIO_GATEWAY_URL": gateway.url,
        "PATIO_ADMIN_TOKEN": gateway.admin_token,
    }
    added = patio("alerts", "--community", COMMUNITY, "add-rule", str(rule_file), env=env)
    rule_id = json.loads(added.stdout)["id"]
    device = Device(gateway, "probe-1")
    mails_before = len(smtp.inbox.items)
    device.send(0, 1.0)
    recipients, message = smtp.inbox.wait_for(mails_before + 1)[mails_before]
    assert recipients == ["ops@example.org"]
    assert message["Subject"] == "[hoa-alerts] firing: freezing probe-1/t [late]"
    body = alerts(gateway, lambda b: any(d["log_tag_id"] for d in b["deliveries"]))
    [delivery] = [d for d in body["deliveries"] if d["log_tag_id"]]
    assert (delivery["channel"], delivery["recipient"], delivery["status"]) == (
        "email",
        "ops@example.org",
        "sent",
    )

    gateway.seal()
    proof = gateway.admin.get(f"/v1/entries/{delivery['log_tag_id']}/proof")
    assert proof.status_code == 200, proof.text
    entry = proof.json()["entry"]
    assert entry["contract"] == "alert@1"
    assert entry["payload"]["recipient"] == "ops@example.org"
    assert entry["payload"]["sent_at"] == delivery["sent_at"]
    bundle = tmp_path / "bundle.json"
    bundle.write_text(proof.text)
    log_key = gateway.client().get("/v1/log-key").text.strip()
    assert patio("verify", str(bundle), "--log-key", log_key, env=gateway.env).returncode == 0

    acked = patio(
        "alerts",
        "--community",
        COMMUNITY,
        "ack",
        str(rule_id),
        "probe-1/t",
        "--by",
        "concierge",
        env=env,
    )
    assert json.loads(acked.stdout)["state"] == "acknowledged"
    again = patio(
        "alerts",
        "--community",
        COMMUNITY,
        "ack",
        str(rule_id),
        "probe-1/t",
        "--by",
        "concierge",
        env=env,
        check=False,
    )
    assert again.returncode == 1 and again.stderr.startswith(
        "patio: 409: the alert is acknowledged"
    )
    smtp.inbox.wait_for(mails_before + 2)
    metrics = gateway.client().get("/metrics").text
    assert 'patio_alert_deliveries_total{channel="email",outcome="sent"} 2.0' in metrics
    assert "patio_alert_outbox_pending 0.0" in metrics


def test_a_replaced_rule_starts_over_though_nothing_was_appended_since(gateway: Gateway) -> None:
    # The evaluator holds the states it wrote between passes; replacing a rule deletes its
    # states under it, and the next pass must see that.
    rules = f"/v1/communities/{COMMUNITY}/alert-rules"
    rule = {
        "name": "hot probe",
        "condition": {
            "kind": "threshold",
            "sensor": "t",
            "op": ">",
            "value": 30,
            "device": "probe-3",
        },
    }
    rule_id = gateway.admin.post(rules, json=rule).json()["id"]
    device = Device(gateway, "probe-3")
    device.send(0, 35.0)

    def firings(body: dict[str, Any]) -> int:
        return sum(e["subject"] == "probe-3/t" and e["state"] == "firing" for e in body["events"])

    alerts(gateway, lambda b: firings(b) == 1)
    assert gateway.admin.put(f"{rules}/{rule_id}", json=rule).is_success  # the same rule
    device.send(1, 36.0)  # still hot: firing again, as a new alert
    alerts(gateway, lambda b: firings(b) == 2)


def test_a_pending_alert_survives_a_gateway_restart(
    gateway: Gateway, smtp: SmtpReceiver, database: str | None
) -> None:
    rule = {
        "name": "warm",
        "condition": {
            "kind": "threshold",
            "sensor": "t",
            "op": ">",
            "value": 30,
            "for": 3,
            "device": "probe-2",
        },
    }
    assert gateway.admin.post(f"/v1/communities/{COMMUNITY}/alert-rules", json=rule).is_success
    device = Device(gateway, "probe-2")
    for n in range(2):
        device.send(n, 35.0)
    alerts(
        gateway,
        lambda b: any(a["subject"] == "probe-2/t" and a["state"] == "pending" for a in b["alerts"]),
    )
    gateway.process.terminate()
    gateway.process.wait(timeout=30)
    restarted = serve(gateway.data_dir, database, smtp)
    gateway.process, gateway.admin = restarted.process, restarted.admin
    gateway.url = restarted.url
    device.gateway = restarted
    for n in range(2, 4):
        device.send(n, 35.0)
    body = alerts(
        gateway,
        lambda b: any(a["subject"] == "probe-2/t" and a["state"] == "firing" for a in b["alerts"]),
    )
    states = [(e["state"], e["minute"]) for e in body["events"] if e["subject"] == "probe-2/t"]
    start = datetime.fromtimestamp(device.base + 180, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert states == [("pending", states[0][1]), ("firing", start)]  # counted across the restart


@pytest.mark.parametrize("channel", ["email", "webhook"])
def test_a_gateway_killed_between_sending_and_marking_sends_nothing_twice(
    gateway: Gateway,
    smtp: SmtpReceiver,
    receiver: HttpReceiver,
    database: str | None,
    channel: str,
) -> None:
    """At most once across a crash: the receiver has the message, the gateway is SIGKILLed
    before it hears the answer; restarted, it marks the delivery unconfirmed and never
    sends it again (docs/alerts.md)."""
    alerts(gateway, lambda b: all(d["status"] != "pending" for d in b["deliveries"]))
    recipient = "crash@example.org" if channel == "email" else receiver.url + "/hook"
    target = (
        {"type": "email", "to": [recipient]}
        if channel == "email"
        else {"type": "webhook", "url": recipient, "secret": "sixteen characters at least"}
    )
    reply = gateway.admin.put(
        f"/v1/communities/{COMMUNITY}/alert-settings", json={"channels": [target]}
    )
    assert reply.status_code == 200, reply.text
    device_id = f"crash-{channel}"
    rule = {
        "name": "crash window",
        "condition": {
            "kind": "threshold",
            "sensor": "t",
            "op": "<",
            "value": 5,
            "device": device_id,
        },
    }
    assert gateway.admin.post(f"/v1/communities/{COMMUNITY}/alert-rules", json=rule).is_success
    inbox = smtp.inbox if channel == "email" else receiver.inbox
    hold = smtp.answer if channel == "email" else receiver.answer
    before = len(inbox.items)
    hold.clear()  # the receiver takes the message and keeps the gateway waiting for its answer
    try:
        Device(gateway, device_id).send(0, 1.0)
        inbox.wait_for(before + 1)
        kill(gateway)
    finally:
        hold.set()
    restarted = serve(gateway.data_dir, database, smtp)
    gateway.process, gateway.admin, gateway.url = restarted.process, restarted.admin, restarted.url
    body = alerts(
        gateway,
        lambda b: any(
            d["recipient"] == recipient and d["status"] == "unconfirmed" for d in b["deliveries"]
        ),
    )
    [delivery] = [d for d in body["deliveries"] if d["recipient"] == recipient]
    assert delivery["attempts"] == 1 and "never finished" in delivery["last_error"]
    assert delivery["log_tag_id"] is None  # not on the log: nobody knows it was delivered
    time.sleep(3)  # a dozen passes of the restarted gateway
    assert len(inbox.items) == before + 1
    [received] = inbox.items[before:]
    if channel == "email":  # the delivery's id, the same on every attempt
        assert received[1]["Message-ID"] == f"<patio-alert.{delivery['delivery_id']}@localhost>"
    else:
        assert received.headers["Idempotency-Key"] == delivery["delivery_id"]
    metrics = gateway.client().get("/metrics").text
    assert (
        f'patio_alert_deliveries_total{{channel="{channel}",outcome="unconfirmed"}} 1.0' in metrics
    )
