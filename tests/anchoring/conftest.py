"""Anchoring fixtures: an in-process chain (eth-tester), a real anvil node, and sealed logs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from ledger.anchoring import deploy_contract
from ledger.keys import NamedKey
from ledger.log import Log, StoredCheckpoint
from tests.ledger.helpers import submission
from tests.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
ANVIL_BINARY = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ORIGIN = "patio.test/anchoring"
# eth-tester funds accounts whose private keys are 1, 2, 3, ... (eth_tester.backends).
TESTER_KEY = "0x" + "00" * 31 + "01"
# anvil's first default dev account (the "test test ... junk" mnemonic), 10,000 ETH.
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def require_or_skip(reason: str) -> None:
    """Skip here; fail when CI demands every service (PATIO_REQUIRE_SERVICES=1)."""
    if os.environ.get("PATIO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; PATIO_REQUIRE_SERVICES=1 demands it")
    pytest.skip(reason)


class FlakyProvider(EthereumTesterProvider):
    """eth-tester behind an RPC link that can be cut, or lose the answer to one send."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_send_answer = False
        self.sends = 0

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        """Forward to eth-tester unless the link is down."""
        if self.down:
            raise ConnectionError("RPC link is down (test)")
        try:
            response = super().make_request(method, params)
        except TransactionFailed as exc:
            # What web3 raises for a node's "execution reverted" answer over HTTP.
            raise ContractLogicError(f"execution reverted: {exc}") from exc
        if method == "eth_sendRawTransaction":
            self.sends += 1
            if self.lose_send_answer:
                # The node got the transaction; the client never hears back.
                self.lose_send_answer = False
                raise ConnectionError("connection reset after send (test)")
        return response


@pytest.fixture
def provider() -> FlakyProvider:
    """A fresh in-process chain (one block per transaction)."""
    return FlakyProvider()


@pytest.fixture
def w3(provider: FlakyProvider) -> Web3:
    """Web3 on the in-process chain."""
    return Web3(provider)


@pytest.fixture
def account() -> LocalAccount:
    """A funded account of the in-process chain."""
    acct: LocalAccount = Account.from_key(TESTER_KEY)
    return acct


@pytest.fixture
def contract(w3: Web3, account: LocalAccount) -> str:
    """The Anchor contract deployed for ORIGIN."""
    return deploy_contract(w3, account, origin=ORIGIN)


def mine(w3: Web3, blocks: int) -> None:
    """Add empty blocks (eth-tester or anvil)."""
    provider = w3.provider
    if isinstance(provider, EthereumTesterProvider):
        provider.ethereum_tester.mine_blocks(blocks)
    else:
        for _ in range(blocks):
            w3.provider.make_request(RPCEndpoint("evm_mine"), [])


@pytest.fixture
def log_key() -> NamedKey:
    """The log's signing key."""
    return NamedKey.generate(ORIGIN)


@pytest.fixture
def device() -> NamedKey:
    """A device key."""
    return NamedKey.generate("boiler-01")


@pytest.fixture
def log(tmp_path: Path, log_key: NamedKey) -> Log:
    """An empty log in a SQLite file."""
    return Log.open(url=f"sqlite:///{tmp_path}/ledger.sqlite3", signer=log_key, origin=ORIGIN)


def grow(log: Log, device: NamedKey, count: int) -> StoredCheckpoint:
    """Append `count` signed entries from `device` and seal."""
    start = log.size()
    log.append([submission(device, seq) for seq in range(start, start + count)])
    return log.seal()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _anvil_binary() -> str | None:
    if ANVIL_BINARY.exists():
        return str(ANVIL_BINARY)
    return shutil.which("anvil")


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.loads(response.read())["result"]


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """A real anvil node (npm @foundry-rs/anvil) on a free port, stopped afterwards."""
    binary = _anvil_binary()
    if binary is None:
        require_or_skip("anvil is not installed: run `npm ci` (package.json pins it)")
        raise AssertionError("unreachable")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def answering() -> bool:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"anvil exited on port {port}: {error[:500]}")
            try:
                _rpc(url, "eth_chainId", [])
            except (OSError, urllib.error.URLError):
                return False
            return True

        wait_until(answering, 20, "anvil to answer RPC", interval=0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def anvil(anvil_url: str) -> Iterator[Web3]:
    """Web3 on anvil, with the chain restored to its prior state after the test."""
    w3 = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 10}))
    snapshot = _rpc(anvil_url, "evm_snapshot", [])
    try:
        yield w3
    finally:
        _rpc(anvil_url, "evm_revert", [snapshot])


@pytest.fixture
def anvil_account() -> LocalAccount:
    """anvil's first funded dev account."""
    acct: LocalAccount = Account.from_key(ANVIL_KEY)
    return acct
