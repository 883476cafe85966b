// SPDX-License-Identifier: AGPL-3.0-or-later
pragma solidity 0.8.37;

/// @title Patio ledger checkpoint anchor
/// @notice Records that the log named by `originHash` had Merkle root `root` at `treeSize`
///         (DESIGN.md pinned format 9). Only the operator's chain account may anchor, and tree
///         sizes must strictly grow, so the chain orders the operator's claims about one log.
/// @dev Gas per anchor is constant: one warm read-modify-write of a single packed slot
///      (owner and latest tree size) plus one LOG2. The root itself lives only in the event;
///      verifiers read it from the transaction receipt, as `ledger/anchor_verify.py` does.
contract Anchor {
    /// @notice A checkpoint of the log with origin hash `originHash` was anchored.
    event Anchored(bytes32 indexed originHash, bytes32 root, uint64 treeSize);

    /// @notice The anchoring account changed (for example after a key rotation).
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error TreeSizeNotGrowing(uint64 latest, uint64 given);
    error ZeroOwner();

    /// @notice keccak256 of the log's checkpoint origin line (c2sp.org/tlog-checkpoint).
    bytes32 public immutable originHash;

    // One storage slot: 20 bytes of owner and 8 bytes of tree size. The slot is non-zero
    // from the constructor on, so every anchor pays the 5,000 gas of a non-zero rewrite
    // (EIP-2929 cold read plus EIP-2200 update), never the 20,000 of a fresh slot.
    address public owner;
    uint64 public treeSize;

    constructor(string memory origin) {
        originHash = keccak256(bytes(origin));
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Anchor the checkpoint (`root`, `size`); `size` must exceed every earlier one.
    function anchor(bytes32 root, uint64 size) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        uint64 latest = treeSize;
        if (size <= latest) revert TreeSizeNotGrowing(latest, size);
        treeSize = size;
        emit Anchored(originHash, root, size);
    }

    /// @notice Hand anchoring over to another account.
    function transferOwnership(address newOwner) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        if (newOwner == address(0)) revert ZeroOwner();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
