"""The registry rules and their replay: what an auditor concludes from registry entries."""

from __future__ import annotations

from typing import Any

import httpx

from ledger import merkle
from ledger.audit_gateway import GatewaySource
from ledger.bundle import log_tag_id
from ledger.encoding import canonical_json
from ledger.registry_replay import (
    CommunityState,
    DeviceState,
    Directory,
    RegistryEntry,
    audit,
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


class FakeGateway:
    """A gateway's registry answers over httpx.MockTransport: a log of registry entries, the
    directory they build, and what a dishonest gateway would change."""

    def __init__(self) -> None:
        self.entries = [
            {"v": 1, "contract": "registry@1", "payload": e.payload, "sig": "A" * 86 + "==",
             "received_at": "2026-11-30T10:00:00Z"}
            for e in HISTORY
        ]  # fmt: skip
        self.tree = merkle.MemoryTree()
        self.tree.append([merkle.leaf_hash(canonical_json(e)) for e in self.entries])
        self.served = list(self.entries)  # what /v1/registry says the log holds

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/v1/communities":
            items = [{"id": "hoa-1", "name": "Calle Mayor 5", "time_zone": "UTC"}]
        elif path == "/v1/devices":
            items = [{"id": "m1", "community_id": "hoa-1", "public_key": "K2", "revoked": True,
                      "profile": None}]  # fmt: skip
        elif path == "/v1/registry":
            listed = [
                {"index": i, "entry": e, "log_tag_id": log_tag_id(
                    merkle.leaf_hash(canonical_json(e)))}
                for i, e in enumerate(self.served)
            ]  # fmt: skip
            return httpx.Response(200, json={"entries": listed, "next": None})
        elif path == "/v1/proofs/inclusion":
            index, size = int(params["index"]), int(params["tree_size"])
            proof = merkle.inclusion_proof(index, size, self.tree.fetch)
            return httpx.Response(200, json={"hashes": [h.hex() for h in proof]})
        else:
            return httpx.Response(404)
        return httpx.Response(200, json={"items": items, "next": None})

    def audit(self) -> Any:
        client = httpx.Client(base_url="http://gw", transport=httpx.MockTransport(self.handle))
        source = GatewaySource("http://gw", client=client)
        return audit(source, tree_size=self.tree.size, root=self.tree.root())


def test_through_a_gateway_each_registry_entry_is_proven_in_the_log() -> None:
    honest = FakeGateway()
    assert lines(honest.audit()) == []
    # A gateway that serves a registry other than the log's: the entry hashes to its tag,
    # but no inclusion proof from the audited tree leads to it.
    forged = FakeGateway()
    forged.served[3] = {**forged.served[3], "received_at": "2026-11-30T11:00:00Z"}
    [finding] = lines(forged.audit())
    assert finding.startswith("entry 3 is a registry entry not in the audited tree of 4")
