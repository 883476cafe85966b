"""Anchoring on a real node (anvil): the CLI end to end, a lost mempool transaction, gas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.anchoring import (
    ANCHORED_TOPIC,
    Anchorer,
    ChainError,
    anchor_call_data,
    connect,
    deploy_contract,
)
from ledger.cli import main
from ledger.keys import NamedKey
from ledger.log import Log, open_data_dir
from tests.anchoring.conftest import ANVIL_KEY, ORIGIN, _free_port, _rpc, grow


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory holding a log (key file and SQLite), as `patio log init` makes."""
    directory = tmp_path / "var"
    open_data_dir(directory, origin=ORIGIN)
    return directory


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """anvil's first dev key in a 0600 file."""
    path = tmp_path / "chain.key"
    path.write_text(ANVIL_KEY + "\n")
    path.chmod(0o600)
    return path


def test_cli_deploy_anchor_and_verify_a_bundle_on_anvil(
    anvil: Web3,
    anvil_url: str,
    data_dir: Path,
    key_file: Path,
    device: NamedKey,
    tmp_path: Path,
    capsys: Any,
) -> None:
    chain = ["--rpc", anvil_url, "--key-file", str(key_file)]
    assert main(["anchor", "deploy", *chain, "--dir", str(data_dir)]) == 0
    contract = capsys.readouterr().out.strip()
    assert Web3.is_checksum_address(contract)

    log = open_data_dir(data_dir)
    grow(log, device, 6)
    run = ["anchor", "run", *chain, "--dir", str(data_dir), "--contract", contract]
    assert main([*run, "--wait", "10"]) == 0
    assert capsys.readouterr().out.startswith("confirmed: tree size 6 in 0x")
    grow(log, device, 4)
    assert main(run) == 0  # sent, not waited for
    assert capsys.readouterr().out.startswith("sent: tree size 10")
    assert main(run) == 0  # anvil mined it at once: the next pass confirms it
    assert capsys.readouterr().out.startswith("confirmed: tree size 10")
    assert [(a.tree_size, a.status) for a in log.anchors()] == [(6, "confirmed"), (10, "confirmed")]

    bundle = log.bundle(log.entry(2).log_tag_id, device_key=device.public_key_b64).to_json()
    assert [a["tree_size"] for a in bundle["anchors"]] == [6, 10]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    verify = ["verify", str(path), "--log-key", log.signer.verifier_key if log.signer else ""]
    assert main([*verify, "--rpc", anvil_url, "--contract", contract]) == 0
    assert "2 anchor(s) checked on chain" in capsys.readouterr().out

    bundle["anchors"][0]["tx_hash"] = "0x" + "12" * 32
    path.write_text(json.dumps(bundle))
    assert main([*verify, "--rpc", anvil_url]) == 1
    assert "does not exist on chain 31337" in capsys.readouterr().err
    assert main([*verify, "--rpc", f"http://127.0.0.1:{_free_port()}"]) == 1
    assert "RPC unreachable" in capsys.readouterr().err

    audit = ["audit", "--local", "--dir", str(data_dir), "--full", "--rpc", anvil_url]
    assert main([*audit, "--log-key", bundle["log_key"], "--contract", contract]) == 0
    assert "2 anchor(s) (2 on chain)" in capsys.readouterr().out


def test_rpc_down_then_a_lost_mempool_transaction_on_anvil(
    anvil: Web3, anvil_url: str, anvil_account: LocalAccount, log: Log, device: NamedKey
) -> None:
    nonce = anvil.eth.get_transaction_count(anvil_account.address)  # other tests share anvil
    contract = deploy_contract(anvil, anvil_account, origin=ORIGIN)
    grow(log, device, 5)
    dead = connect(f"http://127.0.0.1:{_free_port()}", timeout=2)
    with pytest.raises(ChainError, match="RPC unreachable"):
        Anchorer(log=log, w3=dead, account=anvil_account, contract=contract).run_once()
    assert log.anchors() == []

    _rpc(anvil_url, "evm_setAutomine", [False])
    anchorer = Anchorer(log=log, w3=anvil, account=anvil_account, contract=contract)
    sent = anchorer.run_once()
    assert sent.action == "sent" and sent.anchor is not None
    restarted = Anchorer(log=log, w3=anvil, account=anvil_account, contract=contract)
    assert restarted.run_once().action == "waiting"  # in the mempool: nothing new is sent
    # The node loses it (a restart, a full mempool); the next pass sends the same bytes.
    _rpc(anvil_url, "anvil_dropTransaction", [sent.anchor.tx_hash])
    assert anvil.eth.get_transaction_count(anvil_account.address, "pending") == nonce + 1
    assert restarted.run_once().action == "rebroadcast"
    _rpc(anvil_url, "evm_mine", [])
    _rpc(anvil_url, "evm_setAutomine", [True])
    done = restarted.run_once()
    assert done.action == "confirmed" and done.anchor is not None
    assert done.anchor.tx_hash == sent.anchor.tx_hash
    events = anvil.eth.get_logs({"address": contract, "fromBlock": 0, "topics": [ANCHORED_TOPIC]})
    assert len(events) == 1
    assert anvil.eth.get_transaction_count(anvil_account.address) == nonce + 2  # deploy, anchor


def test_calldata_mode_and_gas_on_anvil(
    anvil: Web3, anvil_account: LocalAccount, log: Log, device: NamedKey
) -> None:
    checkpoint = grow(log, device, 3)
    result = Anchorer(log=log, w3=anvil, account=anvil_account, contract=None).run_once(
        wait_seconds=10
    )
    assert result.action == "confirmed" and result.anchor is not None
    tx = anvil.eth.get_transaction(result.anchor.tx_hash)
    assert bytes(tx["input"]) == checkpoint.root_hash + (3).to_bytes(8, "big")
    assert tx["to"] == anvil_account.address

    contract = deploy_contract(anvil, anvil_account, origin=ORIGIN)
    used = []
    for size in (1, 1_000, 2**40):
        tx_hash = anvil.eth.send_transaction(
            {
                "from": anvil_account.address,
                "to": contract,
                "data": anchor_call_data(b"\x5a" * 32, size),
            }
        )
        used.append(anvil.eth.get_transaction_receipt(tx_hash)["gasUsed"])
    assert max(used) <= 30_000, used


def test_missing_anvil_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.anchoring.conftest import require_or_skip

    monkeypatch.delenv("PATIO_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="anvil is not installed"):
        require_or_skip("anvil is not installed")
    monkeypatch.setenv("PATIO_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="PATIO_REQUIRE_SERVICES=1 demands it"):
        require_or_skip("anvil is not installed")
