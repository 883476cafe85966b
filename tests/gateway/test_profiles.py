"""Declared, not guessed: device profiles (by type or explicit) and community time zones are
registry changes on the log, shown by the listings, and /latest sums power by declared role."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from contracts.device_types import catalog
from ledger.keys import NamedKey
from tests.gateway.server import Gateway, patio
from tests.gateway.test_api import envelope, is_problem, minute, submit, unique
from tests.gateway.test_registry import registry_changes


def register(gateway: Gateway, community: str, **fields: Any) -> tuple[NamedKey, httpx.Response]:
    gateway.community(community)
    device = unique("dev")
    key = NamedKey.generate(device)
    body = {"id": device, "community_id": community, "public_key": key.public_key_b64}
    return key, gateway.admin.post("/v1/devices", json=body | fields)


def listed(gateway: Gateway, community: str) -> dict[str, dict[str, Any]]:
    items = gateway.admin.get("/v1/devices", params={"community": community}).json()["items"]
    return {item["id"]: item for item in items}


def test_a_type_is_one_word(gateway: Gateway) -> None:
    community = unique("hoa")
    key, reply = register(gateway, community, type="tasmota_plug", sensor="heatpump")
    assert reply.status_code == 201, reply.text
    profile = reply.json()["profile"]
    assert profile == {
        "type": "tasmota_plug",
        "sensors": {
            "heatpump_w": {"role": "other", "unit": "W", "min": 0, "max": 3680},
            "heatpump_wh": {"role": "consumption", "unit": "Wh", "min": 0, "max": 62},
        },
    }
    assert listed(gateway, community)[key.name]["profile"] == profile
    [logged] = registry_changes(gateway, key.name)
    assert logged["subject"]["profile"] == profile
    _, plain = register(gateway, community, type="ds18b20")
    assert plain.json()["profile"]["sensors"] == {
        "temperature": {"role": "temperature", "unit": "Cel", "min": -55, "max": 125}
    }


@pytest.mark.parametrize("name", sorted(catalog()))
def test_every_shipped_type_registers(gateway: Gateway, name: str) -> None:
    _, reply = register(gateway, unique("hoa"), type=name)
    assert reply.status_code == 201, reply.text
    assert reply.json()["profile"]["type"] == name


def test_an_explicit_profile_overrides_the_type(gateway: Gateway) -> None:
    community = unique("hoa")
    override = {"sensors": {"plug_w": {"role": "generation", "unit": "W"},
                            "extra": {"role": "other", "unit": "V"}}}  # fmt: skip
    _, reply = register(gateway, community, type="tasmota_plug", profile=override)
    assert reply.status_code == 201, reply.text
    sensors = reply.json()["profile"]["sensors"]
    assert sensors["plug_w"] == {"role": "generation", "unit": "W"}
    assert sensors["plug_wh"]["role"] == "consumption" and sensors["extra"]["unit"] == "V"
    _, bare = register(gateway, community)
    assert bare.json()["profile"] is None


def test_bad_profiles_are_refused_and_leave_nothing(gateway: Gateway) -> None:
    community = unique("hoa")
    before = gateway.seal()["tree_size"]
    for fields, detail in (
        ({"type": "toaster"}, "no device type 'toaster'"),
        ({"sensor": "x"}, "give a type too"),
        ({"profile": {"sensors": {"a": {"role": "solar", "unit": "W"}}}}, "role"),
        ({"profile": {"sensors": {"a": {"role": "generation", "unit": "Cel"}}}}, "not 'Cel'"),
        ({"profile": {"sensors": {"a": {"role": "switch", "unit": "bool", "min": 2, "max": 1}}}},
         "min is above max"),
        ({"profile": {"sensors": {"bad name!": {"role": "other", "unit": "V"}}}}, "bad name!"),
        ({"profile": {"sensors": {}, "colour": "red"}}, "colour"),
        ({"type": "ds18b20", "profile": {"type": "tasmota_plug", "sensors": {}}}, "type"),
    ):  # fmt: skip
        _, reply = register(gateway, community, **fields)
        assert is_problem(reply, 422, detail), fields
    assert gateway.seal()["tree_size"] == before + 1  # only the community was registered


def test_a_profile_changes_on_the_log(gateway: Gateway) -> None:
    community = unique("hoa")
    key, _ = register(gateway, community, type="household_simulator")
    path = f"/v1/devices/{key.name}/profile"
    changed = gateway.admin.post(path, json={"type": "solar_simulator"})
    assert changed.status_code == 200, changed.text
    assert listed(gateway, community)[key.name]["profile"]["type"] == "solar_simulator"
    actions = [c["action"] for c in registry_changes(gateway, key.name)]
    assert actions == ["register_device", "set_device_profile"]
    assert is_problem(gateway.admin.post(f"/v1/devices/{key.name}/profile", json={}), 422)
    nobody = f"/v1/devices/{unique('nobody')}/profile"
    assert is_problem(gateway.admin.post(nobody, json={"type": "ds18b20"}), 404)
    gateway.admin.post(f"/v1/devices/{key.name}/revoke")
    revoked = gateway.admin.post(f"/v1/devices/{key.name}/profile", json={"type": "ds18b20"})
    assert is_problem(revoked, 409, "revoked")


def test_a_community_has_a_time_zone(gateway: Gateway) -> None:
    madrid, plain = unique("hoa"), unique("hoa")
    made = gateway.admin.post(
        "/v1/communities", json={"id": madrid, "name": "Las Flores", "time_zone": "Europe/Madrid"}
    )
    assert made.status_code == 201 and made.json()["time_zone"] == "Europe/Madrid"
    assert (
        gateway.admin.post("/v1/communities", json={"id": plain, "name": "x"}).json()["time_zone"]
        == "UTC"
    )
    for zone in ("Mars/Olympus", "europe/madrid", "../etc/passwd", "", "UTC\x00", 1):
        bad = gateway.admin.post(
            "/v1/communities", json={"id": unique("hoa"), "name": "x", "time_zone": zone}
        )
        assert is_problem(bad, 422, "time_zone"), zone
    moved = gateway.admin.post(
        f"/v1/communities/{plain}/settings", json={"time_zone": "Europe/Skopje"}
    )
    assert moved.status_code == 200, moved.text
    page = gateway.admin.get("/v1/communities", params={"limit": 1000}).json()["items"]
    zones = {c["id"]: c["time_zone"] for c in page}
    assert zones[madrid] == "Europe/Madrid" and zones[plain] == "Europe/Skopje"
    actions = [c["action"] for c in registry_changes(gateway, plain)]
    assert actions == ["register_community", "set_community_settings"]
    nowhere = f"/v1/communities/{unique('nowhere')}/settings"
    assert is_problem(gateway.admin.post(nowhere, json={"time_zone": "UTC"}), 404)
    assert is_problem(
        gateway.admin.post(f"/v1/communities/{plain}/settings", json={"time_zone": "Nowhere"}),
        422,
    )


def test_latest_sums_power_by_declared_role(gateway: Gateway) -> None:
    community = unique("hoa")
    # minute() reports solar_pv (20 Wh: 1200 W), load (600 W) and fan. Declared the other way
    # round from what the names suggest, so a guess from names would give other totals.
    declared = {"sensors": {"solar_pv": {"role": "consumption", "unit": "Wh"},
                            "load": {"role": "grid_export", "unit": "W"},
                            "fan": {"role": "switch", "unit": "bool"}}}  # fmt: skip
    key, _ = register(gateway, community, profile=declared)
    silent, _ = register(gateway, community)  # declares nothing: listed, never summed
    assert submit(gateway, envelope(key, minute(key.name, 1)))[0]["status"] == "accepted"
    assert submit(gateway, envelope(silent, minute(silent.name, 1)))[0]["status"] == "accepted"
    body = gateway.admin.get(f"/v1/communities/{community}/latest").json()
    assert body["power"] == {
        "generation_w": None,
        "consumption_w": 1200.0,
        "grid_import_w": None,
        "grid_export_w": 600.0,
        "net_w": -1200.0,
    }
    by_device = {d["device_id"]: d for d in body["devices"]}
    assert by_device[key.name]["roles"] == {
        "solar_pv": "consumption", "load": "grid_export", "fan": "switch"
    }  # fmt: skip
    assert by_device[silent.name]["roles"] == {}
    gateway.admin.post(
        f"/v1/devices/{key.name}/profile",
        json={"profile": {"sensors": {"solar_pv": {"role": "generation", "unit": "Wh"}}}},
    )
    power = gateway.admin.get(f"/v1/communities/{community}/latest").json()["power"]
    assert power["generation_w"] == 1200.0 and power["consumption_w"] is None


def test_audit_covers_profiles_and_time_zones(gateway: Gateway) -> None:
    from tests.gateway.test_registry import tampered

    community = unique("hoa")
    key, _ = register(gateway, community, type="ads1115_clamp")
    gateway.admin.post(f"/v1/communities/{community}/settings", json={"time_zone": "Asia/Tokyo"})
    log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
    gateway.seal()
    args = ("audit", "--local", "--log-key", log_key)
    clean = patio(*args, env=gateway.env, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    statement = "UPDATE devices SET profile = :profile WHERE id = :id"
    with tampered(gateway, statement, profile='{"sensors":{}}', id=key.name):
        caught = patio(*args, env=gateway.env, check=False)
    assert caught.returncode == 1
    assert f"TAMPER DETECTED: device {key.name} has profile {{'sensors': {{}}}}" in caught.stdout
