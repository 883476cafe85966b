"""The anchorer on an in-process chain: modes, policy, fees, confirmations and RPC failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.anchor_verify import check_anchor_on_chain
from ledger.anchoring import (
    ANCHORED_TOPIC,
    Anchorer,
    AnchorPolicy,
    ChainError,
    FeeCap,
    load_chain_account,
    origin_hash,
    parse_anchored_data,
)
from ledger.errors import KeyFileError
from ledger.keys import NamedKey
from ledger.log import Log
from tests.anchoring.conftest import ORIGIN, FlakyProvider, grow, mine

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def anchored_events(w3: Web3, contract: str) -> list[tuple[bytes, int]]:
    """Every Anchored event the contract emitted, oldest first."""
    logs = w3.eth.get_logs({"address": contract, "fromBlock": 0, "topics": [ANCHORED_TOPIC]})
    return [parse_anchored_data(bytes(entry["data"])) for entry in logs]


def anchorer(log: Log, w3: Web3, account: LocalAccount, contract: str | None, **kw: Any) -> Any:
    """An Anchorer with test defaults."""
    return Anchorer(log=log, w3=w3, account=account, contract=contract, **kw)


def test_anchor_is_recorded_then_confirmed_after_n_blocks(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str
) -> None:
    checkpoint = grow(log, device, 5)
    a = anchorer(log, w3, account, contract, confirmations=3)

    sent = a.run_once(now=T0)
    assert sent.action == "sent"
    assert sent.anchor is not None and sent.anchor.status == "pending"
    assert sent.anchor.tree_size == 5 and sent.anchor.root_hash == checkpoint.root_hash

    waiting = a.run_once(now=T0)  # mined (eth-tester mines each transaction): 1 of 3
    assert waiting.action == "waiting" and waiting.anchor is not None
    assert waiting.anchor.confirmations == 1 and waiting.anchor.block_number is not None

    mine(w3, 2)
    done = a.run_once(now=T0)
    assert done.action == "confirmed" and done.anchor is not None
    record = done.anchor
    assert (record.status, record.confirmations, record.chain_id) == (
        "confirmed",
        3,
        w3.eth.chain_id,
    )
    assert record.contract == contract and record.tx_hash == sent.anchor.tx_hash
    assert anchored_events(w3, contract) == [(checkpoint.root_hash, 5)]
    # What the lead's bundle code reads back.
    [stored] = log.anchors()
    assert (stored.status, stored.block_number, stored.confirmations) == (
        "confirmed",
        record.block_number,
        3,
    )
    check_anchor_on_chain(
        w3,
        chain_id=record.chain_id,
        tx_hash=record.tx_hash,
        block_number=record.block_number,
        contract=contract,
        tree_size=5,
        root=checkpoint.root_hash,
        origin=ORIGIN,
        min_confirmations=3,
    )
    assert a.run_once(now=T0).action == "up to date"


def test_wait_seconds_polls_until_confirmed(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str
) -> None:
    grow(log, device, 2)
    result = anchorer(log, w3, account, contract).run_once(now=T0, wait_seconds=5)
    assert result.action == "confirmed"


def test_policy_every_k_checkpoints_or_t_minutes(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str
) -> None:
    policy = AnchorPolicy(every_checkpoints=3, every_minutes=30)
    a = anchorer(log, w3, account, contract, policy=policy)
    grow(log, device, 1)
    assert a.run_once(now=T0, wait_seconds=2).action == "confirmed"  # first anchor: due
    grow(log, device, 1)
    grow(log, device, 1)
    assert a.run_once(now=T0 + timedelta(minutes=5)).action == "not due"  # 2 of 3
    assert len(anchored_events(w3, contract)) == 1
    grow(log, device, 1)
    assert a.run_once(now=T0 + timedelta(minutes=6)).action == "sent"  # the third checkpoint
    assert a.run_once(now=T0 + timedelta(minutes=6)).action == "confirmed"
    grow(log, device, 1)
    assert a.run_once(now=T0 + timedelta(minutes=20)).action == "not due"  # 1 new, 14 min
    assert a.run_once(now=T0 + timedelta(minutes=37)).action == "sent"  # 30 minutes passed
    assert [size for _, size in anchored_events(w3, contract)] == [1, 4, 5]


def test_policy_unit() -> None:
    policy = AnchorPolicy(every_checkpoints=2, every_minutes=10)
    assert not policy.due(new_checkpoints=0, last_anchor_at=None, now=T0)
    assert policy.due(new_checkpoints=1, last_anchor_at=None, now=T0)
    assert not policy.due(new_checkpoints=1, last_anchor_at=T0, now=T0 + timedelta(minutes=9))
    assert policy.due(new_checkpoints=1, last_anchor_at=T0, now=T0 + timedelta(minutes=10))
    assert policy.due(new_checkpoints=2, last_anchor_at=T0, now=T0)
    assert not AnchorPolicy(every_checkpoints=5).due(
        new_checkpoints=4, last_anchor_at=T0, now=T0 + timedelta(days=9)
    )
    with pytest.raises(ValueError):
        AnchorPolicy(every_checkpoints=0)


def test_calldata_mode_sends_root_and_size_to_the_configured_address(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount
) -> None:
    checkpoint = grow(log, device, 7)
    target = Account.create().address
    result = anchorer(log, w3, account, None, calldata_to=target).run_once(now=T0, wait_seconds=2)
    assert result.action == "confirmed" and result.anchor is not None
    assert result.anchor.contract is None
    tx = w3.eth.get_transaction(result.anchor.tx_hash)
    assert tx["to"] == target
    assert bytes(tx["input"]) == checkpoint.root_hash + (7).to_bytes(8, "big")
    check_anchor_on_chain(
        w3,
        chain_id=result.anchor.chain_id,
        tx_hash=result.anchor.tx_hash,
        block_number=result.anchor.block_number,
        contract=None,
        configured_contract=target,
        tree_size=7,
        root=checkpoint.root_hash,
        origin=ORIGIN,
    )


def test_rpc_down_nothing_recorded_then_resumes(
    log: Log,
    device: NamedKey,
    w3: Web3,
    provider: FlakyProvider,
    account: LocalAccount,
    contract: str,
) -> None:
    grow(log, device, 3)
    a = anchorer(log, w3, account, contract)
    provider.down = True
    with pytest.raises(ChainError, match="RPC unreachable"):
        a.run_once(now=T0)
    assert log.anchors() == []
    provider.down = False
    assert a.run_once(now=T0, wait_seconds=2).action == "confirmed"
    assert len(anchored_events(w3, contract)) == 1


def test_lost_send_answer_is_not_anchored_twice(
    log: Log,
    device: NamedKey,
    w3: Web3,
    provider: FlakyProvider,
    account: LocalAccount,
    contract: str,
) -> None:
    grow(log, device, 3)
    nonce = w3.eth.get_transaction_count(account.address)
    sends = provider.sends
    provider.lose_send_answer = True  # the node mines it, the anchorer sees an error
    with pytest.raises(ChainError, match="RPC unreachable during anchor"):
        anchorer(log, w3, account, contract).run_once(now=T0)
    [pending] = log.anchors()
    assert pending.status == "pending"
    # A restarted anchorer finds the recorded transaction instead of sending again.
    restarted = anchorer(log, w3, account, contract)
    assert restarted.run_once(now=T0).action == "confirmed"
    assert provider.sends == sends + 1
    assert w3.eth.get_transaction_count(account.address) == nonce + 1
    assert len(anchored_events(w3, contract)) == 1
    assert [a.tx_hash for a in log.anchors()] == [pending.tx_hash]


def test_send_lost_before_the_node_is_rebroadcast_with_the_same_hash(
    log: Log,
    device: NamedKey,
    w3: Web3,
    provider: FlakyProvider,
    account: LocalAccount,
    contract: str,
) -> None:
    grow(log, device, 3)
    a = anchorer(log, w3, account, contract)
    provider.ethereum_tester.disable_auto_mine_transactions()
    original_send = provider.ethereum_tester.send_raw_transaction

    def lost(raw: Any) -> Any:
        raise ConnectionError("connection reset before the node read it (test)")

    provider.ethereum_tester.send_raw_transaction = lost
    with pytest.raises(ChainError):
        a.run_once(now=T0)
    provider.ethereum_tester.send_raw_transaction = original_send
    provider.ethereum_tester.enable_auto_mine_transactions()
    [pending] = log.anchors()
    assert pending.status == "pending" and w3.eth.get_transaction_count(account.address) == 1

    again = a.run_once(now=T0)
    assert again.action == "rebroadcast"
    assert a.run_once(now=T0).action == "confirmed"
    [done] = log.anchors()
    assert done.tx_hash == pending.tx_hash  # same signed bytes, same hash
    assert len(anchored_events(w3, contract)) == 1


def test_dropped_anchor_whose_nonce_was_taken_is_failed_then_resent(
    log: Log,
    device: NamedKey,
    w3: Web3,
    provider: FlakyProvider,
    account: LocalAccount,
    contract: str,
) -> None:
    grow(log, device, 3)
    a = anchorer(log, w3, account, contract)
    original_send = provider.ethereum_tester.send_raw_transaction

    def lost(raw: Any) -> Any:
        raise ConnectionError("lost before the node read it (test)")

    provider.ethereum_tester.send_raw_transaction = lost
    with pytest.raises(ChainError):
        a.run_once(now=T0)
    provider.ethereum_tester.send_raw_transaction = original_send
    # Something else spends the nonce the anchor was signed with.
    other = account.sign_transaction(
        {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": w3.eth.get_transaction_count(account.address),
            "to": account.address,
            "value": 1,
            "gas": 21000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    w3.eth.send_raw_transaction(other.raw_transaction)
    result = a.run_once(now=T0)
    assert result.action == "sent"  # the dead anchor is failed, a fresh one goes out
    assert [x.status for x in log.anchors()] == ["failed", "pending"]
    assert a.run_once(now=T0).action == "confirmed"
    assert len(anchored_events(w3, contract)) == 1


def test_fee_cap_defers_anchoring(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str
) -> None:
    grow(log, device, 3)
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    capped = FeeCap(max_fee_per_gas=base // 2, max_priority_fee_per_gas=1)
    with pytest.raises(ChainError, match="exceeds the cap"):
        anchorer(log, w3, account, contract, fees=capped).run_once(now=T0)
    assert log.anchors() == []
    cap = FeeCap(max_fee_per_gas=base + 5, max_priority_fee_per_gas=10**9)
    result = anchorer(log, w3, account, contract, fees=cap).run_once(now=T0)
    tx = w3.eth.get_transaction(result.anchor.tx_hash if result.anchor else "")
    assert tx["maxFeePerGas"] == base + 5 and tx["maxPriorityFeePerGas"] == 5


def test_contract_refusal_is_reported_not_recorded(
    log: Log, device: NamedKey, w3: Web3, account: LocalAccount, contract: str
) -> None:
    grow(log, device, 3)
    stranger: LocalAccount = Account.from_key("0x" + "00" * 31 + "02")  # funded, not the owner
    with pytest.raises(ChainError, match="refuses"):
        anchorer(log, w3, stranger, contract).run_once(now=T0)
    assert log.anchors() == []


def test_no_checkpoint_nothing_to_do(
    log: Log, w3: Web3, account: LocalAccount, contract: str
) -> None:
    assert anchorer(log, w3, account, contract).run_once(now=T0).action == "no checkpoint"


def test_chain_key_file_and_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "0x" + "ab" * 32
    path = tmp_path / "chain.key"
    path.write_text(key + "\n")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_chain_account(path)
    path.chmod(0o600)
    assert load_chain_account(path).key.hex() == "ab" * 32
    monkeypatch.setenv("PATIO_CHAIN_KEY", "ab" * 32)
    assert load_chain_account(None).address == load_chain_account(path).address
    monkeypatch.delenv("PATIO_CHAIN_KEY")
    with pytest.raises(KeyFileError, match="--key-file or set"):
        load_chain_account(None)
    path.write_text("not a key")
    with pytest.raises(KeyFileError, match="32-byte hex"):
        load_chain_account(path)


def test_contract_holds_origin_hash_and_owner(
    w3: Web3, account: LocalAccount, contract: str
) -> None:
    from ledger.anchoring import ORIGIN_HASH_SELECTOR, OWNER_SELECTOR

    assert bytes(w3.eth.call({"to": contract, "data": ORIGIN_HASH_SELECTOR})) == origin_hash(ORIGIN)
    owner = bytes(w3.eth.call({"to": contract, "data": OWNER_SELECTOR}))[12:]
    assert owner == bytes.fromhex(account.address[2:])
