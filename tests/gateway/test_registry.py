"""The registry on the log is the truth: each registry change's entry and directory row commit
together or not at all, concurrent changes of one id record one entry, a refused change
leaves the log as it was, and `patio audit` finds a directory that disagrees with the log."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import create_engine, text

from ledger.keys import NamedKey
from tests.gateway.server import Gateway, patio
from tests.gateway.test_api import is_problem, unique
from tests.gateway.test_multiprocess import pair  # noqa: F401 -- two gateways, one database

T = TypeVar("T")
RACERS = 12


def race(count: int, action: Callable[[int], T]) -> list[T]:
    """Run `action(0..count-1)` on as many threads, released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return action(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def post(gateway: Gateway, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """An admin POST on a client of its own (httpx clients are not shared across threads)."""
    with gateway.client(gateway.admin_token) as client:
        return client.post(path, json=body) if body is not None else client.post(path)


def registry_changes(gateway: Gateway, subject_id: str) -> list[dict[str, Any]]:
    """The registry payloads on the log about one id, in log order (read with an audit key)."""
    found = []
    with gateway.client(gateway.app_key("audit")) as client:
        start: int | None = 0
        while start is not None:
            page = client.get("/v1/export", params={"start": start, "limit": 5000}).json()
            for item in page["entries"]:
                payload = item["entry"]["payload"]
                if payload["device_id"] == "_registry" and payload["subject"]["id"] == subject_id:
                    found.append(payload)
            start = page["next"]
    return found


def log_size(gateway: Gateway) -> int:
    """Every entry committed so far (sealing covers them all)."""
    size: int = gateway.seal()["tree_size"]
    return size


def listed_device(gateway: Gateway, community: str, device_id: str) -> dict[str, Any]:
    """The device as GET /v1/devices lists it."""
    items = gateway.admin.get("/v1/devices", params={"community": community}).json()["items"]
    [item] = [i for i in items if i["id"] == device_id]
    return dict(item)


def test_concurrent_registrations_of_one_device_record_one(gateway: Gateway) -> None:
    community, device = unique("hoa"), unique("meter")
    gateway.community(community)
    keys = [NamedKey.generate(device).public_key_b64 for _ in range(RACERS)]
    body = {"id": device, "community_id": community}
    replies = race(RACERS, lambda i: post(gateway, "/v1/devices", {**body, "public_key": keys[i]}))
    assert sorted(r.status_code for r in replies) == [201] + [409] * (RACERS - 1)
    assert all(is_problem(r, 409) for r in replies if r.status_code != 201)
    [winner] = [r.json() for r in replies if r.status_code == 201]
    [logged] = registry_changes(gateway, device)
    assert logged["action"] == "register_device"
    assert logged["subject"]["public_key"] == winner["public_key"]
    assert listed_device(gateway, community, device)["public_key"] == winner["public_key"]


def test_concurrent_registrations_of_one_community_record_one(gateway: Gateway) -> None:
    community = unique("hoa")
    replies = race(
        RACERS,
        lambda i: post(gateway, "/v1/communities", {"id": community, "name": f"Calle {i}"}),
    )
    assert sorted(r.status_code for r in replies) == [201] + [409] * (RACERS - 1)
    [winner] = [r.json() for r in replies if r.status_code == 201]
    [logged] = registry_changes(gateway, community)
    assert logged["action"] == "register_community"
    assert logged["subject"]["name"] == winner["name"]
    listed = gateway.admin.get("/v1/communities", params={"after": community[:-1]}).json()
    assert {"id": community, "name": winner["name"]}.items() <= listed["items"][0].items()


def test_concurrent_registrations_of_many_ids_all_record(gateway: Gateway) -> None:
    community = unique("hoa")
    gateway.community(community)
    devices = [unique(f"meter-{i}") for i in range(RACERS)]
    replies = race(
        RACERS,
        lambda i: post(
            gateway,
            "/v1/devices",
            {
                "id": devices[i],
                "community_id": community,
                "public_key": NamedKey.generate("d").public_key_b64,
            },
        ),
    )
    assert [r.status_code for r in replies] == [201] * RACERS
    seqs = {registry_changes(gateway, d)[0]["seq"] for d in devices}
    assert len(seqs) == RACERS  # each took its own registry seq, none was re-signed over


def test_concurrent_revocations_record_one(gateway: Gateway) -> None:
    community, device = unique("hoa"), unique("meter")
    key = gateway.device(device, community)
    replies = race(RACERS, lambda _: post(gateway, f"/v1/devices/{device}/revoke"))
    assert sorted(r.status_code for r in replies) == [200] + [409] * (RACERS - 1)
    changes = registry_changes(gateway, device)
    assert [c["action"] for c in changes] == ["register_device", "revoke_device"]
    assert changes[1]["subject"] == {"id": device, "public_key": key.public_key_b64}
    assert listed_device(gateway, community, device)["revoked"] is True


def test_concurrent_rotations_form_one_chain_of_keys(gateway: Gateway) -> None:
    community, device = unique("hoa"), unique("meter")
    first = gateway.device(device, community).public_key_b64
    keys = [NamedKey.generate(device).public_key_b64 for _ in range(RACERS)]
    replies = race(
        RACERS,
        lambda i: post(gateway, f"/v1/devices/{device}/rotate", {"public_key": keys[i]}),
    )
    assert [r.status_code for r in replies] == [200] * RACERS
    rotations = registry_changes(gateway, device)[1:]
    assert len(rotations) == RACERS
    current = first
    for rotation in rotations:  # each replaces the key the one before it installed
        assert rotation["subject"]["old_public_key"] == current
        current = rotation["subject"]["public_key"]
    assert sorted(r["subject"]["public_key"] for r in rotations) == sorted(keys)
    assert listed_device(gateway, community, device)["public_key"] == current


def test_rotations_racing_a_revocation(gateway: Gateway) -> None:
    community, device = unique("hoa"), unique("meter")
    gateway.device(device, community)
    keys = [NamedKey.generate(device).public_key_b64 for _ in range(RACERS)]

    def change(i: int) -> httpx.Response:
        if i == RACERS // 2:
            return post(gateway, f"/v1/devices/{device}/revoke")
        return post(gateway, f"/v1/devices/{device}/rotate", {"public_key": keys[i]})

    replies = race(RACERS, change)
    changes = registry_changes(gateway, device)
    actions = [c["action"] for c in changes]
    assert actions[0] == "register_device" and actions[-1] == "revoke_device"
    assert actions.count("revoke_device") == 1
    rotated = sum(1 for r in replies if r.status_code == 200) - 1  # the revocation answers 200
    assert actions.count("rotate_device_key") == rotated
    refused = [r for r in replies if r.status_code != 200]
    assert all(is_problem(r, 409) and "revoked" in r.json()["detail"] for r in refused)
    assert len(refused) == RACERS - 1 - rotated
    listed = listed_device(gateway, community, device)
    assert listed["revoked"] is True
    assert listed["public_key"] == changes[-1]["subject"]["public_key"]


def test_a_refused_change_leaves_the_log_as_it_was(gateway: Gateway) -> None:
    community, device = unique("hoa"), unique("meter")
    current = gateway.device(device, community).public_key_b64
    revoked = unique("meter")
    gateway.device(revoked, community)
    assert post(gateway, f"/v1/devices/{revoked}/revoke").status_code == 200
    key = NamedKey.generate("k").public_key_b64
    taken = {"id": device, "community_id": community, "public_key": key}
    nowhere = {"id": unique("m"), "community_id": unique("nowhere"), "public_key": key}
    before = log_size(gateway)
    refusals = [
        (post(gateway, "/v1/communities", {"id": community, "name": "again"}), 409),
        (post(gateway, "/v1/communities", {"id": unique("hoa"), "name": "nul\x00name"}), 422),
        (post(gateway, "/v1/devices", taken), 409),
        (post(gateway, "/v1/devices", nowhere), 404),
        (post(gateway, f"/v1/devices/{unique('nobody')}/rotate", {"public_key": key}), 404),
        (post(gateway, f"/v1/devices/{unique('nobody')}/revoke"), 404),
        (post(gateway, f"/v1/devices/{revoked}/rotate", {"public_key": key}), 409),
        (post(gateway, f"/v1/devices/{revoked}/revoke"), 409),
        (post(gateway, f"/v1/devices/{device}/rotate", {"public_key": current}), 409),
    ]
    for reply, status in refusals:
        assert is_problem(reply, status), reply.text
    assert log_size(gateway) == before


def _engine(gateway: Gateway) -> Any:
    """An engine on the gateway's own database, behind its back."""
    url = gateway.env.get("PATIO_DATABASE_URL")
    return create_engine(url or f"sqlite:///{gateway.data_dir / 'ledger.sqlite3'}")


@contextmanager
def tampered(gateway: Gateway, statement: str, **params: Any) -> Iterator[None]:
    """Change the directory behind the gateway's back, and put it back afterwards."""
    engine = _engine(gateway)
    with engine.begin() as conn:
        row = conn.execute(
            text("SELECT public_key FROM devices WHERE id = :id"), {"id": params["id"]}
        ).one()
        conn.execute(text(statement), params)
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE devices SET public_key = :key WHERE id = :id"),
                {"key": row.public_key, "id": params["id"]},
            )
        engine.dispose()


@pytest.mark.parametrize("where", ["--local", "--gateway"])
def test_audit_replays_the_registry_against_the_directory(gateway: Gateway, where: str) -> None:
    community, device = unique("hoa"), unique("meter")
    gateway.device(device, community)
    auditor = gateway.app_key("audit")
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    gateway.seal()
    args = ["audit", "--log-key", log_key]
    args += ["--local"] if where == "--local" else ["--gateway", gateway.url, "--api-key", auditor]
    clean = patio(*args, env=gateway.env, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "the replay" in clean.stdout and "matches" in clean.stdout
    other = NamedKey.generate("x").public_key_b64
    statement = "UPDATE devices SET public_key = :key WHERE id = :id"
    with tampered(gateway, statement, key=other, id=device):
        caught = patio(*args, env=gateway.env, check=False)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert f"TAMPER DETECTED: device {device} has public_key {other!r}" in caught.stdout
    assert patio(*args, env=gateway.env, check=False).returncode == 0


def test_two_gateway_processes_racing_on_one_database(
    pair: tuple[Gateway, Gateway],  # noqa: F811 -- the fixture
) -> None:
    """Two writers take registry seqs concurrently: the loser plans its change again."""
    gateways = pair
    community, device = unique("hoa"), unique("meter")
    gateways[0].community(community)
    keys = [NamedKey.generate(device).public_key_b64 for _ in range(RACERS)]
    body = {"id": device, "community_id": community}
    same = race(
        RACERS,
        lambda i: post(gateways[i % 2], "/v1/devices", {**body, "public_key": keys[i]}),
    )
    assert sorted(r.status_code for r in same) == [201] + [409] * (RACERS - 1)
    others = [unique(f"meter-{i}") for i in range(RACERS)]

    def register(i: int) -> httpx.Response:
        fresh = {**body, "id": others[i], "public_key": keys[i]}
        return post(gateways[i % 2], "/v1/devices", fresh)

    distinct = race(RACERS, register)
    assert [r.status_code for r in distinct] == [201] * RACERS
    [logged] = registry_changes(gateways[1], device)
    [winner] = [r.json() for r in same if r.status_code == 201]
    assert logged["subject"]["public_key"] == winner["public_key"]
    seqs = sorted(registry_changes(gateways[0], d)[0]["seq"] for d in [device, *others])
    assert seqs == list(range(seqs[0], seqs[0] + RACERS + 1))  # no seq lost or taken twice
    log_key = httpx.get(f"{gateways[0].url}/v1/log-key").text.strip()
    gateways[0].seal()
    audit = patio("audit", "--local", "--log-key", log_key, env=gateways[0].env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_failed_commit_leaves_nothing_and_a_retry_records_once(gateway: Gateway) -> None:
    """The database refuses the directory row (a trigger stands in for any failure there):
    the request fails with a 503, the registry entry went with it, and the retry records
    exactly one."""
    community = unique("hoa")
    engine = _engine(gateway)
    postgres = engine.dialect.name == "postgresql"
    create = (
        [
            "CREATE FUNCTION refuse_community() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.id = '{community}' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_community BEFORE INSERT ON communities "
            "FOR EACH ROW EXECUTE FUNCTION refuse_community()",
        ]
        if postgres
        else [
            "CREATE TRIGGER refuse_community BEFORE INSERT ON communities "
            f"WHEN NEW.id = '{community}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
    )
    drop = ["DROP TRIGGER refuse_community" + (" ON communities" if postgres else "")]
    drop += ["DROP FUNCTION refuse_community()"] if postgres else []
    before = log_size(gateway)
    with engine.begin() as conn:
        for statement in create:
            conn.execute(text(statement))
    try:
        failed = post(gateway, "/v1/communities", {"id": community, "name": "x"})
    finally:
        with engine.begin() as conn:
            for statement in drop:
                conn.execute(text(statement))
        engine.dispose()
    assert is_problem(failed, 503) and failed.headers["retry-after"]
    assert log_size(gateway) == before
    assert registry_changes(gateway, community) == []
    assert post(gateway, "/v1/communities", {"id": community, "name": "x"}).status_code == 201
    assert post(gateway, "/v1/communities", {"id": community, "name": "x"}).status_code == 409
    assert len(registry_changes(gateway, community)) == 1
