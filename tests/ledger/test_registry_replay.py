"""The registry rules and their replay: what an auditor concludes from registry entries."""

from __future__ import annotations

from typing import Any

from ledger.registry_replay import (
    CommunityState,
    DeviceState,
    Directory,
    RegistryEntry,
    check,
)


def entries(*changes: tuple[str, dict[str, Any]]) -> list[RegistryEntry]:
    return [
        RegistryEntry(
            index=10 + n,
            payload={
                "device_id": "_registry",
                "seq": n + 1,
                "action": action,
                "subject": subject,
                "at": "2026-11-30T10:00:00Z",
            },
        )
        for n, (action, subject) in enumerate(changes)
    ]


HISTORY = entries(
    ("register_community", {"id": "hoa-1", "name": "Calle Mayor 5"}),
    ("register_device", {"id": "m1", "community_id": "hoa-1", "public_key": "K1"}),
    ("rotate_device_key", {"id": "m1", "old_public_key": "K1", "public_key": "K2"}),
    ("revoke_device", {"id": "m1", "public_key": "K2"}),
)


def directory(**device: Any) -> Directory:
    state = {"community_id": "hoa-1", "public_key": "K2", "revoked": True, "keys": ["K1", "K2"]}
    return Directory(
        communities={"hoa-1": CommunityState(name="Calle Mayor 5")},
        devices={"m1": DeviceState(**(state | device))},
    )


def lines(result: Any) -> list[str]:
    return [f"{f.kind} {f.subject} {f.message}" for f in result.findings]


def test_a_directory_built_by_the_entries_matches() -> None:
    result = check(HISTORY, directory())
    assert (result.entries, result.communities, result.devices) == (4, 1, 1)
    assert lines(result) == []
    assert "matches" in result.summary()


def test_each_difference_names_the_device() -> None:
    assert lines(check(HISTORY, directory(public_key="K9"))) == [
        "device m1 has public_key 'K9' in the directory, 'K2' on the log"
    ]
    assert lines(check(HISTORY, directory(revoked=False))) == [
        "device m1 has revoked False in the directory, True on the log"
    ]
    assert lines(check(HISTORY, directory(keys=["K2"]))) == [
        "device m1 has keys ['K2'] in the directory, ['K1', 'K2'] on the log"
    ]
    extra = directory()
    extra.devices["m2"] = DeviceState(community_id="hoa-1", public_key="K5")
    assert lines(check(HISTORY, extra)) == ["device m2 is in the directory, not on the log"]
    assert "does NOT match" in check(HISTORY, extra).summary()


def test_a_second_registration_of_an_id_on_the_log_is_a_finding() -> None:
    # What the gateway recorded before registry changes went through the writer: every
    # racing registration appended, one won the directory.
    racing = entries(
        ("register_community", {"id": "hoa-1", "name": "Calle Mayor 5"}),
        ("register_device", {"id": "m1", "community_id": "hoa-1", "public_key": "K1"}),
        ("register_device", {"id": "m1", "community_id": "hoa-1", "public_key": "K2"}),
    )
    found = lines(check(racing, directory(public_key="K1", revoked=False, keys=["K1"])))
    assert found == [
        "entry 12 is a registry change (register_device) the rules refuse: "
        "device 'm1' already exists"
    ]


def test_changes_the_rules_refuse_and_gaps_in_seq() -> None:
    bad = entries(
        ("rotate_device_key", {"id": "ghost", "old_public_key": "K1", "public_key": "K2"}),
        ("register_device", {"id": "m1", "community_id": "nowhere", "public_key": "K1"}),
        ("register_community", {"id": "hoa-1", "name": "x\x00"}),
    )
    bad.append(RegistryEntry(index=20, payload={**bad[0].payload, "seq": 9}))
    found = lines(check(bad, Directory(communities={}, devices={})))
    assert found == [
        "entry 10 is a registry change (rotate_device_key) the rules refuse: no device 'ghost'",
        "entry 11 is a registry change (register_device) the rules refuse: no community 'nowhere'",
        "entry 12 is a registry change (register_community) the rules refuse: "
        "the change's 'name' contains a NUL character",
        "entry 20 is registry seq 9, expected 4",
        "entry 20 is a registry change (rotate_device_key) the rules refuse: no device 'ghost'",
    ]
