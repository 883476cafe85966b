"""The pinned HTTP surface over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ledger.keys import NamedKey
from ledger.verify import verify_bundle, verify_consistency_files
from tests.gateway.server import Gateway

_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{datetime.now(UTC).strftime('%H%M%S%f')}"


# Minutes count back from one moment, so a seq always has the same minute: an envelope
# built twice is the same envelope, and two seqs never claim one minute.
ANCHOR = datetime.now(UTC).replace(second=0, microsecond=0)


def minute(device: str, seq: int, **extra: Any) -> dict[str, Any]:
    start = ANCHOR - timedelta(minutes=10 + seq)
    payload = {
        "device_id": device,
        "seq": seq,
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period_s": 60,
        "readings": {
            "solar_pv": {"unit": "Wh", "sum": 20.0},
            "load": {"unit": "W", "n": 12, "missing": 0, "avg": 600.0, "min": 400.0, "max": 900.0},
            "fan": {"unit": "bool", "any": True, "on_fraction": 0.25},
        },
    }
    payload.update(extra)
    return payload


def envelope(key: NamedKey, payload: dict[str, Any]) -> dict[str, Any]:
    return {"payload": payload, "sig": key.sign_payload(payload)}


def submit(gateway: Gateway, *envelopes: dict[str, Any]) -> list[dict[str, Any]]:
    with gateway.client() as client:
        reply = client.post(
            "/v1/entries", json={"contract": "energy_minute", "envelopes": list(envelopes)}
        )
    assert reply.status_code == 200, reply.text
    results: list[dict[str, Any]] = reply.json()["results"]
    return results


def is_problem(reply: httpx.Response, status: int, detail: str = "") -> bool:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    body = reply.json()
    assert body["status"] == status and body["title"]
    assert detail in body["detail"], body
    return True


def test_the_legacy_patio_request_with_keys_added(gateway: Gateway) -> None:
    community = unique("hoa")
    hub = gateway.device(unique("patio-hub"), community)
    data = {
        "amount": "5W",
        "datetime": "2021-10-10 10:10",
        "sensor_id": "sensor",
        "type": "c_type",
        "community_unique_id": community,
    }
    signed = {"device_id": hub.name, "seq": 1, "dataToStore": data}
    request = {
        "data": {"dataToStore": data},
        "keys": {"device_id": hub.name, "seq": 1, "sig": hub.sign_payload(signed)},
    }
    with gateway.client() as client:
        saved = client.post("/api/patio_save_energy", json=request)
        assert saved.status_code == 200, saved.text
        tag = saved.json()["log_tag"]
        assert saved.json()["dataToStore"] == data
        assert len(tag) == 70 and tag.startswith("c274b5")
        again = client.post("/api/patio_save_energy", json=request)
        assert again.json()["log_tag"] == tag
        unsigned = client.post(
            "/api/patio_save_energy", json={"data": {"dataToStore": data}, "keys": {}}
        )
        assert is_problem(unsigned, 422)
    gateway.seal()
    reader = gateway.app_key(f"read:{community}")
    with gateway.client(reader) as client:
        loaded = client.post(
            "/api/patio_load_energy_log", json={"data": {"log_tag_id": tag}, "keys": {}}
        )
        assert loaded.status_code == 200, loaded.text
    body = loaded.json()
    assert body["energy_log"] == data
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    assert verify_bundle(body["proof"], log_key=log_key).bundle.log_tag_id == tag


def test_a_batch_with_good_and_bad_envelopes(gateway: Gateway) -> None:
    community = unique("hoa")
    device = gateway.device(unique("meter"), community)
    stranger = NamedKey.generate(unique("stranger"))
    good = envelope(device, minute(device.name, 1))
    bad_sig = {"payload": minute(device.name, 2), "sig": good["sig"]}
    false_number = envelope(device, minute(device.name, 3, period_s=False))
    unknown_field = envelope(device, minute(device.name, 4, extra="x"))
    future = minute(device.name, 5)
    future["start"] = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:00:00Z")
    off_minute = minute(device.name, 6)
    off_minute["start"] = off_minute["start"].replace(":00Z", ":30Z")
    string_number = minute(device.name, 7)
    string_number["readings"]["load"]["avg"] = "600"
    results = submit(
        gateway,
        good,
        bad_sig,
        false_number,
        unknown_field,
        envelope(device, future),
        envelope(device, off_minute),
        envelope(device, string_number),
        envelope(stranger, minute(stranger.name, 1)),
        {"payload": "nope"},
        envelope(device, minute(device.name, 8)),
    )
    statuses = [r["status"] for r in results]
    assert statuses == ["accepted"] + ["rejected"] * 8 + ["accepted"]
    errors = [r["error"] for r in results]
    assert "signature" in errors[1] and results[1]["code"] == 401
    assert "period_s" in errors[2]
    assert "extra" in errors[3].lower()
    assert "future" in errors[4]
    assert "not on the minute" in errors[5]
    assert "avg" in errors[6]
    assert "not registered" in errors[7] and results[7]["code"] == 403
    assert results[9]["log_tag_id"].startswith("c274b5")


def test_a_full_batch_is_recorded_in_order_across_the_writer_chunks(gateway: Gateway) -> None:
    # 1,000 envelopes reach the writer in chunks (gateway.submissions.PRECHECK_CHUNK).
    device = gateway.device(unique("meter"), unique("hoa"))
    envelopes = [envelope(device, minute(device.name, seq)) for seq in range(1, 1001)]
    forged = {99, 100, 500, 999}  # at and around chunk edges
    for index in forged:
        envelopes[index]["sig"] = envelopes[0]["sig"]
    envelopes[600] = envelopes[5]  # a resend of an envelope of an earlier chunk
    results = submit(gateway, *envelopes)
    expected = ["rejected" if i in forged else "accepted" for i in range(1000)]
    expected[600] = "duplicate"
    assert [r["status"] for r in results] == expected
    assert results[600]["log_tag_id"] == results[5]["log_tag_id"]
    with gateway.client(gateway.admin_token) as client:
        indexes = [
            client.get(f"/v1/entries/{results[i]['log_tag_id']}").json()["index"]
            for i in (0, 98, 101, 199, 200, 499, 501, 998)
        ]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    again = submit(gateway, *envelopes)
    assert [r["status"] for r in again] == [
        "rejected" if i in forged else "duplicate" for i in range(1000)
    ]
    assert [r["log_tag_id"] for r in again] == [r["log_tag_id"] for r in results]


def test_resends_are_idempotent_and_conflicts_refused(gateway: Gateway) -> None:
    device = gateway.device(unique("meter"), unique("hoa"))
    payload = minute(device.name, 42)
    first = submit(gateway, envelope(device, payload))[0]
    again = submit(gateway, envelope(device, payload), envelope(device, payload))
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert {r["log_tag_id"] for r in again} == {first["log_tag_id"]}
    other = minute(device.name, 42, readings={"m": {"unit": "Wh", "sum": 1.0}})
    conflict = submit(gateway, envelope(device, other))[0]
    assert conflict["status"] == "rejected" and conflict["code"] == 409
    assert conflict["log_tag_id"] == first["log_tag_id"]
    with gateway.client() as client:
        reply = client.post(
            "/api/energy_minute", json={"data": envelope(device, other), "keys": {}}
        )
    assert is_problem(reply, 409, "kept as evidence")
    assert reply.json()["log_tag_id"] == first["log_tag_id"]


def test_proofs_wait_for_the_seal_then_verify(gateway: Gateway) -> None:
    community = unique("hoa")
    device = gateway.device(unique("meter"), community)
    tag = submit(gateway, envelope(device, minute(device.name, 1)))[0]["log_tag_id"]
    reader = gateway.app_key(f"read:{community}")
    with gateway.client(reader) as client:
        early = client.get(f"/v1/entries/{tag}/proof")
        assert is_problem(early, 409, "not covered by a checkpoint")
        assert int(early.headers["retry-after"]) >= 1
        gateway.seal()
        bundle = client.get(f"/v1/entries/{tag}/proof").json()
        entry = client.get(f"/v1/entries/{tag}").json()
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    verified = verify_bundle(bundle, log_key=log_key)
    assert verified.bundle.leaf_index == entry["index"] and entry["sealed"]
    assert entry["community_id"] == community and entry["entry"]["contract"] == "energy_minute@1"


def test_consistency_between_two_checkpoints(gateway: Gateway, tmp_path: Any) -> None:
    device = gateway.device(unique("meter"), unique("hoa"))
    submit(gateway, envelope(device, minute(device.name, 1)))
    old = gateway.seal()
    submit(gateway, *(envelope(device, minute(device.name, s)) for s in range(2, 6)))
    new = gateway.seal()
    assert new["tree_size"] > old["tree_size"]
    with gateway.client() as client:
        proof = client.get(
            "/v1/proofs/consistency", params={"first": old["tree_size"], "second": new["tree_size"]}
        ).json()
        history = client.get("/v1/checkpoints", params={"after": old["tree_size"] - 1}).json()
        latest = client.get("/v1/checkpoint").text
        assert is_problem(
            client.get("/v1/proofs/consistency", params={"first": 5, "second": 3}), 422
        )
        assert is_problem(
            client.get("/v1/proofs/consistency", params={"first": 1, "second": 10**9}), 404
        )
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    verify_consistency_files(old["note"], new["note"], proof, log_key=log_key)
    assert [c["tree_size"] for c in history["checkpoints"]][:2] == [
        old["tree_size"],
        new["tree_size"],
    ]
    assert latest.startswith("patio-ledger.local/log\n")


def test_apps_read_only_their_communities(gateway: Gateway) -> None:
    a, b = unique("hoa-a"), unique("hoa-b")
    dev_a, dev_b = gateway.device(unique("m"), a), gateway.device(unique("m"), b)
    tag_a = submit(gateway, envelope(dev_a, minute(dev_a.name, 1)))[0]["log_tag_id"]
    tag_b = submit(gateway, envelope(dev_b, minute(dev_b.name, 1)))[0]["log_tag_id"]
    reader_a = gateway.app_key(f"read:{a}")
    auditor = gateway.app_key("audit")
    with gateway.client(reader_a) as client:
        assert client.get(f"/v1/entries/{tag_a}").status_code == 200
        assert is_problem(client.get(f"/v1/entries/{tag_b}"), 404)
        assert is_problem(client.get(f"/v1/entries/{tag_b}/proof"), 404)
        assert is_problem(client.get("/v1/entries", params={"community": b}), 403)
        listed = client.get("/v1/entries").json()["entries"]
        assert {e["community_id"] for e in listed} == {a}
        assert is_problem(client.get(f"/v1/communities/{b}/latest"), 403)
        assert is_problem(client.post("/v1/communities", json={"id": "x", "name": "x"}), 403)
        assert is_problem(client.get("/v1/export"), 403)
        load = client.post("/api/patio_load_energy_log", json={"data": {"log_tag_id": tag_b}})
        assert is_problem(load, 404)
    with gateway.client(auditor) as client:
        assert client.get(f"/v1/entries/{tag_b}").status_code == 200
        assert client.get("/v1/export", params={"limit": 5}).status_code == 200
    with gateway.client() as anonymous:
        assert is_problem(anonymous.get(f"/v1/entries/{tag_a}"), 401)
        assert is_problem(anonymous.post("/v1/apps", json={"name": "x", "scopes": ["audit"]}), 401)
    with gateway.client("papp_not-a-key") as forged:
        assert is_problem(forged.get(f"/v1/entries/{tag_a}"), 401)


def test_queries_by_community_device_and_time(gateway: Gateway) -> None:
    community = unique("hoa")
    one, two = gateway.device(unique("m"), community), gateway.device(unique("m"), community)
    declared = {"sensors": {"solar_pv": {"role": "generation", "unit": "Wh"},
                            "load": {"role": "consumption", "unit": "W"}}}  # fmt: skip
    for device in (one, two):  # /latest sums power by the roles devices declare
        path = f"/v1/devices/{device.name}/profile"
        assert gateway.admin.post(path, json={"profile": declared}).status_code == 200
    submit(gateway, *(envelope(one, minute(one.name, s)) for s in range(1, 6)))
    submit(gateway, envelope(two, minute(two.name, 1)))
    reader = gateway.app_key(f"read:{community}")
    with gateway.client(reader) as client:
        page = client.get("/v1/entries", params={"community": community, "limit": 3}).json()
        assert len(page["entries"]) == 3 and page["next_cursor"] is not None
        rest = client.get(
            "/v1/entries", params={"community": community, "cursor": page["next_cursor"]}
        ).json()
        assert len(rest["entries"]) == 3 and rest["next_cursor"] is None
        starts = sorted(
            e["entry"]["payload"]["start"]
            for e in page["entries"] + rest["entries"]
            if e["device_id"] == one.name
        )
        window = client.get(
            "/v1/entries", params={"device": one.name, "from": starts[1], "to": starts[3]}
        ).json()
        assert sorted(e["entry"]["payload"]["start"] for e in window["entries"]) == starts[1:3]
        assert is_problem(
            client.get("/v1/entries", params={"community": community, "from": "yesterday"}), 422
        )
        latest = client.get(f"/v1/communities/{community}/latest").json()
    assert {d["device_id"] for d in latest["devices"]} == {one.name, two.name}
    newest_one = next(d for d in latest["devices"] if d["device_id"] == one.name)
    assert newest_one["start"] == starts[-1].replace("Z", ".000Z")
    assert latest["power"] == {
        "generation_w": 2400.0,
        "consumption_w": 1200.0,
        "grid_import_w": None,
        "grid_export_w": None,
        "net_w": 1200.0,
    }


def test_revoked_and_rotated_keys(gateway: Gateway) -> None:
    community = unique("hoa")
    device = gateway.device(unique("meter"), community)
    old_tag = submit(gateway, envelope(device, minute(device.name, 1)))[0]["log_tag_id"]
    new_key = NamedKey.generate(device.name)
    rotated = gateway.admin.post(
        f"/v1/devices/{device.name}/rotate", json={"public_key": new_key.public_key_b64}
    )
    assert rotated.status_code == 200, rotated.text
    results = submit(
        gateway, envelope(device, minute(device.name, 2)), envelope(new_key, minute(device.name, 3))
    )
    assert [r["status"] for r in results] == ["rejected", "accepted"]
    gateway.seal()
    auditor = gateway.app_key("audit")
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    with gateway.client(auditor) as client:
        bundle = client.get(f"/v1/entries/{old_tag}/proof").json()
        assert bundle["device_key"] == device.public_key_b64  # the key that signed it then
        verify_bundle(bundle, log_key=log_key)
        registration = client.get(f"/v1/entries/{rotated.json()['log_tag_id']}").json()
    assert registration["entry"]["payload"]["action"] == "rotate_device_key"
    assert gateway.admin.post(f"/v1/devices/{device.name}/revoke").json()["revoked"]
    refused = submit(gateway, envelope(new_key, minute(device.name, 4)))[0]
    assert (
        refused["status"] == "rejected" and "revoked" in refused["error"] and refused["code"] == 403
    )
    with gateway.client(auditor) as client:
        verify_bundle(client.get(f"/v1/entries/{old_tag}/proof").json(), log_key=log_key)


def test_admin_inputs_are_checked(gateway: Gateway) -> None:
    admin = gateway.admin
    community = unique("hoa")
    assert admin.post("/v1/communities", json={"id": community, "name": "A"}).status_code == 201
    assert is_problem(admin.post("/v1/communities", json={"id": community, "name": "A"}), 409)
    assert is_problem(admin.post("/v1/communities", json={"id": "bad id!", "name": "A"}), 422)
    assert is_problem(
        admin.post(
            "/v1/devices",
            json={
                "id": "d1",
                "community_id": "nowhere",
                "public_key": NamedKey.generate("d").public_key_b64,
            },
        ),
        404,
    )
    assert is_problem(
        admin.post(
            "/v1/devices", json={"id": "d1", "community_id": community, "public_key": "AAAA"}
        ),
        422,
    )
    assert is_problem(
        admin.post(
            "/v1/devices",
            json={
                "id": "_registry",
                "community_id": community,
                "public_key": NamedKey.generate("d").public_key_b64,
            },
        ),
        422,
    )
    assert is_problem(admin.post("/v1/apps", json={"name": "x", "scopes": ["write:all"]}), 422)
    assert is_problem(admin.post("/v1/devices/nobody/revoke"), 404)
    assert is_problem(admin.post("/v1/apps/999999/rotate"), 404)
    created = admin.post("/v1/apps", json={"name": "x", "scopes": [f"read:{community}"]}).json()
    rotated = admin.post(f"/v1/apps/{created['id']}/rotate").json()
    with gateway.client(created["api_key"]) as old:
        assert is_problem(old.get("/v1/entries"), 401)
    with gateway.client(rotated["api_key"]) as new:
        assert new.get("/v1/entries").status_code == 200


def test_bad_bodies_never_cause_a_5xx(gateway: Gateway) -> None:
    with gateway.client() as client:
        as_json = {"content-type": "application/json"}
        assert is_problem(client.post("/v1/entries", content=b"{", headers=as_json), 422, "JSON")
        assert is_problem(
            client.post("/v1/entries", content=b"\xff{}", headers=as_json), 422, "Invalid JSON"
        )
        # Malformed elements are answered per slot (tests/gateway/test_batches.py); a body
        # without an envelopes array is refused whole.
        not_a_list = b'{"contract": "energy_minute", "envelopes": 7}'
        assert is_problem(
            client.post("/v1/entries", content=not_a_list, headers=as_json),
            422,
            "body.envelopes: Input should be a valid list",
        )
        assert is_problem(
            client.post("/v1/entries", content=b"{}", headers={"content-type": "text/plain"}),
            422,
            "JSON",
        )
        assert is_problem(
            client.post("/v1/entries", json={"contract": "nope", "envelopes": [{}]}), 404
        )
        assert is_problem(
            client.post("/v1/entries", json={"contract": "energy_minute", "envelopes": []}), 422
        )
        assert is_problem(
            client.post(
                "/v1/entries", json={"contract": "energy_minute", "envelopes": [{}] * 1001}
            ),
            422,
        )
        big = b'{"contract": "energy_minute", "envelopes": [' + b'{"a": 1},' * 200_000 + b"{}]}"
        assert is_problem(
            client.post("/v1/entries", content=big, headers={"content-type": "application/json"}),
            413,
        )

        def chunks() -> Any:
            yield b'{"contract": "energy_minute", "envelopes": ['
            for _ in range(2000):
                yield b'{"payload": "' + b"x" * 1000 + b'"},'
            yield b"{}]}"

        chunked = client.post(
            "/v1/entries", content=chunks(), headers={"content-type": "application/json"}
        )
        assert is_problem(chunked, 413)
        assert is_problem(
            client.post("/api/patio_load_energy_log", json={"data": {"log_tag_id": "zz"}}), 401
        )
        assert is_problem(client.get("/v1/stream", headers={"Authorization": "Basic x"}), 401)
        assert is_problem(client.get("/v1/nothing-here"), 404)


def test_health_and_metrics(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["status"] == "ready"
        metrics = client.get("/metrics").text
    assert "patio_submissions_total" in metrics and "patio_checkpoint_tree_size" in metrics
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    for name in ("energy_minute", "patio_save_energy", "patio_load_energy_log"):
        assert f"/api/{name}" in spec["paths"]


def read_events(
    gateway: Gateway,
    token: str,
    params: dict[str, str],
    last_id: str | None,
    count: int,
    ready: threading.Event | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """Read `count` events from the stream; `ready` is set when its `ready` event arrives."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    events: list[tuple[str, str, dict[str, Any]]] = []
    with httpx.stream(
        "GET", f"{gateway.url}/v1/stream", params=params, headers=headers, timeout=20
    ) as reply:
        assert reply.status_code == 200
        fields: dict[str, str] = {}
        for line in reply.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
                continue
            if fields.get("event") == "ready" and ready is not None:
                ready.set()  # the stream is open: what is committed from now on, it sends
            elif fields.get("event") and fields["event"] != "ready":
                events.append((fields["event"], fields["id"], json.loads(fields["data"])))
            fields = {}
            if len(events) >= count:
                break
    return events


def test_the_stream_resumes_from_last_event_id(gateway: Gateway) -> None:
    community, elsewhere = unique("hoa"), unique("hoa")
    device, other = gateway.device(unique("m"), community), gateway.device(unique("m"), elsewhere)
    reader = gateway.app_key(f"read:{community}")
    collected: list[Any] = []
    opened = threading.Event()
    listener = threading.Thread(
        target=lambda: collected.extend(
            read_events(gateway, reader, {"community": community}, None, 3, opened)
        )
    )
    listener.start()
    assert opened.wait(20), "the stream did not open"
    submit(gateway, envelope(other, minute(other.name, 1)))  # not visible to this app
    tags = [
        submit(gateway, envelope(device, minute(device.name, s)))[0]["log_tag_id"]
        for s in range(1, 4)
    ]
    listener.join(timeout=20)
    assert [e[2]["log_tag_id"] for e in collected if e[0] == "entry"] == tags
    assert all(e[2]["community_id"] == community for e in collected)
    resume_after_first = collected[0][1]
    more = [
        submit(gateway, envelope(device, minute(device.name, s)))[0]["log_tag_id"]
        for s in range(4, 6)
    ]
    resumed = read_events(gateway, reader, {"community": community}, resume_after_first, 4)
    assert [e[2]["log_tag_id"] for e in resumed if e[0] == "entry"] == tags[1:] + more
    with gateway.client(reader) as client:
        assert is_problem(client.get("/v1/stream", headers={"Last-Event-ID": "garbage"}), 422)
        assert is_problem(client.get("/v1/stream", params={"community": elsewhere}), 403)
