"""On-chain checks of checkpoint anchors (DESIGN.md pinned format 9), for bundles and audits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.exceptions import TransactionNotFound

from ledger.anchoring import (
    ANCHORED_TOPIC,
    chain_call,
    checksum_address,
    connect,
    origin_hash,
    parse_anchored_data,
    parse_calldata_anchor,
)
from ledger.bundle import ProofBundle
from ledger.errors import FormatError, VerificationError
from ledger.note import Checkpoint


@dataclass(frozen=True, kw_only=True)
class ChainAnchor:
    """An anchor as the chain shows it: where it was mined and how deep it now is."""

    tx_hash: str
    to: str | None
    block_number: int
    confirmations: int
    root: bytes
    tree_size: int


def tx_hash_of(value: Any, *, what: str) -> str:
    """A transaction hash as 0x and 64 lowercase hex digits; FormatError otherwise."""
    if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
        raise FormatError(f"{what} must be 0x followed by 64 hex digits")
    try:
        bytes.fromhex(value[2:])
    except ValueError as exc:
        raise FormatError(f"{what} is not hex") from exc
    return value.lower()


def check_anchor_on_chain(
    w3: Web3,
    *,
    chain_id: int,
    tx_hash: str,
    block_number: int | None,
    contract: str | None,
    tree_size: int,
    root: bytes,
    origin: str,
    configured_contract: str | None = None,
    min_confirmations: int = 1,
    what: str = "anchor",
) -> ChainAnchor:
    """Check one anchor against the chain `w3` serves; VerificationError("anchor") if false.

    The transaction must exist, be mined and have succeeded, be sent to the contract the
    anchor names (and the configured one), carry exactly this root and size (in the
    contract's Anchored event for this log's origin, or in calldata-only mode in its input),
    and be `min_confirmations` deep.
    """
    tx_hash = tx_hash_of(tx_hash, what=f"{what}.tx_hash")
    named = checksum_address(contract, what=f"{what}.contract") if contract else None
    configured = (
        checksum_address(configured_contract, what="configured contract")
        if configured_contract
        else None
    )
    if named and configured and named != configured:
        raise VerificationError(
            "anchor", f"{what} names contract {named}, not the configured {configured}"
        )
    expected_to = named or configured

    served = chain_call("chain id lookup", lambda: w3.eth.chain_id)
    if served != chain_id:
        raise VerificationError(
            "anchor", f"{what} is on chain {chain_id}, but the RPC serves chain {served}"
        )
    try:
        tx = chain_call("transaction lookup", w3.eth.get_transaction, tx_hash)
    except TransactionNotFound:
        raise VerificationError(
            "anchor", f"{what}: transaction {tx_hash} does not exist on chain {chain_id}"
        ) from None
    try:
        receipt = chain_call("receipt lookup", w3.eth.get_transaction_receipt, tx_hash)
    except TransactionNotFound:
        raise VerificationError(
            "anchor", f"{what}: transaction {tx_hash} is not mined yet"
        ) from None
    if receipt["status"] != 1:
        raise VerificationError("anchor", f"{what}: transaction {tx_hash} failed (reverted)")
    to = tx.get("to")
    sent_to = checksum_address(str(to), what="transaction recipient") if to else None
    if expected_to is not None and sent_to != expected_to:
        raise VerificationError(
            "anchor", f"{what}: transaction {tx_hash} was sent to {sent_to}, not {expected_to}"
        )

    if named is not None:
        found = _event(receipt["logs"], named, origin)
        if found is None:
            raise VerificationError(
                "anchor",
                f"{what}: transaction {tx_hash} emitted no Anchored event of contract {named} "
                f"for origin {origin!r}",
            )
        chain_root, chain_size = found
    else:
        try:
            chain_root, chain_size = parse_calldata_anchor(bytes(tx["input"]))
        except FormatError as exc:
            raise VerificationError(
                "anchor", f"{what}: transaction {tx_hash} is not a calldata anchor: {exc}"
            ) from exc
    if chain_root != root or chain_size != tree_size:
        raise VerificationError(
            "anchor",
            f"{what}: chain has root {chain_root.hex()} at size {chain_size}; the anchor "
            f"claims root {root.hex()} at size {tree_size}",
        )

    mined = int(receipt["blockNumber"])
    if block_number is not None and block_number != mined:
        raise VerificationError(
            "anchor", f"{what}: mined in block {mined}, the anchor says block {block_number}"
        )
    head = chain_call("block number lookup", lambda: w3.eth.block_number)
    depth = max(0, head - mined + 1)
    if depth < min_confirmations:
        raise VerificationError(
            "anchor",
            f"{what}: {depth} confirmation(s), {min_confirmations} required (block {mined})",
        )
    return ChainAnchor(
        tx_hash=tx_hash,
        to=sent_to,
        block_number=mined,
        confirmations=depth,
        root=chain_root,
        tree_size=chain_size,
    )


def _event(logs: Any, contract: str, origin: str) -> tuple[bytes, int] | None:
    wanted = origin_hash(origin)
    for log in logs:
        topics = [bytes(t) for t in log["topics"]]
        if (
            checksum_address(str(log["address"]), what="log address") == contract
            and len(topics) == 2
            and topics[0] == ANCHORED_TOPIC
            and topics[1] == wanted
        ):
            return parse_anchored_data(bytes(log["data"]))
    return None


def _origin(note: str) -> str:
    """The origin line of a checkpoint note (its signature is checked elsewhere)."""
    body, sep, _ = note.partition("\n\n")
    if not sep:
        raise FormatError("checkpoint is not a signed note: no signature block")
    return Checkpoint.parse_body(body + "\n").origin


def verify_anchors_on_chain(
    bundle: dict[str, Any],
    rpc_url: str,
    *,
    min_confirmations: int = 1,
    contract: str | None = None,
) -> None:
    """Check every anchor of a `patio-proof/v1` bundle on chain; raise on the first false one.

    VerificationError("anchor", ...) names the anchor and what is wrong; FormatError when an
    anchor field is malformed; ledger.anchoring.ChainError when the RPC cannot be used.
    """
    check_bundle_anchors(
        bundle,
        lambda: connect(rpc_url),
        min_confirmations=min_confirmations,
        contract=contract,
    )


def check_bundle_anchors(
    bundle: dict[str, Any],
    chain: Callable[[], Web3],
    *,
    min_confirmations: int = 1,
    contract: str | None = None,
) -> None:
    """`verify_anchors_on_chain` with the chain client made by `chain` (called if needed)."""
    parsed = ProofBundle.parse(bundle)
    if min_confirmations < 0:
        raise FormatError("min_confirmations must not be negative")
    origin = _origin(parsed.checkpoint)
    for position, anchor in enumerate(parsed.anchors):
        what = f"anchors[{position}]"
        tx_hash_of(anchor.tx_hash, what=f"{what}.tx_hash")
        if anchor.contract is not None:
            checksum_address(anchor.contract, what=f"{what}.contract")
    if contract is not None:
        checksum_address(contract, what="configured contract")
    if not parsed.anchors:
        return
    w3 = chain()
    for position, anchor in enumerate(parsed.anchors):
        check_anchor_on_chain(
            w3,
            chain_id=anchor.chain_id,
            tx_hash=anchor.tx_hash,
            block_number=anchor.block_number,
            contract=anchor.contract,
            tree_size=anchor.tree_size,
            root=anchor.root,
            origin=origin,
            configured_contract=contract,
            min_confirmations=min_confirmations,
            what=f"anchors[{position}]",
        )
