"""On-chain anchor checks of proof bundles: every false claim is named, bad fields are unusable."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.anchor_verify import check_bundle_anchors
from ledger.anchoring import Anchorer, anchor_call_data, deploy_contract
from ledger.errors import FormatError, VerificationError
from ledger.keys import NamedKey
from ledger.log import Log
from ledger.verify import verify_bundle
from tests.anchoring.conftest import grow, mine


def make_bundle(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str | None
) -> dict[str, Any]:
    """A bundle for entry 0 whose checkpoint (size 9) extends an anchored one (size 4)."""
    grow(log, device, 4)
    result = Anchorer(log=log, w3=w3, account=account, contract=contract).run_once(wait_seconds=5)
    assert result.action == "confirmed"
    grow(log, device, 5)
    mine(w3, 3)
    tag = log.entry(0).log_tag_id
    bundle = log.bundle(tag, device_key=device.public_key_b64).to_json()
    assert len(bundle["anchors"]) == 1 and bundle["anchors"][0]["tree_size"] == 4
    verify_bundle(bundle, log_key=None)  # the offline checks pass (the lead's verifier)
    return bundle


@pytest.fixture
def bundle(log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str) -> Any:
    """A bundle with one anchor through the contract."""
    return make_bundle(log, device, w3, account, contract)


def check(bundle: Any, w3: Web3, **kw: Any) -> None:
    """Run the on-chain checks against the in-process chain."""
    check_bundle_anchors(bundle, lambda: w3, **kw)


def edit(bundle: Any, **fields: Any) -> Any:
    """A copy of `bundle` with anchors[0] fields replaced."""
    changed = copy.deepcopy(bundle)
    changed["anchors"][0].update(fields)
    return changed


def test_valid_anchor_passes(bundle: Any, w3: Web3, contract: str) -> None:
    check(bundle, w3, min_confirmations=4, contract=contract)
    check(bundle, w3, contract=contract.lower())


TAMPERS: list[tuple[str, Callable[[Any], dict[str, Any]], str]] = [
    ("missing tx", lambda a: {"tx_hash": "0x" + "ab" * 32}, "does not exist on chain"),
    ("other root", lambda a: {"root": "00" * 32}, "chain has root .* claims root 0000"),
    ("other size", lambda a: {"tree_size": a["tree_size"] + 1}, "at size 4; the anchor .* size 5"),
    ("other block", lambda a: {"block_number": a["block_number"] + 1}, "mined in block"),
    ("other chain", lambda a: {"chain_id": a["chain_id"] + 1}, "but the RPC serves chain"),
    ("other contract", lambda a: {"contract": "0x" + "11" * 20}, "was sent to 0x.*, not 0x1111"),
    ("calldata claim", lambda a: {"contract": None}, "is not a calldata anchor"),
]


@pytest.mark.parametrize(("name", "change", "message"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_false_anchor_claims_are_named(
    bundle: Any, w3: Web3, name: str, change: Callable[[Any], Any], message: str
) -> None:
    tampered = edit(bundle, **change(bundle["anchors"][0]))
    with pytest.raises(VerificationError, match=message) as info:
        check(tampered, w3)
    assert info.value.check == "anchor"
    assert "anchors[0]" in info.value.message


def test_too_few_confirmations(bundle: Any, w3: Web3) -> None:
    with pytest.raises(VerificationError, match=r"4 confirmation\(s\), 50 required"):
        check(bundle, w3, min_confirmations=50)


def test_anchor_to_another_than_the_configured_contract(bundle: Any, w3: Web3) -> None:
    with pytest.raises(VerificationError, match="not the configured 0x2222"):
        check(bundle, w3, contract="0x" + "22" * 20)


def test_reverted_anchor_transaction(
    bundle: Any, w3: Web3, account: LocalAccount, contract: str
) -> None:
    # Tree sizes must grow: anchoring size 1 after size 4 reverts (sent with a fixed gas
    # limit, so no estimate refuses it first).
    tx = account.sign_transaction(
        {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": w3.eth.get_transaction_count(account.address),
            "to": contract,
            "data": anchor_call_data(b"\x01" * 32, 1),
            "gas": 60000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(tx.raw_transaction)
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 0
    tampered = edit(bundle, tx_hash=tx_hash.to_0x_hex(), block_number=None)
    with pytest.raises(VerificationError, match="failed"):
        check(tampered, w3)


def test_event_of_another_log_is_not_an_anchor_of_this_one(
    bundle: Any, w3: Web3, account: LocalAccount
) -> None:
    other = deploy_contract(w3, account, origin="another.example/log")
    anchor = bundle["anchors"][0]
    tx_hash = w3.eth.send_transaction(
        {
            "from": account.address,
            "to": other,
            "data": anchor_call_data(bytes.fromhex(anchor["root"]), anchor["tree_size"]),
        }
    )
    w3.eth.get_transaction_receipt(tx_hash)
    tampered = edit(bundle, tx_hash=tx_hash.to_0x_hex(), contract=other, block_number=None)
    with pytest.raises(VerificationError, match=r"no Anchored event .* for origin"):
        check(tampered, w3)


def test_calldata_mode_bundle(log: Log, device: NamedKey, w3: Web3, account: LocalAccount) -> None:
    bundle = make_bundle(log, device, w3, account, None)
    assert bundle["anchors"][0]["contract"] is None
    check(bundle, w3)
    check(bundle, w3, contract=account.address)  # sent to the account itself by default
    with pytest.raises(VerificationError, match="was sent to"):
        check(bundle, w3, contract=Account.create().address)
    with pytest.raises(VerificationError, match="chain has root"):
        check(edit(bundle, root="ff" * 32), w3)


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"tx_hash": "0x1234"}, "tx_hash must be 0x followed by 64 hex"),
    ({"tx_hash": "0x" + "zz" * 32}, "tx_hash is not hex"),
    ({"contract": "0x1234"}, "contract must be a 0x-prefixed 20-byte hex address"),
    ({"contract": "0x" + "g1" * 20}, "contract is not hex"),
    ({"contract": "0x52908400098527886e0F7030069857D2E4169EE7"}, "EIP-55 checksum"),
    ({"root": "abc"}, "root"),
    ({"chain_id": "1"}, "chain_id"),
]


@pytest.mark.parametrize(("fields", "message"), MALFORMED)
def test_malformed_anchor_fields_are_unusable(
    bundle: Any, w3: Web3, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        check(edit(bundle, **fields), w3)


def test_no_anchors_needs_no_chain(bundle: Any) -> None:
    def unreachable() -> Web3:
        raise AssertionError("no anchors: the chain must not be asked")

    check_bundle_anchors({**bundle, "anchors": []}, unreachable)
