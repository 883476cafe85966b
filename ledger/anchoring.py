"""Anchoring checkpoints on an EVM chain (DESIGN.md pinned format 9): deploy, anchor, confirm.

Each anchor is recorded in the `anchors` table as `pending`, with its nonce and the exact
signed transaction, *before* it is broadcast. A pass that finds a pending anchor never signs a
new one: it looks the transaction up, rebroadcasts the recorded bytes if the node lost them,
and otherwise waits. One nonce per anchor and one anchor in flight at a time mean an RPC
failure at any point can delay an anchor but never send a second one.

A transaction left unmined past `stuck_after` seconds is replaced with the same nonce and
higher fees (recorded before it is broadcast, like the first). A confirmed anchor that a
reorganisation took out of the chain goes back to pending, and the next pass sends its
recorded bytes again (or a new anchor, when its nonce was taken).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from sqlalchemy import Connection, func, select, update
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
)
from web3.types import TxParams, TxReceipt

from ledger.encoding import parse_rfc3339, rfc3339_utc
from ledger.errors import FormatError, KeyFileError, LedgerError
from ledger.log import Log
from ledger.storage import anchors, checkpoints

# Solidity ABI spec (docs.soliditylang.org/en/latest/abi-spec.html): a function selector is
# keccak256 of its signature, truncated to 4 bytes; an event's topic 0 is the whole hash.
ANCHOR_SIGNATURE = "anchor(bytes32,uint64)"
ANCHOR_SELECTOR = keccak(text=ANCHOR_SIGNATURE)[:4]
ANCHORED_SIGNATURE = "Anchored(bytes32,bytes32,uint64)"
ANCHORED_TOPIC = keccak(text=ANCHORED_SIGNATURE)
ORIGIN_HASH_SELECTOR = keccak(text="originHash()")[:4]
OWNER_SELECTOR = keccak(text="owner()")[:4]
TREE_SIZE_SELECTOR = keccak(text="treeSize()")[:4]
# Pinned format 9, calldata-only mode: the 32-byte root, then the size as 8 bytes big-endian.
CALLDATA_LENGTH = 32 + 8
UINT64_MAX = 2**64 - 1

CHAIN_KEY_ENV = "PATIO_CHAIN_KEY"
ARTIFACT_ENV = "PATIO_ANCHOR_ARTIFACT"
# Transaction-scoped PostgreSQL advisory lock key, next to ledger.log's APPEND and SEAL locks.
ANCHOR_LOCK = 0x7061_7469_6F03
GWEI = 10**9

Status = Literal["pending", "confirmed", "failed"]
T = TypeVar("T")


class ChainError(LedgerError):
    """The chain could not be reached, refused a transaction, or costs more than the cap."""


# -- encodings --------------------------------------------------------------------------


def origin_hash(origin: str) -> bytes:
    """keccak256 of the checkpoint origin line, as the contract's `originHash` holds it."""
    return keccak(origin.encode("utf-8"))


def _check_anchor(root: bytes, tree_size: int) -> None:
    if len(root) != 32:
        raise FormatError(f"an anchored root must be 32 bytes, not {len(root)}")
    if not 0 < tree_size <= UINT64_MAX:
        raise FormatError(f"an anchored tree size must be in 1..2**64-1, not {tree_size}")


def anchor_call_data(root: bytes, tree_size: int) -> bytes:
    """Calldata of `anchor(root, treeSize)`: selector, then two 32-byte ABI words."""
    _check_anchor(root, tree_size)
    return ANCHOR_SELECTOR + root + tree_size.to_bytes(32, "big")


def calldata_anchor(root: bytes, tree_size: int) -> bytes:
    """Calldata-only mode: root || 8-byte big-endian tree size (pinned format 9)."""
    _check_anchor(root, tree_size)
    return root + tree_size.to_bytes(8, "big")


def parse_calldata_anchor(data: bytes) -> tuple[bytes, int]:
    """The (root, tree size) of a calldata-only anchor; FormatError if it is not one."""
    if len(data) != CALLDATA_LENGTH:
        raise FormatError(f"anchor calldata must be {CALLDATA_LENGTH} bytes, not {len(data)}")
    return data[:32], int.from_bytes(data[32:], "big")


def parse_anchored_data(data: bytes) -> tuple[bytes, int]:
    """The (root, tree size) of an `Anchored` event's data: two ABI words."""
    if len(data) != 64:
        raise FormatError(f"Anchored event data must be 64 bytes, not {len(data)}")
    size = int.from_bytes(data[32:], "big")
    if size > UINT64_MAX:
        raise FormatError("Anchored event tree size does not fit a uint64")
    return data[:32], size


def checksum_address(value: str, *, what: str) -> str:
    """An EVM address in EIP-55 checksum form; FormatError if `value` is not one."""
    if not isinstance(value, str) or len(value) != 42 or value[:2] not in ("0x", "0X"):
        raise FormatError(f"{what} must be a 0x-prefixed 20-byte hex address")
    try:
        bytes.fromhex(value[2:])
    except ValueError as exc:
        raise FormatError(f"{what} is not hex: {value!r}") from exc
    mixed = value[2:] != value[2:].lower() and value[2:] != value[2:].upper()
    checksummed = to_checksum_address(value)
    if mixed and checksummed != value:
        raise FormatError(f"{what} fails its EIP-55 checksum: {value!r}")
    return checksummed


# -- chain access -----------------------------------------------------------------------


def connect(rpc_url: str, *, timeout: float = 10.0) -> Web3:
    """A Web3 client for a JSON-RPC URL (http, https, or an IPC socket path)."""
    if rpc_url.startswith(("http://", "https://")):
        provider: Any = Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout})
    elif rpc_url.endswith(".ipc"):
        provider = Web3.IPCProvider(rpc_url, timeout=int(timeout))
    else:
        raise FormatError(f"RPC URL must be http(s):// or an .ipc path, not {rpc_url!r}")
    return Web3(provider)


def chain_call(what: str, call: Callable[..., T], *args: Any) -> T:
    """Run one RPC call; transport and RPC failures become ChainError naming `what`."""
    try:
        return call(*args)
    except (OSError, TimeoutError) as exc:  # requests' errors are OSErrors
        raise ChainError(f"RPC unreachable during {what}: {exc}") from exc
    except TransactionNotFound:
        raise
    except (Web3Exception, ValueError) as exc:
        raise ChainError(f"RPC error during {what}: {exc}") from exc


def load_chain_account(key_file: Path | None = None) -> LocalAccount:
    """The anchoring account from a key file (hex private key, mode 0600) or $PATIO_CHAIN_KEY."""
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
            text = key_file.read_text()
        except OSError as exc:
            raise KeyFileError(f"cannot read chain key file {key_file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"chain key file {key_file} is not text") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"chain key file {key_file} is readable by others; chmod 600 it first"
            )
        source = f"chain key file {key_file}"
    else:
        text = os.environ.get(CHAIN_KEY_ENV, "")
        if not text:
            raise KeyFileError(f"no chain key: pass --key-file or set ${CHAIN_KEY_ENV}")
        source = f"${CHAIN_KEY_ENV}"
    hex_key = text.strip().removeprefix("0x")
    try:
        raw = bytes.fromhex(hex_key)
        if len(raw) != 32:
            raise ValueError("not 32 bytes")
        account: LocalAccount = Account.from_key(raw)
    except ValueError as exc:
        raise KeyFileError(f"{source} must hold one 32-byte hex private key") from exc
    return account


@dataclass(frozen=True, kw_only=True)
class FeeCap:
    """EIP-1559 fee limits, in wei: the most this anchorer will ever bid per gas."""

    max_fee_per_gas: int = 100 * GWEI
    max_priority_fee_per_gas: int = 2 * GWEI

    def fees(self, w3: Web3) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) for the next block, within the cap.

        EIP-1559: a transaction pays base fee + tip and at most maxFeePerGas. Bidding twice
        the current base fee survives six full blocks of base-fee increases (12.5 % each).
        """
        block = chain_call("fee lookup", w3.eth.get_block, "latest")
        base = int(block.get("baseFeePerGas", 0))
        if base > self.max_fee_per_gas:
            raise ChainError(
                f"base fee {base} wei exceeds the cap of {self.max_fee_per_gas} wei; "
                "not anchoring until fees fall"
            )
        try:
            suggested = int(chain_call("fee lookup", lambda: w3.eth.max_priority_fee))
        except ChainError:
            suggested = self.max_priority_fee_per_gas  # node lacks eth_maxPriorityFeePerGas
        tip = min(suggested, self.max_priority_fee_per_gas, self.max_fee_per_gas - base)
        return min(2 * base + tip, self.max_fee_per_gas), tip


def _send(w3: Web3, raw: bytes, what: str) -> None:
    try:
        chain_call(what, w3.eth.send_raw_transaction, raw)
    except ChainError as exc:
        text = str(exc).lower()
        # Geth says "already known", anvil "transaction already imported": both mean the
        # node holds exactly these bytes, which is what a rebroadcast wants.
        if "already known" in text or "already imported" in text or "alreadyknown" in text:
            return
        raise


def _receipt(w3: Web3, tx_hash: str) -> TxReceipt | None:
    try:
        return chain_call("receipt lookup", w3.eth.get_transaction_receipt, tx_hash)
    except TransactionNotFound:
        return None


def _known(w3: Web3, tx_hash: str) -> bool:
    try:
        chain_call("transaction lookup", w3.eth.get_transaction, tx_hash)
    except TransactionNotFound:
        return False
    return True


def _eth_call(w3: Web3, to: str, data: bytes, what: str) -> bytes:
    result = chain_call(what, w3.eth.call, cast(TxParams, {"to": to, "data": data}))
    return bytes(result)


# -- the contract -----------------------------------------------------------------------


def load_artifact(path: Path | None = None) -> dict[str, Any]:
    """The compiled Anchor contract: `path`, else $PATIO_ANCHOR_ARTIFACT, else the shipped one.

    The artifact is data, not code: `contracts/evm/Anchor.json`, built by
    `contracts/evm/compile.mjs` and checked byte for byte by tests/anchoring/test_contract.py.
    """
    if path is None and os.environ.get(ARTIFACT_ENV):
        path = Path(os.environ[ARTIFACT_ENV])
    # `contracts/` sits beside `ledger/` in the checkout and in site-packages alike; the
    # file is read, never imported, so the ledger still imports nothing of ours.
    path = path or Path(__file__).resolve().parent.parent / "contracts" / "evm" / "Anchor.json"
    try:
        text = path.read_text()
    except OSError as exc:
        raise FormatError(f"cannot read the Anchor contract artifact: {exc}") from exc
    artifact = json.loads(text)
    if not isinstance(artifact, dict) or not str(artifact.get("bytecode", "")).startswith("0x"):
        raise FormatError("the Anchor artifact has no bytecode")
    return cast(dict[str, Any], artifact)


def _abi_string(text: str) -> bytes:
    # Solidity ABI spec: a lone dynamic argument is an offset word (32), a length word,
    # then the bytes right-padded to a multiple of 32.
    data = text.encode("utf-8")
    padded = data + b"\0" * (-len(data) % 32)
    return (32).to_bytes(32, "big") + len(data).to_bytes(32, "big") + padded


def deploy_contract(
    w3: Web3,
    account: LocalAccount,
    *,
    origin: str,
    fees: FeeCap | None = None,
    artifact: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
) -> str:
    """Deploy the Anchor contract for the log named `origin`; returns its checksum address."""
    if not origin:
        raise FormatError("the log origin must not be empty")
    artifact = artifact or load_artifact()
    data = HexBytes(artifact["bytecode"]) + _abi_string(origin)
    max_fee, tip = (fees or FeeCap()).fees(w3)
    chain_id = chain_call("deploy", lambda: w3.eth.chain_id)
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain_id,
        "from": account.address,
        "nonce": chain_call("deploy", w3.eth.get_transaction_count, account.address, "pending"),
        "value": 0,
        "data": data,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
    }
    tx["gas"] = _gas(w3, tx, "deploy")
    signed = account.sign_transaction(tx)
    _send(w3, bytes(signed.raw_transaction), "deploy")
    try:
        receipt = w3.eth.wait_for_transaction_receipt(
            signed.hash, timeout=timeout, poll_latency=0.2
        )
    except TimeExhausted as exc:
        raise ChainError(
            f"deploy transaction {signed.hash.to_0x_hex()} not mined in {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise ChainError(f"RPC unreachable while waiting for the deploy: {exc}") from exc
    address = receipt.get("contractAddress")
    if receipt["status"] != 1 or not address:
        raise ChainError(f"deploy transaction {signed.hash.to_0x_hex()} failed")
    deployed = to_checksum_address(address)
    stored = _eth_call(w3, deployed, ORIGIN_HASH_SELECTOR, "deploy check")
    if stored != origin_hash(origin):
        raise ChainError(f"deployed contract at {deployed} does not hold the origin hash")
    return deployed


def _gas(w3: Web3, tx: Mapping[str, Any], what: str) -> int:
    call = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value")}
    try:
        estimate = chain_call(what, w3.eth.estimate_gas, cast(TxParams, call))
    except ChainError as exc:
        if isinstance(exc.__cause__, ContractLogicError):
            raise ChainError(f"the contract refuses the {what}: {exc.__cause__}") from exc
        raise
    # Margin for a state change between estimate and inclusion; unused gas is refunded.
    return estimate + estimate // 5


# -- the anchorer -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AnchorPolicy:
    """When to anchor: every K new checkpoints, or T minutes after the last anchor."""

    every_checkpoints: int = 1
    every_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.every_checkpoints < 1:
            raise ValueError("every_checkpoints must be at least 1")
        if self.every_minutes is not None and self.every_minutes < 0:
            raise ValueError("every_minutes must not be negative")

    def due(self, *, new_checkpoints: int, last_anchor_at: datetime | None, now: datetime) -> bool:
        """Whether `new_checkpoints` unanchored checkpoints warrant an anchor now."""
        if new_checkpoints < 1:
            return False
        if last_anchor_at is None or new_checkpoints >= self.every_checkpoints:
            return True
        if self.every_minutes is None:
            return False
        return (now - last_anchor_at).total_seconds() >= self.every_minutes * 60


@dataclass(frozen=True, kw_only=True)
class AnchorRecord:
    """One row of the anchors table."""

    id: int
    tree_size: int
    root_hash: bytes
    chain_id: int
    contract: str | None
    tx_hash: str
    nonce: int
    block_number: int | None
    confirmations: int
    status: Status
    created_at: str


@dataclass(frozen=True, kw_only=True)
class AnchorPass:
    """What one anchoring pass did, and the anchor it concerned."""

    action: Literal[
        "sent",
        "rebroadcast",
        "bumped",
        "reorganised",
        "waiting",
        "confirmed",
        "failed",
        "not due",
        "up to date",
        "no checkpoint",
    ]
    anchor: AnchorRecord | None = None

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if self.anchor is None:
            return self.action
        a = self.anchor
        where = f"block {a.block_number}" if a.block_number is not None else "not mined yet"
        return (
            f"{self.action}: tree size {a.tree_size} in {a.tx_hash} on chain {a.chain_id} "
            f"({where}, {a.confirmations} confirmation(s), {a.status})"
        )


def _record(row: Any) -> AnchorRecord:
    return AnchorRecord(
        id=row.id,
        tree_size=row.tree_size,
        root_hash=bytes(row.root_hash),
        chain_id=row.chain_id,
        contract=row.contract,
        tx_hash=row.tx_hash,
        nonce=row.nonce,
        block_number=row.block_number,
        confirmations=row.confirmations,
        status=row.status,
        created_at=row.created_at,
    )


class Anchorer:
    """Anchors a log's latest checkpoint on one chain, through a contract or in calldata."""

    def __init__(
        self,
        *,
        log: Log,
        w3: Web3,
        account: LocalAccount,
        contract: str | None,
        calldata_to: str | None = None,
        policy: AnchorPolicy | None = None,
        fees: FeeCap | None = None,
        confirmations: int = 1,
        stuck_after: float = 600.0,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        self.log = log
        self.w3 = w3
        self.account = account
        self.contract = checksum_address(contract, what="contract") if contract else None
        # Calldata-only mode sends to a configured address, by default the account itself.
        self.calldata_to = (
            checksum_address(calldata_to, what="calldata address")
            if calldata_to
            else account.address
        )
        self.policy = policy or AnchorPolicy()
        self.fees = fees or FeeCap()
        self.confirmations = confirmations
        self.stuck_after = stuck_after
        # When this process first saw each transaction waiting in the mempool. A restart
        # starts the clock again: it only delays a fee bump.
        self._waiting_since: dict[str, float] = {}
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        """The chain's EIP-155 id, asked once."""
        if self._chain_id is None:
            self._chain_id = chain_call("chain id lookup", lambda: self.w3.eth.chain_id)
        return self._chain_id

    # -- the table ----------------------------------------------------------------------

    def _mine(self) -> Any:
        """Rows of this chain and this contract (or calldata mode)."""
        same_contract = (
            anchors.c.contract == self.contract
            if self.contract is not None
            else anchors.c.contract.is_(None)
        )
        return (anchors.c.chain_id == self.chain_id) & same_contract

    def records(self) -> list[AnchorRecord]:
        """This chain's and contract's anchors, oldest first."""
        with self.log.engine.connect() as conn:
            rows = conn.execute(select(anchors).where(self._mine()).order_by(anchors.c.id))
            return [_record(row) for row in rows]

    def _pending(self, conn: Connection) -> list[Any]:
        query = select(anchors)
        return list(
            conn.execute(
                query.where(self._mine(), anchors.c.status == "pending").order_by(anchors.c.id)
            )
        )

    def _write(self) -> Connection:
        conn = self.log.engine.connect().execution_options(patio_write=True)
        return conn

    def _lock(self, conn: Connection) -> None:
        # SQLite: the write connection began with BEGIN IMMEDIATE (ledger.storage), which
        # already serializes writers. PostgreSQL: one anchorer at a time, per transaction.
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(ANCHOR_LOCK)))

    def _update(self, anchor_id: int, **values: Any) -> AnchorRecord:
        with self._write() as conn, conn.begin():
            conn.execute(update(anchors).where(anchors.c.id == anchor_id).values(**values))
            row = conn.execute(select(anchors).where(anchors.c.id == anchor_id)).one()
        return _record(row)

    # -- one pass -----------------------------------------------------------------------

    def run_once(self, *, now: datetime | None = None, wait_seconds: float = 0.0) -> AnchorPass:
        """Settle the anchor in flight, or anchor the latest checkpoint if the policy says so.

        ChainError when the RPC is unreachable or refuses; the pending anchor (if any) is
        kept and the next pass resumes it.
        """
        settled = self.reorganised() or self.settle()
        if settled is not None and settled.action in ("waiting", "rebroadcast", "bumped"):
            return self._wait(settled, wait_seconds)
        result = self._anchor_latest(now or datetime.now(UTC))
        if result.action == "sent":
            return self._wait(result, wait_seconds)
        if settled is not None and result.action in ("up to date", "not due"):
            return settled  # report what this pass changed: the settled anchor
        return result

    def _wait(self, current: AnchorPass, wait_seconds: float) -> AnchorPass:
        deadline = time.monotonic() + wait_seconds
        pause = 0.05  # doubling up to 2 s: quick on dev chains, gentle on real ones
        while current.action in ("sent", "rebroadcast", "bumped", "waiting"):
            if time.monotonic() >= deadline:
                return current
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2 * pause, 2.0)
            current = self.settle() or current
        return current

    def reorganised(self) -> AnchorPass | None:
        """Put confirmed anchors a reorganisation removed back to pending; None if none was.

        Newest first, stopping at the first still in its block: one account's transactions
        are mined in nonce order, so the older ones are then in the chain too.
        """
        confirmed = [r for r in self.records() if r.status == "confirmed"]
        result: AnchorPass | None = None
        for record in reversed(confirmed):
            receipt = _receipt(self.w3, record.tx_hash)
            if receipt is not None and int(receipt["blockNumber"]) == record.block_number:
                break
            reopened = self._update(record.id, status="pending", block_number=None, confirmations=0)
            result = AnchorPass(action="reorganised", anchor=reopened)
        if result is not None:
            self.settle()  # resend now what the new chain lacks
        return result

    def settle(self) -> AnchorPass | None:
        """Update the pending anchor from the chain; None when nothing is pending."""
        with self.log.engine.connect() as conn:
            pending = self._pending(conn)
        result: AnchorPass | None = None
        for row in pending:
            result = self._settle_one(row)
        return result

    def _settle_one(self, row: Any) -> AnchorPass:
        receipt = _receipt(self.w3, row.tx_hash)
        if receipt is None:
            if _known(self.w3, row.tx_hash):
                since = self._waiting_since.setdefault(row.tx_hash, time.monotonic())
                if time.monotonic() - since >= self.stuck_after:
                    return self._bump(row)
                return AnchorPass(action="waiting", anchor=_record(row))
            used = chain_call(
                "nonce lookup", self.w3.eth.get_transaction_count, self.account.address, "latest"
            )
            if used > row.nonce:
                # Another transaction took this nonce, so ours can never be mined.
                failed = self._update(row.id, status="failed", confirmations=0, block_number=None)
                return AnchorPass(action="failed", anchor=failed)
            if row.raw_tx is None:
                raise ChainError(f"pending anchor {row.tx_hash} has no recorded transaction")
            # The node never got it, or dropped it: send the same bytes, same hash.
            _send(self.w3, bytes(row.raw_tx), "rebroadcast")
            return AnchorPass(action="rebroadcast", anchor=_record(row))
        block = int(receipt["blockNumber"])
        head = chain_call("block number lookup", lambda: self.w3.eth.block_number)
        confirmations = max(0, head - block + 1)
        if receipt["status"] != 1:
            failed = self._update(
                row.id, status="failed", block_number=block, confirmations=confirmations
            )
            return AnchorPass(action="failed", anchor=failed)
        status: Status = "confirmed" if confirmations >= self.confirmations else "pending"
        record = self._update(
            row.id, status=status, block_number=block, confirmations=confirmations
        )
        return AnchorPass(action="confirmed" if status == "confirmed" else "waiting", anchor=record)

    def _bump(self, row: Any) -> AnchorPass:
        """Replace a stuck transaction: same nonce and call, fees up by a quarter.

        Nodes take a replacement only with both fees at least 10 % higher (geth's
        txpool.pricebump); a quarter also outruns a rising base fee.
        """
        sent = chain_call("transaction lookup", self.w3.eth.get_transaction, row.tx_hash)
        max_fee, tip = self.fees.fees(self.w3)
        tip = max(tip, int(sent["maxPriorityFeePerGas"]) * 5 // 4 + 1)
        max_fee = max(max_fee, int(sent["maxFeePerGas"]) * 5 // 4 + 1, tip)
        if max_fee > self.fees.max_fee_per_gas:
            raise ChainError(
                f"anchor {row.tx_hash} is stuck, and a replacement would bid {max_fee} wei "
                f"per gas, over the cap of {self.fees.max_fee_per_gas} wei"
            )
        tx = self._transaction(bytes(row.root_hash), row.tree_size, nonce=row.nonce)
        tx.update(maxFeePerGas=max_fee, maxPriorityFeePerGas=tip, gas=int(sent["gas"]))
        signed = self.account.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        bumped = self._update(row.id, tx_hash=signed.hash.to_0x_hex(), raw_tx=raw)
        _send(self.w3, raw, "fee bump")
        return AnchorPass(action="bumped", anchor=bumped)

    def _anchor_latest(self, now: datetime) -> AnchorPass:
        latest = self.log.latest_checkpoint()
        if latest is None or latest.tree_size == 0:
            return AnchorPass(action="no checkpoint")
        previous = self._last_anchor()
        if previous is not None and previous.tree_size >= latest.tree_size:
            return AnchorPass(action="up to date", anchor=previous)
        with self.log.engine.connect() as conn:
            newer = conn.execute(
                select(func.count()).where(
                    checkpoints.c.tree_size > (previous.tree_size if previous else 0)
                )
            ).scalar_one()
        last_at = parse_rfc3339(previous.created_at, what="anchor time") if previous else None
        if not self.policy.due(new_checkpoints=newer, last_anchor_at=last_at, now=now):
            return AnchorPass(action="not due", anchor=previous)
        return self._send_new(latest.tree_size, latest.root_hash, now)

    def _last_anchor(self) -> AnchorRecord | None:
        with self.log.engine.connect() as conn:
            row = conn.execute(
                select(anchors)
                .where(self._mine(), anchors.c.status != "failed")
                .order_by(anchors.c.tree_size.desc(), anchors.c.id.desc())
                .limit(1)
            ).first()
        return _record(row) if row else None

    def _transaction(
        self, root: bytes, tree_size: int, *, nonce: int | None = None
    ) -> dict[str, Any]:
        if self.contract is not None:
            to, data = self.contract, anchor_call_data(root, tree_size)
        else:
            to, data = self.calldata_to, calldata_anchor(root, tree_size)
        max_fee, tip = self.fees.fees(self.w3)
        if nonce is None:
            nonce = chain_call(
                "nonce lookup", self.w3.eth.get_transaction_count, self.account.address, "pending"
            )
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "from": self.account.address,
            "to": to,
            "nonce": nonce,
            "value": 0,
            "data": data,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        tx["gas"] = _gas(self.w3, tx, "anchor")
        return tx

    def _send_new(self, tree_size: int, root: bytes, now: datetime) -> AnchorPass:
        tx = self._transaction(root, tree_size)
        signed = self.account.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        tx_hash = signed.hash.to_0x_hex()
        with self._write() as conn, conn.begin():
            self._lock(conn)
            if self._pending(conn):
                return AnchorPass(action="waiting")  # another anchorer got here first
            inserted = conn.execute(
                anchors.insert().values(
                    tree_size=tree_size,
                    root_hash=root,
                    chain_id=self.chain_id,
                    contract=self.contract,
                    tx_hash=tx_hash,
                    nonce=tx["nonce"],
                    block_number=None,
                    confirmations=0,
                    status="pending",
                    created_at=rfc3339_utc(now),
                )
            ).inserted_primary_key
            assert inserted is not None
            anchor_id = inserted[0]
            conn.execute(update(anchors).where(anchors.c.id == anchor_id).values(raw_tx=raw))
            row = conn.execute(select(anchors).where(anchors.c.id == anchor_id)).one()
        # Recorded and committed: from here on a failure only delays this anchor.
        _send(self.w3, raw, "anchor")
        return AnchorPass(action="sent", anchor=_record(row))
