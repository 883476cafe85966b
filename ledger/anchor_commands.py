"""`patio anchor deploy|run` and `patio audit`: the chain and auditor commands."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.cli import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE, CommandError
from ledger.errors import FormatError, LedgerError

if TYPE_CHECKING:
    from web3 import Web3

    from ledger.anchoring import FeeCap
    from ledger.audit import AuditSource
    from ledger.log import Log

CONTRACT_ENV = "PATIO_ANCHOR_CONTRACT"
DATA_DIR_ENV = "PATIO_DATA_DIR"
DATABASE_ENV = "PATIO_DATABASE_URL"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `patio anchor` and `patio audit`."""
    anchor = commands.add_parser("anchor", help="anchor checkpoints on an EVM chain")
    actions = anchor.add_subparsers(dest="anchor_command", required=True, metavar="ACTION")

    deploy = actions.add_parser("deploy", help="deploy the Anchor contract; prints its address")
    _chain_options(deploy)
    deploy.add_argument("--origin", help="the log's origin line (default: the log's own)")
    _log_options(deploy)
    deploy.set_defaults(handler=run_deploy)

    run = actions.add_parser("run", help="one anchoring pass over the latest checkpoint")
    _chain_options(run)
    _log_options(run)
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--contract",
        default=os.environ.get(CONTRACT_ENV),
        help=f"the Anchor contract (default ${CONTRACT_ENV})",
    )
    mode.add_argument(
        "--calldata", action="store_true", help="no contract: root and size in calldata"
    )
    run.add_argument(
        "--calldata-to", help="address calldata anchors are sent to (default: the account)"
    )
    run.add_argument("--confirmations", type=int, default=1, help="blocks until confirmed")
    run.add_argument("--every-checkpoints", type=int, default=1, metavar="K")
    run.add_argument("--every-minutes", type=float, metavar="T")
    run.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for confirmations"
    )
    run.set_defaults(handler=run_anchor)

    audit = commands.add_parser(
        "audit", help="audit a log: checkpoints, consistency, anchors, and (--full) entries"
    )
    where = audit.add_mutually_exclusive_group(required=True)
    where.add_argument("--gateway", metavar="URL", help="the gateway's base URL")
    where.add_argument("--local", action="store_true", help="read the database directly")
    audit.add_argument("--log-key", required=True, help="pinned verifier key (or its file)")
    audit.add_argument("--api-key", default=os.environ.get("PATIO_API_KEY"), help="app API key")
    audit.add_argument("--rpc", help="check each anchor on chain through this JSON-RPC URL")
    audit.add_argument("--contract", help="the Anchor contract anchors must be sent to")
    audit.add_argument("--confirmations", type=int, default=1, help="confirmations required")
    audit.add_argument("--state", type=Path, help="audit state file (read, then updated)")
    audit.add_argument("--full", action="store_true", help="download and check every entry")
    audit.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS")
    audit.add_argument("--report", type=Path, help="write the JSON report here")
    audit.add_argument(
        "--device-keys", type=Path, help="--local: JSON {device id: base64 key} to check with"
    )
    _log_options(audit)
    audit.set_defaults(handler=run_audit)


def _chain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    parser.add_argument(
        "--key-file", type=Path, help="chain account key file (default $PATIO_CHAIN_KEY)"
    )
    parser.add_argument("--max-fee-gwei", default="100", help="EIP-1559 maxFeePerGas cap")
    parser.add_argument("--max-priority-fee-gwei", default="2", help="EIP-1559 tip cap")


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        "--data-dir",
        dest="dir",
        type=Path,
        default=Path(os.environ.get(DATA_DIR_ENV, "var")),
        help=f"data directory (default ${DATA_DIR_ENV} or ./var)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_ENV),
        help=f"database URL (default ${DATABASE_ENV}, else SQLite in the data directory)",
    )


def _gwei(text: str, what: str) -> int:
    try:
        value = Decimal(text) * 10**9
    except InvalidOperation as exc:
        raise CommandError(f"{what} must be a number of gwei, not {text!r}") from exc
    if value < 0 or value != value.to_integral_value():
        raise CommandError(f"{what} must be a non-negative whole number of wei")
    return int(value)


def _fees(args: argparse.Namespace) -> FeeCap:
    from ledger.anchoring import FeeCap

    return FeeCap(
        max_fee_per_gas=_gwei(args.max_fee_gwei, "--max-fee-gwei"),
        max_priority_fee_per_gas=_gwei(args.max_priority_fee_gwei, "--max-priority-fee-gwei"),
    )


def _open_log(args: argparse.Namespace) -> Log:
    """The log the options name, without creating a key or migrating anything."""
    from ledger.keys import NamedKey
    from ledger.log import LOG_KEY_FILE, Log
    from ledger.storage import database_url, open_engine

    key_path = args.dir / LOG_KEY_FILE
    url = database_url(args.database_url, args.dir)
    if not args.database_url and not (args.dir / "ledger.sqlite3").exists():
        raise CommandError(f"no log in {args.dir}: pass --dir or --database-url")
    signer = NamedKey.load(key_path) if key_path.exists() else None
    origin = signer.name if signer else "unknown"
    return Log(engine=open_engine(url, migrate=False), signer=signer, origin=origin)


def _account(args: argparse.Namespace) -> Any:
    from ledger.anchoring import load_chain_account

    return load_chain_account(args.key_file)


def run_deploy(args: argparse.Namespace) -> int:
    """Deploy the Anchor contract and print its address."""
    from ledger.anchoring import connect, deploy_contract

    origin = args.origin
    if origin is None:
        log = _open_log(args)
        if log.signer is None:
            raise CommandError("pass --origin: the log's key file is not in the data directory")
        origin = log.origin
    account = _account(args)
    address = deploy_contract(connect(args.rpc), account, origin=origin, fees=_fees(args))
    print(address)
    print(f"deployed for origin {origin!r}, owner {account.address}", file=sys.stderr)
    return EXIT_OK


def run_anchor(args: argparse.Namespace) -> int:
    """One anchoring pass; prints what it did."""
    from ledger.anchoring import Anchorer, AnchorPolicy, connect

    if not args.contract and not args.calldata:
        raise CommandError(
            f"pass --contract ADDRESS (or set ${CONTRACT_ENV}; see `patio anchor deploy`), "
            "or --calldata to anchor in calldata without a contract"
        )
    if args.calldata_to and not args.calldata:
        raise CommandError("--calldata-to needs --calldata")
    try:
        policy = AnchorPolicy(
            every_checkpoints=args.every_checkpoints, every_minutes=args.every_minutes
        )
        anchorer = Anchorer(
            log=_open_log(args),
            w3=connect(args.rpc),
            account=_account(args),
            contract=None if args.calldata else args.contract,
            calldata_to=args.calldata_to,
            policy=policy,
            fees=_fees(args),
            confirmations=args.confirmations,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    result = anchorer.run_once(wait_seconds=args.wait)
    print(result.describe())
    return EXIT_OK


# -- audit ------------------------------------------------------------------------------


def _log_key(value: str) -> str:
    if os.path.isfile(value):
        try:
            return Path(value).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read log key file {value}: {exc}") from exc
    return value


def _device_keys(args: argparse.Namespace, log: Log) -> dict[str, list[str]]:
    """Device keys for --local: a JSON file, else the gateway's key registry if present."""
    if args.device_keys is not None:
        from ledger.encoding import parse_json

        try:
            given = parse_json(args.device_keys.read_bytes(), what="device keys file")
        except OSError as exc:
            raise CommandError(f"cannot read {args.device_keys}: {exc.strerror}") from exc
        if not isinstance(given, dict):
            raise FormatError("device keys file must be a JSON object {device id: [base64 key]}")
        keys: dict[str, list[str]] = {}
        for device, value in given.items():
            listed = [value] if isinstance(value, str) else value
            if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
                raise FormatError(f"device keys file: {device!r} must map to base64 key(s)")
            keys[device] = listed
        return keys
    from sqlalchemy import inspect, text

    from ledger.keys import NamedKey

    # The gateway keeps every device key in device_keys(device_id, public_key) in the same
    # database, and signs registry entries as device "_registry" with <data dir>/registry.key
    # (gateway/store.py, gateway/app.py): read by name, so the ledger imports nothing of it.
    found: dict[str, list[str]] = {}
    if "device_keys" in inspect(log.engine).get_table_names():
        with log.engine.connect() as conn:
            for device, key in conn.execute(text("SELECT device_id, public_key FROM device_keys")):
                found.setdefault(str(device), []).append(str(key))
    registry = args.dir / "registry.key"
    if registry.exists():
        found["_registry"] = [NamedKey.load(registry).public_key_b64]
    return found


def _source(args: argparse.Namespace) -> tuple[AuditSource, Log | None]:
    if args.local:
        from ledger.audit import LocalSource

        log = _open_log(args)
        return LocalSource(log, device_keys=_device_keys(args, log)), log
    from ledger.audit_gateway import GatewaySource

    return GatewaySource(args.gateway, api_key=args.api_key), None


def _progress(done: int, total: int, seconds: float) -> None:
    rate = done / seconds if seconds > 0 else 0.0
    print(f"audit: {done:,}/{total:,} entries ({rate:,.0f}/s)", file=sys.stderr, flush=True)


def run_audit(args: argparse.Namespace) -> int:
    """Audit once (or every --watch seconds); exit 1 on any finding."""
    from ledger.audit import Auditor, AuditState

    if args.watch is not None and args.watch <= 0:
        raise CommandError("--watch needs a positive number of seconds")
    if args.confirmations < 0:
        raise CommandError("--confirmations must not be negative")
    source, _ = _source(args)
    chain: Callable[[], Web3] | None = None
    if args.rpc:
        from ledger.anchoring import connect

        chain = functools.partial(connect, args.rpc)
    auditor = Auditor(
        source=source,
        log_key=_log_key(args.log_key),
        chain=chain,
        min_confirmations=args.confirmations,
        contract=args.contract,
        progress=_progress,
    )
    state = AuditState.load(args.state) if args.state else None
    while True:
        try:
            audit = auditor.run(state=state, full=args.full)
        except LedgerError as exc:
            if args.watch is None or isinstance(exc, FormatError):
                raise CommandError(f"audit could not run: {exc}", EXIT_UNUSABLE) from exc
            print(f"patio: audit could not run, retrying: {exc}", file=sys.stderr)
            time.sleep(args.watch)
            continue
        report = audit.report
        print(report.summary(), flush=True)
        try:
            if args.report:
                args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n")
            if report.ok and args.state and audit.state is not None:
                audit.state.save(args.state)
        except OSError as exc:
            raise CommandError(f"cannot write {exc.filename}: {exc.strerror}") from exc
        if not report.ok:
            return EXIT_FAILED
        state = audit.state
        if args.watch is None:
            return EXIT_OK
        time.sleep(args.watch)
