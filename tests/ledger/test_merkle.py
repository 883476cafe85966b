"""RFC 9162 hashing and proofs against the CT vectors and a brute-force reference."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import VerificationError

# transparency-dev/merkle testonly/constants.go: LeafInputs and RootHashes.
LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# transparency-dev/merkle proof/verify_test.go: inclusionProofs (leaf is 1-based there).
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# proof/verify_test.go: consistencyProofs.
CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 2.1.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.split_point(len(leaves))
    return merkle.node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) straight from RFC 9162 2.1.3.1."""
    if len(leaves) <= 1:
        return []
    k = merkle.split_point(len(leaves))
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_root(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_root(leaves[:k])]


def reference_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) straight from RFC 9162 2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if whole else [reference_root(leaves)]
    k = merkle.split_point(n)
    if m <= k:
        return [*reference_subproof(m, leaves[:k], whole), reference_root(leaves[k:])]
    return [*reference_subproof(m - k, leaves[k:], False), reference_root(leaves[:k])]


def vector_tree() -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    tree.append([merkle.leaf_hash(leaf) for leaf in LEAF_INPUTS])
    return tree


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT.hex() == ROOTS[0]
    assert merkle.MemoryTree().root() == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_roots_match_ct_vectors(size: int) -> None:
    assert vector_tree().root(size).hex() == ROOTS[size]


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_ct_vectors(leaf: int, size: int, proof: list[str]) -> None:
    tree = vector_tree()
    assert [h.hex() for h in merkle.inclusion_proof(leaf - 1, size, tree.fetch)] == proof
    leaf_hash = merkle.leaf_hash(LEAF_INPUTS[leaf - 1])
    hashes = [bytes.fromhex(h) for h in proof]
    merkle.verify_inclusion(leaf_hash, leaf - 1, size, hashes, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_ct_vectors(first: int, second: int, proof: list[str]) -> None:
    tree = vector_tree()
    assert [h.hex() for h in merkle.consistency_proof(first, second, tree.fetch)] == proof
    hashes = [bytes.fromhex(h) for h in proof]
    merkle.verify_consistency(
        first, second, hashes, bytes.fromhex(ROOTS[first]), bytes.fromhex(ROOTS[second])
    )


def corrupt_inclusion(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes):  # type: ignore[no-untyped-def]
    """verify_test.go corruptInclusionProof: every probe must be refused."""
    yield "index - 1", index - 1, size, leaf, proof, root
    yield "index + 1", index + 1, size, leaf, proof, root
    yield "index ^ 2", index ^ 2, size, leaf, proof, root
    yield "size * 2", index, size * 2, leaf, proof, root
    yield "size / 2", index, size // 2, leaf, proof, root
    yield "wrong leaf", index, size, b"WrongLeaf", proof, root
    yield "empty root", index, size, leaf, proof, merkle.EMPTY_ROOT
    yield "random root", index, size, leaf, proof, SOME_HASH
    yield "trailing garbage", index, size, leaf, [*proof, b""], root
    yield "trailing root", index, size, leaf, [*proof, root], root
    yield "preceding garbage", index, size, leaf, [b"", *proof], root
    yield "preceding root", index, size, leaf, [root, *proof], root
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        yield f"flipped proof[{i}]", index, size, leaf, flipped, root
    if proof:
        yield "removed component", index, size, leaf, proof[:-1], root
    if len(proof) > 1:
        yield "inserted component", index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_corrupted_inclusion_proofs_are_refused(leaf: int, size: int, proof: list[str]) -> None:
    hashes = [bytes.fromhex(h) for h in proof]
    root, leaf_hash = bytes.fromhex(ROOTS[size]), merkle.leaf_hash(LEAF_INPUTS[leaf - 1])
    for desc, index, tree_size, leaf_probe, proof_probe, root_probe in corrupt_inclusion(
        leaf - 1, size, hashes, root, leaf_hash
    ):
        with pytest.raises(VerificationError, match="inclusion"):
            merkle.verify_inclusion(leaf_probe, index, tree_size, proof_probe, root_probe)
            pytest.fail(f"probe {desc} verified")


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_corrupted_consistency_proofs_are_refused(
    first: int, second: int, proof: list[str]
) -> None:
    p = [bytes.fromhex(h) for h in proof]
    r1, r2 = bytes.fromhex(ROOTS[first]), bytes.fromhex(ROOTS[second])
    probes = [
        (first - 1, second, p, r1, r2),
        (first + 1, second, p, r1, r2),
        (first ^ 2, second, p, r1, r2),
        (first, second * 2, p, r1, r2),
        (first, second // 2, p, r1, r2),
        (first, second, p, b"WrongRoot", r2),
        (first, second, p, r1, b"WrongRoot"),
        (first, second, p, r2, r1),
        (first, second, [], r1, r2),
        (first, second, [*p, b""], r1, r2),
        (first, second, [*p, r1], r1, r2),
        (first, second, [*p, r2], r1, r2),
        (first, second, [b"", *p], r1, r2),
        (first, second, [r1, *p], r1, r2),
        (first, second, [r2, *p], r1, r2),
        (first, second, [p[0], *p], r1, r2),
        (first, second, p[:-1], r1, r2),
    ]
    for i in range(len(p)):
        flipped = list(p)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((first, second, flipped, r1, r2))
    for probe in probes:
        if probe[0] == probe[1] == first and probe[2] == p and probe[3:] == (r1, r2):
            continue
        with pytest.raises(VerificationError):
            merkle.verify_consistency(*probe)


def test_trivial_consistency_cases() -> None:
    r1, r2 = b"don't care 1", b"don't care 2"
    merkle.verify_consistency(0, 0, [], r1, r1)
    merkle.verify_consistency(0, 1, [], r1, r2)
    merkle.verify_consistency(1, 1, [], r2, r2)
    for probe in [
        (0, 0, [], r1, r2),
        (1, 1, [], r1, r2),
        (1, 0, [], r1, r2),
        (2, 1, [], r1, r2),
        (1, 2, [], r1, r2),
        (0, 1, [merkle.EMPTY_ROOT], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT),
    ]:
        with pytest.raises(VerificationError, match="consistency"):
            merkle.verify_consistency(*probe)


def test_inclusion_outside_the_tree_is_refused() -> None:
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        with pytest.raises(VerificationError, match="outside"):
            merkle.verify_inclusion(SOME_HASH, index, size, [], merkle.EMPTY_ROOT)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_proofs_match_the_rfc_reference(size: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tree = merkle.MemoryTree()
    # Append in random-sized batches: the stored subtrees must not depend on batching.
    cuts = sorted(data.draw(st.sets(st.integers(1, size - 1), max_size=5)) if size > 1 else [])
    for start, end in zip([0, *cuts], [*cuts, size], strict=True):
        tree.append(leaves[start:end])
    root = reference_root(leaves)
    assert tree.root() == root
    index = data.draw(st.integers(0, size - 1))
    path = merkle.inclusion_proof(index, size, tree.fetch)
    assert path == reference_path(index, leaves)
    merkle.verify_inclusion(leaves[index], index, size, path, root)
    first = data.draw(st.integers(1, size))
    proof = merkle.consistency_proof(first, size, tree.fetch)
    assert proof == (reference_subproof(first, leaves, True) if first < size else [])
    merkle.verify_consistency(first, size, proof, reference_root(leaves[:first]), root)


def test_every_size_up_to_200_exhaustively() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(200)]
    tree = merkle.MemoryTree()
    tree.append(leaves)
    for size in range(1, 201):
        root = reference_root(leaves[:size])
        assert tree.root(size) == root
        for index in {0, size // 3, size - 1}:
            merkle.verify_inclusion(
                leaves[index], index, size, merkle.inclusion_proof(index, size, tree.fetch), root
            )
        for first in {1, size // 2 or 1, size - 1 or 1}:
            merkle.verify_consistency(
                first,
                size,
                merkle.consistency_proof(first, size, tree.fetch),
                tree.root(first),
                root,
            )
