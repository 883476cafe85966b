"""The gateway's background anchorer on a real anvil node, end to end to `patio verify --rpc`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from web3 import Web3

from ledger.anchoring import deploy_contract
from tests.anchoring.conftest import ANVIL_KEY
from tests.gateway.server import patio, start_gateway
from tests.gateway.test_api import envelope, minute, submit
from tests.wait import wait_until


def test_checkpoints_are_anchored_and_bundles_verify_on_chain(
    anvil_url: str, tmp_path: Path
) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil_url))
    contract = deploy_contract(w3, Account.from_key(ANVIL_KEY), origin="patio-ledger.local/log")
    gateway = start_gateway(
        tmp_path,
        extra_env={
            "PATIO_CHAIN_RPC": anvil_url,
            "PATIO_ANCHOR_CONTRACT": contract,
            "PATIO_CHAIN_KEY": ANVIL_KEY,
            "PATIO_ANCHOR_POLL": "0.3",
        },
    )
    try:
        device = gateway.device("meter-1", "hoa-1")
        tag = submit(gateway, envelope(device, minute(device.name, 1)))[0]["log_tag_id"]
        sealed = gateway.seal()
        anchors: list[dict[str, Any]] = []

        def anchored() -> bool:
            history = httpx.get(f"{gateway.url}/v1/checkpoints").json()["checkpoints"]
            anchors[:] = [
                a
                for c in history
                for a in c["anchors"]
                if a["tree_size"] == sealed["tree_size"] and a["status"] == "confirmed"
            ]
            return bool(anchors)

        wait_until(anchored, 30, "the checkpoint's anchor to be confirmed", interval=0.3)
        assert anchors[0]["contract"] == contract and anchors[0]["root"] == sealed["root_hash"]
        auditor = gateway.app_key("audit")
        with gateway.client(auditor) as client:
            bundle = client.get(f"/v1/entries/{tag}/proof").json()
        assert [a["tx_hash"] for a in bundle["anchors"]] == [anchors[0]["tx_hash"]]
        (tmp_path / "bundle.json").write_text(json.dumps(bundle))
        log_key = httpx.get(f"{gateway.url}/v1/log-key").text.strip()
        checked = patio(
            "verify",
            str(tmp_path / "bundle.json"),
            "--log-key",
            log_key,
            "--rpc",
            anvil_url,
            "--contract",
            contract,
            env=gateway.env,
        )
        assert "1 anchor(s) checked on chain" in checked.stdout

        def lag() -> str | None:
            metrics = httpx.get(f"{gateway.url}/metrics").text.splitlines()
            return next((m.split()[1] for m in metrics if m.startswith("patio_anchor_lag_")), None)

        # The pass after the confirmation finds nothing sealed beyond the anchored size.
        wait_until(lambda: lag() == "0.0", 30, "an anchor lag of 0 in /metrics", interval=0.3)
    finally:
        gateway.stop()
