"""Two gateways on PostgreSQL anchoring on anvil: one anchorer at a time; the leader SIGKILLed
with its transaction in the mempool, and the other settles that one, sending no second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from web3 import Web3

from ledger.anchoring import ANCHORED_TOPIC, deploy_contract
from ledger.storage import anchors, open_engine
from tests.anchoring.conftest import ANVIL_KEY, ORIGIN, _rpc
from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_scale_out import kill, metric
from tests.wait import wait_until


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """anvil's first dev key in a 0600 file."""
    path = tmp_path / "chain.key"
    path.write_text(ANVIL_KEY + "\n")
    path.chmod(0o600)
    return path


def anchor_rows(url: str) -> list[Any]:
    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(anchors).order_by(anchors.c.id)))
    finally:
        engine.dispose()


def test_the_anchorer_killed_mid_transaction_is_taken_over_without_a_second_anchor(
    tmp_path: Path,
    postgres_url: str,
    anvil: Web3,
    anvil_url: str,
    anvil_account: LocalAccount,
    key_file: Path,
) -> None:
    contract = deploy_contract(anvil, anvil_account, origin=ORIGIN)
    nonce = anvil.eth.get_transaction_count(anvil_account.address)
    env = {
        "PATIO_CHAIN_RPC": anvil_url,
        "PATIO_ANCHOR_CONTRACT": contract,
        "PATIO_CHAIN_KEY_FILE": str(key_file),
        "PATIO_ANCHOR_POLL": "0.2",
        "PATIO_SEAL_INTERVAL": "0.3",
    }
    _rpc(anvil_url, "evm_setAutomine", [False])
    gateways: list[Gateway] = []
    try:
        gateways += [start_gateway(tmp_path, database_url=postgres_url, extra_env=env)]
        gateways += [start_gateway(tmp_path, database_url=postgres_url, extra_env=env)]

        def anchorers() -> list[Gateway]:
            return [g for g in gateways if metric(g, "patio_leader", role="anchorer") == 1]

        wait_until(lambda: len(anchorers()) == 1, 30, "one anchorer to lead")
        gateways[0].device("meter-a", "hoa-1")  # entries, sealed within 0.3 s
        wait_until(lambda: len(anchor_rows(postgres_url)) == 1, 30, "an anchor to be sent")
        [pending] = anchor_rows(postgres_url)
        assert pending.status == "pending"
        assert anvil.eth.get_transaction_count(anvil_account.address, "pending") == nonce + 1
        [leader] = anchorers()
        kill(leader)
        gateways.remove(leader)
        [survivor] = gateways
        wait_until(lambda: anchorers() == [survivor], 30, "the survivor to take the anchorer role")
        _rpc(anvil_url, "evm_mine", [])
        wait_until(
            lambda: anchor_rows(postgres_url)[0].status == "confirmed", 30, "the anchor confirmed"
        )
    finally:
        _rpc(anvil_url, "evm_setAutomine", [True])
        for gateway in gateways:
            if gateway.process.poll() is None:
                gateway.stop()
    rows = anchor_rows(postgres_url)
    assert rows[0].tx_hash == pending.tx_hash and rows[0].nonce == nonce
    assert all(row.status != "failed" for row in rows), rows
    # No second transaction for the anchor in flight: one nonce per anchor row.
    assert sorted(row.nonce for row in rows) == list(range(nonce, nonce + len(rows)))
    events = anvil.eth.get_logs({"address": contract, "fromBlock": 0, "topics": [ANCHORED_TOPIC]})
    assert len(events) == len([r for r in rows if r.status == "confirmed"])
