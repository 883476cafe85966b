"""The anchorer on a real node (anvil): a stuck transaction's fee is bumped, and an anchor a
reorganisation deeper than its confirmations removed is sent again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.anchoring import ANCHORED_TOPIC, Anchorer, anchor_call_data, deploy_contract
from ledger.keys import NamedKey
from ledger.log import Log
from tests.anchoring.conftest import ORIGIN, _rpc, grow


@pytest.fixture
def no_automine(anvil: Web3, anvil_url: str) -> Iterator[None]:
    """Transactions wait in anvil's mempool until a block is mined by hand."""
    _rpc(anvil_url, "evm_setAutomine", [False])
    try:
        yield
    finally:
        _rpc(anvil_url, "evm_setAutomine", [True])


def test_a_stuck_anchor_is_replaced_with_higher_fees_and_the_same_nonce(
    anvil: Web3, anvil_url: str, anvil_account: LocalAccount, log: Log, device: NamedKey,
    no_automine: None,
) -> None:  # fmt: skip
    contract = deploy_contract_mined(anvil, anvil_url, anvil_account)
    checkpoint = grow(log, device, 4)
    patient = Anchorer(log=log, w3=anvil, account=anvil_account, contract=contract)
    sent = patient.run_once()
    assert sent.action == "sent" and sent.anchor is not None
    assert patient.run_once().action == "waiting"  # not stuck for ten minutes yet
    old = anvil.eth.get_transaction(sent.anchor.tx_hash)
    stuck = Anchorer(log=log, w3=anvil, account=anvil_account, contract=contract, stuck_after=0)
    bumped = stuck.run_once()
    assert bumped.action == "bumped" and bumped.anchor is not None
    assert bumped.anchor.nonce == sent.anchor.nonce and bumped.anchor.tx_hash != sent.anchor.tx_hash
    new = anvil.eth.get_transaction(bumped.anchor.tx_hash)  # the node replaced the old one
    assert new["maxPriorityFeePerGas"] > old["maxPriorityFeePerGas"] * 1.1
    assert new["maxFeePerGas"] > old["maxFeePerGas"] * 1.1
    assert [a.id for a in stuck.records()] == [sent.anchor.id]  # one anchor, replaced in place

    _rpc(anvil_url, "evm_mine", [])
    done = stuck.run_once()
    assert done.action == "confirmed" and done.anchor is not None
    assert done.anchor.tx_hash == bumped.anchor.tx_hash
    assert bytes(new["input"]) == anchor_call_data(checkpoint.root_hash, checkpoint.tree_size)
    events = anvil.eth.get_logs({"address": contract, "fromBlock": 0, "topics": [ANCHORED_TOPIC]})
    assert len(events) == 1


def deploy_contract_mined(anvil: Web3, anvil_url: str, account: LocalAccount) -> str:
    """Deploy the Anchor contract with automine off (mine its block by hand)."""
    from threading import Thread

    result: list[str] = []
    deployer = Thread(target=lambda: result.append(deploy_contract(anvil, account, origin=ORIGIN)))
    deployer.start()
    while deployer.is_alive():
        _rpc(anvil_url, "evm_mine", [])
        deployer.join(0.05)
    return result[0]


def test_an_anchor_removed_by_a_deep_reorganisation_is_sent_again(
    anvil: Web3, anvil_url: str, anvil_account: LocalAccount, log: Log, device: NamedKey
) -> None:
    contract = deploy_contract(anvil, anvil_account, origin=ORIGIN)
    grow(log, device, 3)
    before = _rpc(anvil_url, "evm_snapshot", [])
    anchorer = Anchorer(
        log=log, w3=anvil, account=anvil_account, contract=contract, confirmations=2
    )
    first = anchorer.run_once()
    assert first.action == "sent" and first.anchor is not None
    _rpc(anvil_url, "anvil_mine", [3])
    confirmed = anchorer.run_once()
    assert confirmed.action == "confirmed"
    # A reorganisation of 4 blocks, deeper than the 2 confirmations: the anchor is gone.
    assert _rpc(anvil_url, "evm_revert", [before])
    _rpc(anvil_url, "anvil_mine", [5])
    reorganised = anchorer.run_once()
    assert reorganised.action == "reorganised" and reorganised.anchor is not None
    assert reorganised.anchor.status == "pending"
    _rpc(anvil_url, "anvil_mine", [2])
    again = anchorer.run_once()
    assert again.action == "confirmed" and again.anchor is not None
    # The same signed bytes, mined again on the new chain.
    assert again.anchor.tx_hash == first.anchor.tx_hash
    assert anvil.eth.get_transaction_receipt(again.anchor.tx_hash)["status"] == 1
    assert len(anchorer.records()) == 1
    assert anchorer.run_once().action == "up to date"
