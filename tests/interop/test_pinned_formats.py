"""Pinned formats (DESIGN.md 1-7) checked against other implementations' published answers."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.bundle import log_tag_id
from ledger.encoding import canonical_json
from ledger.errors import VerificationError
from ledger.keys import NamedKey, key_id
from ledger.log import entry_bytes
from ledger.note import Checkpoint, NoteVerifier, open_note, sign_note

# golang.org/x/mod/sumdb/note documentation: the reference key, text and signed note.
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# c2sp.org/signed-note, "Verifier keys" example.
SPEC_VERIFIER = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_signed_notes_match_the_go_reference_byte_for_byte() -> None:
    signer = NamedKey.from_text(GO_SIGNER)
    assert signer.verifier_key == GO_VERIFIER
    assert signer.to_text().strip() == GO_SIGNER
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, NoteVerifier.parse(GO_VERIFIER)) == GO_TEXT


def test_the_spec_example_note_verifies() -> None:
    verifier = NoteVerifier.parse(SPEC_VERIFIER)
    assert str(verifier) == SPEC_VERIFIER
    assert open_note(SPEC_NOTE, verifier) == "This is an example message.\n"
    with pytest.raises(VerificationError, match="checkpoint signature"):
        open_note(SPEC_NOTE.replace("example message", "exemple message"), verifier)


def test_key_id_is_the_pinned_hash() -> None:
    key = NamedKey.generate("hoa.example/log")
    expected = hashlib.sha256(b"hoa.example/log\n\x01" + key.public_key).digest()[:4]
    assert key_id(key.name, key.public_key) == expected == key.key_id


def test_checkpoint_note_layout() -> None:
    key = NamedKey.generate("hoa.example/log")
    root = hashlib.sha256(b"root").digest()
    note = Checkpoint(origin="hoa.example/log", tree_size=1024, root_hash=root).sign(key)
    body, signature = note.split("\n\n")
    assert body.split("\n") == ["hoa.example/log", "1024", base64.b64encode(root).decode()]
    assert re.fullmatch(r"\u2014 hoa\.example/log [A-Za-z0-9+/]{91}=\n", signature)
    parsed = Checkpoint.open(note, NoteVerifier.parse(key.verifier_key))
    assert (parsed.tree_size, parsed.root_hash) == (1024, root)


def test_log_tag_id_shape() -> None:
    tag = log_tag_id(merkle.leaf_hash(b"{}"))
    assert re.fullmatch(r"c274b5[0-9a-f]{64}", tag) and len(tag) == 70


def test_device_signature_is_over_jcs_payload() -> None:
    device = NamedKey.generate("dev-1")
    payload = {"seq": 1, "device_id": "dev-1", "b": [1.0, 2.5e-7, "é"]}
    sig = device.sign_payload(payload)
    message = b'{"b":[1,2.5e-7,"\xc3\xa9"],"device_id":"dev-1","seq":1}'
    assert canonical_json(payload) == message
    device.signing_key.verify_key.verify(message, base64.b64decode(sig))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    payload=st.dictionaries(st.text(), json_values, max_size=6),
    contract=st.text(min_size=1),
    sig=st.text(),
    received_at=st.text(),
)
def test_entry_bytes_equal_jcs_of_the_entry_object(
    payload: dict[str, object], contract: str, sig: str, received_at: str
) -> None:
    assembled = entry_bytes(
        contract=contract, payload_jcs=canonical_json(payload), sig=sig, received_at=received_at
    )
    whole = {
        "v": 1,
        "contract": contract,
        "payload": payload,
        "sig": sig,
        "received_at": received_at,
    }
    assert assembled == canonical_json(whole)
    assert json.loads(assembled) == json.loads(canonical_json(whole))


any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1e-4, 9.999e-5, 1e16, 9999999999999998.0, 2.0**53, 1e21, 5e-324])
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(), children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x7F)), children, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=1500, deadline=None)
@given(any_json)
def test_the_fast_path_is_byte_identical_to_rfc8785(value: object) -> None:
    import rfc8785

    from ledger.errors import FormatError

    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(FormatError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        21.0,
        -0.0,
        0.1,
        1e-4,
        123456789.125,
        1e15,
        2.0**53 - 1,
        1e-5,
        1e16,
        1e21,
        2.0**53,
        "é",
        '\x00\x1f"\\',
        {"\ue000": 1, "\U0001f600": 2},
        -(2**53) + 1,
        2**53,
        functools.reduce(lambda inner, _: [inner], range(300), 1.5),  # past orjson's depth
        "".join(map(chr, range(128))),
    ],
)
def test_boundaries_of_the_fast_path(value: object) -> None:
    import rfc8785

    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        return
    assert canonical_json(value) == expected
