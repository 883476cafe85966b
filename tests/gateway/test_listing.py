"""GET /v1/communities and GET /v1/devices: paged by id, scoped to what a key may read."""

from __future__ import annotations

from typing import Any

import httpx

from tests.gateway.server import Gateway
from tests.gateway.test_api import is_problem, unique


def walk(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, following `next` page by page."""
    items: list[dict[str, Any]] = []
    after = None
    while True:
        page = client.get(path, params={**params, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"items", "next"}
        items += body["items"]
        after = body["next"]
        if after is None:
            return items
        assert after == body["items"][-1]["id"]


def test_pages_follow_each_other_in_byte_order(gateway: Gateway) -> None:
    community = unique("Hoa")  # upper case sorts before lower case in byte order
    for suffix in ("a", "B", "_c", "d.e", "0"):
        gateway.device(f"{community}-{suffix}", community)
    gateway.community(unique("hoa-empty"))
    everything = gateway.admin.get("/v1/communities", params={"limit": 1000}).json()
    paged = walk(gateway.admin, "/v1/communities", limit=2)
    assert paged == everything["items"] and everything["next"] is None
    ids = [c["id"] for c in paged]
    assert ids == sorted(ids, key=lambda i: i.encode()) and len(set(ids)) == len(ids)
    devices = walk(gateway.admin, "/v1/devices", community=community, limit=2)
    assert [d["id"] for d in devices] == sorted(
        (f"{community}-{s}" for s in ("a", "B", "_c", "d.e", "0")), key=str.encode
    )
    assert (
        gateway.admin.get("/v1/devices", params={"limit": 5, "community": community}).json()["next"]
        is None
    )  # exactly one page: no empty page follows


def test_an_item_says_what_the_directory_holds(gateway: Gateway) -> None:
    community, device = unique("hoa"), unique("meter")
    key = gateway.device(device, community)
    [item] = gateway.admin.get("/v1/devices", params={"community": community}).json()["items"]
    assert item["id"] == device and item["community_id"] == community
    assert item["public_key"] == key.public_key_b64 and item["revoked"] is False
    assert item["revoked_at"] is None and item["created_at"].endswith("Z")
    gateway.admin.post(f"/v1/devices/{device}/revoke")
    [item] = gateway.admin.get("/v1/devices", params={"community": community}).json()["items"]
    assert item["revoked"] is True and item["revoked_at"].endswith("Z")
    page = gateway.admin.get("/v1/communities", params={"after": community[:-1], "limit": 1})
    assert page.json()["items"][0]["id"] == community
    assert page.json()["items"][0]["name"] == community


def test_a_scoped_key_sees_only_its_communities(gateway: Gateway) -> None:
    mine, theirs = unique("hoa-mine"), unique("hoa-theirs")
    gateway.device(f"{mine}-m", mine)
    gateway.device(f"{theirs}-m", theirs)
    with gateway.client(gateway.app_key(f"read:{mine}")) as client:
        assert [c["id"] for c in walk(client, "/v1/communities")] == [mine]
        assert [d["id"] for d in walk(client, "/v1/devices")] == [f"{mine}-m"]
        assert [d["id"] for d in walk(client, "/v1/devices", community=mine)] == [f"{mine}-m"]
        # Another community's devices answer as if it did not exist.
        assert is_problem(client.get("/v1/devices", params={"community": theirs}), 404)
    with gateway.client(gateway.app_key("audit")) as client:
        ids = {c["id"] for c in walk(client, "/v1/communities")}
        assert {mine, theirs} <= ids
        devices = {d["id"] for d in walk(client, "/v1/devices")}
        assert {f"{mine}-m", f"{theirs}-m"} <= devices
    with gateway.client() as anonymous:
        assert is_problem(anonymous.get("/v1/communities"), 401)
        assert is_problem(anonymous.get("/v1/devices"), 401)
    assert is_problem(gateway.admin.get("/v1/devices", params={"community": unique("no")}), 404)


def test_every_bad_parameter_is_a_422(gateway: Gateway) -> None:
    for path in ("/v1/communities", "/v1/devices"):
        for params in (
            {"limit": "0"},
            {"limit": "1001"},
            {"limit": "ten"},
            {"after": "bad id!"},
            {"after": "\x00"},
            {"after": "x" * 65},
        ):
            assert is_problem(gateway.admin.get(path, params=params), 422), (path, params)
    for community in ("\x00", "a b", "-leading-dash"):
        reply = gateway.admin.get("/v1/devices", params={"community": community})
        assert is_problem(reply, 422, "community")


def test_the_registry_entries_for_auditors(gateway: Gateway) -> None:
    community = unique("hoa")
    gateway.device(unique("m"), community)
    with gateway.client(gateway.app_key("audit")) as client:
        everything = client.get("/v1/registry").json()
        assert everything["next"] is None
        paged, after = [], -1
        while after is not None:
            page = client.get("/v1/registry", params={"after": after, "limit": 2}).json()
            paged += page["entries"]
            after = page["next"]
        assert paged == everything["entries"]
        payloads = [e["entry"]["payload"] for e in paged]
        assert [p["seq"] for p in payloads] == list(range(1, len(paged) + 1))
        assert payloads[-1]["action"] == "register_device"
        tag = paged[-1]["log_tag_id"]
        assert client.get(f"/v1/entries/{tag}").json()["entry"] == paged[-1]["entry"]
        assert is_problem(client.get("/v1/registry", params={"limit": 0}), 422)
        assert is_problem(client.get("/v1/registry", params={"after": -2}), 422)
    with gateway.client(gateway.app_key(f"read:{community}")) as reader:
        assert is_problem(reader.get("/v1/registry"), 403)
    with gateway.client() as anonymous:
        assert is_problem(anonymous.get("/v1/registry"), 401)
