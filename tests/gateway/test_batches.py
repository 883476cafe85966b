"""POST /v1/entries: every envelope is answered in its own slot (docs/http-errors.md), on both
databases; only a body that is not a batch is refused whole."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.gateway.server import Gateway
from tests.gateway.test_api import envelope, is_problem, minute, submit, unique


def test_malformed_elements_are_answered_in_their_slots_and_the_rest_recorded(
    gateway: Gateway,
) -> None:
    community = unique("batch")
    key = gateway.device(unique("bm"), community)
    revoked = gateway.device(unique("br"), community)
    assert gateway.admin.post(f"/v1/devices/{revoked.name}/revoke").status_code == 200
    stranger = gateway.device(unique("bs"), community)  # signs as another device
    first = envelope(key, minute(key.name, 1))
    conflicting = envelope(
        key, {**minute(key.name, 1), "readings": {"x": {"unit": "Wh", "sum": 1.0}}}
    )
    nul_device = envelope(key, minute("meter\x00-1", 9))
    batch: list[Any] = [
        first,
        envelope(key, minute(key.name, 2)),
        first,  # the same bytes again: a duplicate
        conflicting,  # the same (device, seq), other bytes
        envelope(key, minute(unique("nobody"), 1)),  # no such device
        envelope(revoked, minute(revoked.name, 1)),  # revoked
        7,  # the seventh element is not a JSON object
        nul_device,  # a device id no database can store
        None,
        [],
        "envelope",
        {"payload": minute(key.name, 3)},  # no signature
        envelope(stranger, minute(key.name, 4)),  # signed by another device's key
        envelope(key, minute(key.name, 5)),
    ]
    reply = gateway.client().post(
        "/v1/entries", json={"contract": "energy_minute", "envelopes": batch}
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["code"] for r in results] == [
        201, 201, 200, 409, 403, 403, 422, 422, 422, 422, 422, 422, 401, 201,
    ]  # fmt: skip
    statuses = {201: "accepted", 200: "duplicate"}
    for result in results:
        assert result["status"] == statuses.get(result["code"], "rejected"), result
        assert (result["error"] is None) == (result["code"] in statuses), result
    assert results[2]["log_tag_id"] == results[0]["log_tag_id"]
    assert results[3]["log_tag_id"] == results[0]["log_tag_id"]  # the entry it conflicts with
    assert "device_id" in results[7]["error"]
    with gateway.client(gateway.admin_token) as client:
        for slot in (0, 1, 13):
            stored = client.get(f"/v1/entries/{results[slot]['log_tag_id']}")
            assert stored.status_code == 200, stored.text
            assert stored.json()["entry"]["payload"] == batch[slot]["payload"]
        page = client.get("/v1/entries", params={"device": key.name}).json()["entries"]
    assert [e["entry"]["payload"]["seq"] for e in page] == [1, 2, 5]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"[]", 422, "body: Input should be a valid dictionary"),
        (b'"batch"', 422, "body"),
        (b"{", 422, "JSON"),
        (b'{"contract": "energy_minute"}', 422, "body.envelopes: Field required"),
        (b'{"contract": "energy_minute", "envelopes": {}}', 422, "body.envelopes"),
        (b'{"contract": "energy_minute", "envelopes": []}', 422, "body.envelopes"),
        (b'{"contract": "energy_minute", "envelopes": [' + b",".join([b"7"] * 1001) + b"]}",
         422, "body.envelopes"),
        (b'{"contract": "nope", "envelopes": [7]}', 404, "nope"),
        (b'{"contract": "energy_minute", "envelopes": ["' + b"x" * 1_100_000 + b'"]}', 413, ""),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_batch_is_refused_whole(
    gateway: Gateway, body: bytes, status: int, detail: str
) -> None:
    with gateway.client() as client:
        reply = client.post(
            "/v1/entries", content=body, headers={"content-type": "application/json"}
        )
    assert is_problem(reply, status, detail)


@pytest.mark.parametrize("where", ["envelope", "payload", "reading"])
def test_a_body_with_a_duplicate_key_is_refused_whole(gateway: Gateway, where: str) -> None:
    """As ledger.encoding.parse_json: a duplicate key anywhere is a 422, not the last value,
    even where the last value is the one signed."""
    key = gateway.device(unique("dk"), unique("dup"))
    good = envelope(key, minute(key.name, 1))
    text = json.dumps(good, separators=(",", ":"))
    signed = json.dumps(good["payload"]["readings"]["solar_pv"], separators=(",", ":"))
    doubled = {
        "envelope": text.replace('"sig":', '"sig":"AAAA","sig":'),
        "payload": text.replace('"seq":1,', '"seq":2,"seq":1,'),
        "reading": text.replace(signed, signed[:-1] + ',"unit":"Wh"}'),
    }[where]
    assert doubled != text and json.loads(doubled) == good  # the last values are the signed ones
    body = f'{{"contract":"energy_minute","envelopes":[{doubled}]}}'.encode()
    with gateway.client() as client:
        reply = client.post(
            "/v1/entries", content=body, headers={"content-type": "application/json"}
        )
        assert is_problem(reply, 422, "duplicate key")
        assert submit(gateway, good)[0]["code"] == 201  # nothing was recorded before


@pytest.mark.parametrize("length", [b"-1", b"abc"])
def test_a_request_the_http_parser_refuses_is_a_plain_400(gateway: Gateway, length: bytes) -> None:
    """docs/http-errors.md: uvicorn's parser answers what is not HTTP, before the gateway runs."""
    host, _, port = gateway.url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n"
        )
        answer = b""
        while chunk := conn.recv(4096):  # the parser closes the connection after answering
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: text/plain" in head.lower(), answer
    assert body == b"Invalid HTTP request received.", answer
