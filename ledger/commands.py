"""The ledger's own `patio` subcommands: keygen, verify, verify-consistency and log."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ledger.cli import EXIT_FAILED, EXIT_OK, CommandError
from ledger.encoding import parse_json
from ledger.errors import ConflictError, FormatError, LedgerError
from ledger.keys import NamedKey

BATCH = 1000


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ledger's subcommands."""
    keygen = commands.add_parser("keygen", help="create an Ed25519 key file (mode 0600)")
    keygen.add_argument("--name", required=True, help="key name (a device id or log origin)")
    keygen.add_argument("--out", required=True, type=Path, help="key file to create")
    keygen.set_defaults(handler=run_keygen)

    verify = commands.add_parser("verify", help="verify a patio-proof/v1 bundle offline")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--log-key", help="pinned C2SP verifier key (or a file holding it)")
    verify.add_argument("--rpc", help="also check each anchor on chain through this JSON-RPC URL")
    verify.add_argument("--contract", help="the anchor contract the anchors must be sent to")
    verify.add_argument("--confirmations", type=int, default=1, help="confirmations required")
    verify.set_defaults(handler=run_verify)

    consistency = commands.add_parser(
        "verify-consistency", help="verify that a newer checkpoint extends an older one"
    )
    consistency.add_argument("old_checkpoint", type=Path)
    consistency.add_argument("new_checkpoint", type=Path)
    consistency.add_argument("proof", type=Path, help='JSON {"hashes": [hex, ...]}')
    consistency.add_argument("--log-key", required=True)
    consistency.set_defaults(handler=run_verify_consistency)

    log = commands.add_parser("log", help="operate a log directly (no gateway)")
    log_commands = log.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("init", run_log_init, "create the log's key and database"),
        ("append", run_log_append, "append signed envelopes from a JSON-lines file"),
        ("seal", run_log_seal, "sign a checkpoint over everything appended"),
        ("proof", run_log_proof, "export a patio-proof/v1 bundle"),
        ("consistency", run_log_consistency, "print a consistency proof"),
        ("checkpoint", run_log_checkpoint, "print a checkpoint note"),
    ):
        action = log_commands.add_parser(name, help=text)
        action.add_argument(
            "--dir",
            type=Path,
            default=Path(os.environ.get("PATIO_DATA_DIR", "var")),
            help="data directory (default $PATIO_DATA_DIR or ./var)",
        )
        action.add_argument(
            "--database-url",
            default=os.environ.get("PATIO_DATABASE_URL"),
            help="database URL (default SQLite in the data directory)",
        )
        action.set_defaults(handler=handler)
        if name == "init":
            action.add_argument("--origin", help="the log's origin line and key name")
        elif name == "append":
            action.add_argument("file", type=Path, help="one {payload, sig} envelope a line")
            action.add_argument("--contract", required=True, help="<name>@<version>")
            action.add_argument("--device-key", required=True, help="the signer's base64 key")
        elif name == "proof":
            action.add_argument("log_tag_id")
            action.add_argument("--device-key", required=True, help="the signer's base64 key")
            action.add_argument("--out", type=Path, help="write here instead of stdout")
        elif name == "consistency":
            action.add_argument("--first", type=int, required=True)
            action.add_argument("--second", type=int, required=True)
        elif name == "checkpoint":
            action.add_argument("--size", type=int, help="tree size (default the latest)")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{what} {path} is not UTF-8 text") from exc


def _log_key(value: str | None) -> str | None:
    if value is not None and os.path.isfile(value):
        return _read(Path(value), "log key file").strip()
    return value


def run_keygen(args: argparse.Namespace) -> int:
    """Create a key file; print the public key alone on stdout, for `PUB=$(patio keygen ...)`."""
    key = NamedKey.generate(args.name)
    key.save(args.out)
    print(f"patio: wrote {args.out} (mode 0600); its C2SP verifier key: {key.verifier_key}",
          file=sys.stderr)  # fmt: skip
    print(key.public_key_b64)
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    """Verify a bundle; 0 valid, 1 a check failed, 2 unusable input."""
    from ledger.verify import verify_bundle

    data = parse_json(_read(args.bundle, "bundle"), what="bundle")
    log_key = _log_key(args.log_key)
    result = verify_bundle(data, log_key=log_key)
    if not result.key_pinned:
        print(
            "patio: warning: log key not pinned (--log-key); verified against the key the "
            "bundle carries, which proves nothing about whose log this is",
            file=sys.stderr,
        )
    if args.rpc:
        from ledger.anchor_verify import verify_anchors_on_chain

        verify_anchors_on_chain(
            data, args.rpc, min_confirmations=args.confirmations, contract=args.contract
        )
    bundle, checkpoint = result.bundle, result.checkpoint
    print(
        f"OK: entry {bundle.log_tag_id} is leaf {bundle.leaf_index} of {checkpoint.origin} "
        f"at tree size {checkpoint.tree_size}; {len(bundle.anchors)} anchor(s)"
        + (" checked on chain" if args.rpc else "")
    )
    return EXIT_OK


def run_verify_consistency(args: argparse.Namespace) -> int:
    """Verify a consistency proof between two checkpoint files."""
    from ledger.verify import verify_consistency_files

    proof = parse_json(_read(args.proof, "proof"), what="proof")
    log_key = _log_key(args.log_key)
    assert log_key is not None
    old, new = verify_consistency_files(
        _read(args.old_checkpoint, "checkpoint"),
        _read(args.new_checkpoint, "checkpoint"),
        proof,
        log_key=log_key,
    )
    print(f"OK: {new.origin} at size {new.tree_size} extends size {old.tree_size}")
    return EXIT_OK


def _open(args: argparse.Namespace, origin: str | None = None) -> Any:
    from ledger.log import open_data_dir

    return open_data_dir(args.dir, database_url=args.database_url, origin=origin)


def run_log_init(args: argparse.Namespace) -> int:
    """Create the log and print its verifier key."""
    log = _open(args, origin=args.origin)
    print(log.signer.verifier_key)
    return EXIT_OK


def run_log_append(args: argparse.Namespace) -> int:
    """Append verified envelopes; report each refused line on stderr."""
    from ledger.encoding import canonical_json
    from ledger.keys import decode_public_key, verify_signature
    from ledger.log import Submission

    device_key = decode_public_key(args.device_key)
    submissions: list[tuple[int, Submission]] = []
    refused = 0
    for number, line in enumerate(_read(args.file, "envelope file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            envelope = parse_json(line, what=f"line {number}")
            if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), dict):
                raise FormatError(f"line {number}: expected {{payload, sig}}")
            payload, sig = envelope["payload"], envelope.get("sig")
            if not isinstance(sig, str):
                raise FormatError(f"line {number}: sig must be a base64 string")
            device_id, seq = payload.get("device_id"), payload.get("seq")
            if not isinstance(device_id, str) or not isinstance(seq, int) or isinstance(seq, bool):
                raise FormatError(f"line {number}: payload needs device_id and integer seq")
            payload_jcs = canonical_json(payload)
            verify_signature(device_key, payload_jcs, sig)
        except LedgerError as exc:
            print(f"patio: line {number} refused: {exc}", file=sys.stderr)
            refused += 1
            continue
        submissions.append(
            (
                number,
                Submission(
                    contract=args.contract,
                    payload=payload,
                    sig=sig,
                    device_id=device_id,
                    seq=seq,
                    payload_jcs=payload_jcs,
                ),
            )
        )
    log = _open(args)
    counts = {"accepted": 0, "duplicate": 0}
    for start in range(0, len(submissions), BATCH):
        batch = submissions[start : start + BATCH]
        for (number, _), outcome in zip(batch, log.append([s for _, s in batch]), strict=True):
            if isinstance(outcome, ConflictError):
                print(f"patio: line {number} refused: {outcome}", file=sys.stderr)
                refused += 1
            else:
                counts[outcome.status] += 1
                print(outcome.entry.log_tag_id)
    print(
        f"appended {counts['accepted']}, duplicates {counts['duplicate']}, refused {refused}",
        file=sys.stderr,
    )
    return EXIT_FAILED if refused else EXIT_OK


def run_log_seal(args: argparse.Namespace) -> int:
    """Seal and print the checkpoint."""
    sys.stdout.write(_open(args).seal().note)
    return EXIT_OK


def run_log_proof(args: argparse.Namespace) -> int:
    """Write a proof bundle."""
    bundle = _open(args).bundle(args.log_tag_id, device_key=args.device_key)
    text = json.dumps(bundle.to_json(), indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def run_log_consistency(args: argparse.Namespace) -> int:
    """Print a consistency proof between two checkpointed sizes."""
    hashes = _open(args).consistency_proof(args.first, args.second)
    print(json.dumps({"hashes": [h.hex() for h in hashes]}))
    return EXIT_OK


def run_log_checkpoint(args: argparse.Namespace) -> int:
    """Print the latest (or a given) checkpoint."""
    log = _open(args)
    checkpoint = log.checkpoint(args.size) if args.size is not None else log.latest_checkpoint()
    if checkpoint is None:
        raise CommandError("the log has no checkpoint yet: run `patio log seal`", EXIT_FAILED)
    sys.stdout.write(checkpoint.note)
    return EXIT_OK
