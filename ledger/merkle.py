"""RFC 9162 section 2.1 Merkle tree hashing, inclusion and consistency proofs.

Trees are addressed by complete subtrees: node (level, index) is the hash of leaves
[index * 2**level, (index + 1) * 2**level). Those never change once the leaves exist,
so storage keeps exactly them; every other hash a proof needs (the right edge of a
tree whose size is not a power of two) is folded from O(log n) of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from ledger.errors import VerificationError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"  # RFC 9162 2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))
NODE_PREFIX = b"\x01"  # RFC 9162 2.1.1: SHA-256(0x01 || MTH(left) || MTH(right))
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 2.1.1: MTH({}) = SHA-256()

NodeId = tuple[int, int]
"""(level, index) of a complete subtree."""

NodeFetcher = Callable[[Iterable[NodeId]], Mapping[NodeId, bytes]]
"""Returns the stored hash of every requested complete subtree."""

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """The RFC 9162 leaf hash of one entry's bytes."""
    return _sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash."""
    return _sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1), where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_complete(start: int, end: int) -> bool:
    size = end - start
    return size & (size - 1) == 0 and start % size == 0


def _node_id(start: int, end: int) -> NodeId:
    level = (end - start).bit_length() - 1
    return level, start >> level


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The complete subtrees whose fold gives MTH(D[start:end]), left to right."""
    if end <= start:
        raise ValueError("empty range")
    if _is_complete(start, end):
        return [_node_id(start, end)]
    k = split_point(end - start)
    return range_nodes(start, start + k) + range_nodes(start + k, end)


def range_hash(start: int, end: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """MTH(D[start:end]) from the hashes of `range_nodes(start, end)`."""
    if _is_complete(start, end):
        return nodes[_node_id(start, end)]
    k = split_point(end - start)
    return node_hash(range_hash(start, start + k, nodes), range_hash(start + k, end, nodes))


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[0:size]), leaf first (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(first, D[0:second]) (RFC 9162 2.1.4.1)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    ranges: list[tuple[int, int]] = []
    start, end, whole = 0, second, True
    m = first
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            m -= k
            start += k
            whole = False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def hashes_for_ranges(ranges: Sequence[tuple[int, int]], fetch: NodeFetcher) -> list[bytes]:
    """Fold each range's hash from stored complete subtrees, fetched in one call."""
    wanted = {node for start, end in ranges for node in range_nodes(start, end)}
    nodes = fetch(wanted)
    return [range_hash(start, end, nodes) for start, end in ranges]


def tree_root(size: int, fetch: NodeFetcher) -> bytes:
    """MTH(D[0:size])."""
    if size == 0:
        return EMPTY_ROOT
    return hashes_for_ranges([(0, size)], fetch)[0]


def inclusion_proof(index: int, size: int, fetch: NodeFetcher) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `size` leaves."""
    return hashes_for_ranges(inclusion_ranges(index, size), fetch)


def consistency_proof(first: int, second: int, fetch: NodeFetcher) -> list[bytes]:
    """The proof that the tree of `second` leaves extends the tree of `first` leaves."""
    return hashes_for_ranges(consistency_ranges(first, second), fetch)


def new_nodes(
    old_size: int, new_leaves: Sequence[bytes], fetch: NodeFetcher
) -> dict[int, tuple[int, list[bytes]]]:
    """The complete subtrees that appending `new_leaves` to a tree of `old_size` creates.

    Returns {level: (first index, hashes)}; at most one existing node per level is read
    (the left sibling of the first new node when it is a right child).
    """
    created: dict[int, tuple[int, list[bytes]]] = {}
    level, start, hashes = 0, old_size, list(new_leaves)
    sha, prefix = _sha256, NODE_PREFIX
    while hashes:
        created[level] = (start, hashes)
        if start % 2:
            sibling = fetch([(level, start - 1)])[(level, start - 1)]
            hashes = [sibling, *hashes]
            start -= 1
        # An odd last node has no sibling yet: zip leaves it for a later append.
        pairs = zip(hashes[0::2], hashes[1::2], strict=False)
        hashes = [sha(prefix + a + b).digest() for a, b in pairs]
        start //= 2
        level += 1
    return created


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 2.1.3.2); raise VerificationError if it fails."""
    if not 0 <= index < size:
        raise VerificationError("inclusion", f"leaf index {index} is outside tree size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion", "proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion", "proof is shorter than the tree is deep")
    if r != root:
        raise VerificationError("inclusion", "proof does not lead to the checkpoint's root hash")


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """Check a consistency proof (RFC 9162 2.1.4.2); raise VerificationError if it fails."""
    if not 0 <= first <= second:
        raise VerificationError("consistency", f"size {second} cannot extend size {first}")
    if first == second or first == 0:
        if proof:
            raise VerificationError("consistency", "proof must be empty for these sizes")
        if first == second and first_root != second_root:
            raise VerificationError("consistency", "same tree size but different root hashes")
        return
    if not proof:
        raise VerificationError("consistency", "proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency", "proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency", "proof is shorter than the tree is deep")
    if fr != first_root:
        raise VerificationError("consistency", "proof does not lead to the older root hash")
    if sr != second_root:
        raise VerificationError("consistency", "proof does not lead to the newer root hash")


class MemoryTree:
    """An in-memory tree keeping every complete subtree: the reference for tests and tools."""

    def __init__(self) -> None:
        self.size = 0
        self._nodes: dict[NodeId, bytes] = {}

    def append(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add leaves (already leaf-hashed)."""
        for level, (start, hashes) in new_nodes(self.size, leaf_hashes, self.fetch).items():
            for offset, value in enumerate(hashes):
                self._nodes[level, start + offset] = value
        self.size += len(leaf_hashes)

    def fetch(self, wanted: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """A NodeFetcher over this tree."""
        return {node: self._nodes[node] for node in wanted}

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (all by default)."""
        return tree_root(self.size if size is None else size, self.fetch)
