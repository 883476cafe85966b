"""The Anchor contract: reproducible artifact, owner-only growing anchors, constant gas."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from ledger.anchoring import (
    ANCHOR_SELECTOR,
    ANCHORED_TOPIC,
    TREE_SIZE_SELECTOR,
    anchor_call_data,
    load_artifact,
    origin_hash,
    parse_anchored_data,
)
from tests.anchoring.conftest import ORIGIN, ROOT, require_or_skip

GAS_LIMIT_PER_ANCHOR = 30_000  # issue 5: at most 30,000 gas, whatever the batch size


def test_artifact_is_what_the_pinned_npm_solc_builds() -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "solc" / "package.json").exists():
        require_or_skip("node or node_modules/solc missing: run `npm ci`")
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["solc"]
    result = subprocess.run(
        [str(node), "contracts/evm/compile.mjs", "--print"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rebuilt = json.loads(result.stdout)
    committed = load_artifact()
    assert rebuilt["compiler"]["version"].startswith(pinned + "+")
    assert rebuilt["settings"] == committed["settings"]
    assert committed["settings"]["evmVersion"] == "cancun"
    assert rebuilt["bytecode"] == committed["bytecode"]
    assert rebuilt["deployedBytecode"] == committed["deployedBytecode"]
    assert rebuilt["abi"] == committed["abi"]
    assert rebuilt == committed


def _abi(name: str, kind: str) -> dict[str, Any]:
    [item] = [x for x in load_artifact()["abi"] if x.get("name") == name and x["type"] == kind]
    return item


def test_hand_written_interface_matches_the_abi() -> None:
    function = _abi("anchor", "function")
    signature = f"anchor({','.join(i['type'] for i in function['inputs'])})"
    assert keccak(text=signature)[:4] == ANCHOR_SELECTOR
    event = _abi("Anchored", "event")
    assert [(i["name"], i["type"], i["indexed"]) for i in event["inputs"]] == [
        ("originHash", "bytes32", True),
        ("root", "bytes32", False),
        ("treeSize", "uint64", False),
    ]
    assert keccak(text="Anchored(bytes32,bytes32,uint64)") == ANCHORED_TOPIC


def _send(w3: Web3, account: LocalAccount, to: str, data: bytes) -> Any:
    tx = account.sign_transaction(
        {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": w3.eth.get_transaction_count(account.address),
            "to": to,
            "data": data,
            "gas": 100_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    return w3.eth.get_transaction_receipt(w3.eth.send_raw_transaction(tx.raw_transaction))


def test_gas_per_anchor_is_constant_and_under_target(
    w3: Web3, account: LocalAccount, contract: str
) -> None:
    used = []
    for size in (1, 2, 1_000, 65_536, 10**6, 2**40, 2**64 - 1):
        receipt = _send(w3, account, contract, anchor_call_data(keccak(b"%d" % size), size))
        assert receipt["status"] == 1
        used.append(receipt["gasUsed"])
    assert max(used) <= GAS_LIMIT_PER_ANCHOR, used
    # Only calldata pricing varies (16 gas per non-zero byte, 4 per zero byte, EIP-2028).
    assert max(used) - min(used) <= 16 * 12, used


def test_only_the_owner_anchors_and_sizes_strictly_grow(
    w3: Web3, account: LocalAccount, contract: str
) -> None:
    root = b"\x42" * 32
    assert _send(w3, account, contract, anchor_call_data(root, 10))["status"] == 1
    stranger: LocalAccount = Account.from_key("0x" + "00" * 31 + "02")
    assert _send(w3, stranger, contract, anchor_call_data(root, 11))["status"] == 0
    assert _send(w3, account, contract, anchor_call_data(root, 10))["status"] == 0
    assert _send(w3, account, contract, anchor_call_data(root, 9))["status"] == 0
    receipt = _send(w3, account, contract, anchor_call_data(b"\x43" * 32, 11))
    assert receipt["status"] == 1
    [log] = receipt["logs"]
    assert [bytes(t) for t in log["topics"]] == [ANCHORED_TOPIC, origin_hash(ORIGIN)]
    assert parse_anchored_data(bytes(log["data"])) == (b"\x43" * 32, 11)
    stored = bytes(w3.eth.call({"to": contract, "data": TREE_SIZE_SELECTOR}))
    assert int.from_bytes(stored, "big") == 11
