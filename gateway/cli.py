"""`patio gateway serve`, `patio admin create-token`, `patio reports rebuild`,
`patio retention apply|erase` and `patio demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ledger.cli import EXIT_FAILED, EXIT_OK, CommandError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the gateway's subcommands."""
    gateway = commands.add_parser("gateway", help="run the HTTP gateway")
    actions = gateway.add_subparsers(dest="gateway_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve HTTP with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", help="overrides PATIO_LOG_LEVEL (default info)")
    serve.set_defaults(handler=run_serve)

    admin = commands.add_parser("admin", help="administer the gateway's database")
    admin_actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    token = admin_actions.add_parser("create-token", help="print a new admin token (last line)")
    token.set_defaults(handler=run_create_token)

    demo = commands.add_parser(
        "demo", help="the gateway and a simulated community with 30 days of history (make run)"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    demo.set_defaults(handler=run_demo)

    reports = commands.add_parser("reports", help="the gateway's energy rollups")
    report_actions = reports.add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    rebuild = report_actions.add_parser("rebuild", help="recompute the hourly rollups from the log")
    rebuild.set_defaults(handler=run_reports_rebuild)

    retention = commands.add_parser(
        "retention", help="drop entry payloads past each community's policy (docs/retention.md)"
    )
    steps = retention.add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    apply = steps.add_parser("apply", help="apply every community's policy now (for cron)")
    apply.set_defaults(handler=run_retention_apply)
    erase = steps.add_parser("erase", help="drop every payload of one device, on the record")
    erase.add_argument("device_id")
    erase.add_argument("--reason", required=True, help="recorded in the registry entry")
    erase.set_defaults(handler=run_retention_erase)


SHUTDOWN_GRACE = 5  # seconds for requests under way to finish once asked to stop


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    import uvicorn

    from gateway.config import LOG_LEVELS, Settings
    from gateway.logs import log_config

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    level = (args.log_level or settings.log_level).lower()
    if level not in LOG_LEVELS:
        raise CommandError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=level,
        log_config=log_config(settings.log_format, level),
        access_log=False,
        # Open event streams would hold a graceful shutdown forever: they are cut after
        # this, and their clients resume with Last-Event-ID.
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    return EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until interrupted (gateway/demo.py)."""
    from gateway import demo

    return demo.run(args.data_dir, args.host, args.port)


def run_create_token(args: argparse.Namespace) -> int:
    """Create an admin token, store its hash, print it once."""
    from datetime import UTC, datetime

    from gateway.auth import ADMIN_PREFIX, new_secret, secret_hash
    from gateway.config import Settings
    from gateway.store import admin_tokens, upgrade
    from ledger.encoding import rfc3339_utc
    from ledger.log import open_data_dir

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    log = open_data_dir(
        settings.data_dir, database_url=settings.database_url, origin=settings.origin
    )
    upgrade(log.engine)
    token = new_secret(ADMIN_PREFIX)
    with log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        conn.execute(
            admin_tokens.insert().values(
                token_hash=secret_hash(token), created_at=rfc3339_utc(datetime.now(UTC))
            )
        )
    print("admin token (shown once; store it safely):")
    print(token)
    return EXIT_OK


def run_reports_rebuild(args: argparse.Namespace) -> int:
    """Recompute every rollup from the log in one transaction and say what was done."""
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.config import Settings
    from gateway.directory import Directory
    from gateway.rollups import Rollups
    from gateway.store import upgrade
    from ledger.log import open_data_dir

    try:
        settings = Settings.from_env()
        log = open_data_dir(
            settings.data_dir, database_url=settings.database_url, origin=settings.origin
        )
        upgrade(log.engine)
        # Rollups only look devices up (their community); no registry signature is checked.
        rebuilt = Rollups(log.engine, Directory(log.engine, registry_key="")).rebuild()
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise CommandError(f"database: {str(cause).splitlines()[0]}") from exc
    print(
        f"rebuilt {rebuilt.rows} hourly rollups from {rebuilt.minutes} energy_minute entries "
        f"({rebuilt.entries} log entries read, through index {rebuilt.through_idx})"
    )
    return EXIT_OK


def _gateway_log() -> Any:
    from gateway.config import Settings
    from gateway.store import upgrade
    from ledger.log import open_data_dir

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    log = open_data_dir(
        settings.data_dir, database_url=settings.database_url, origin=settings.origin
    )
    upgrade(log.engine)
    return settings, log


def run_retention_apply(args: argparse.Namespace) -> int:
    """Drop what every policy says is past keeping; print how many per community."""
    from gateway import retention

    _, log = _gateway_log()
    for community, count in sorted(retention.apply(log).items()):
        print(f"{community}: {count} payload(s) dropped")
    return EXIT_OK


def run_retention_erase(args: argparse.Namespace) -> int:
    """Erase a device's payloads; print the registry entry that records it."""
    from gateway import retention
    from gateway.app import load_registry_key

    settings, log = _gateway_log()
    try:
        erased = retention.erase_device(
            log,
            signer=load_registry_key(settings),
            device_id=args.device_id,
            reason=args.reason,
        )
    except retention.RetentionError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    print(
        f"{erased.dropped} payload(s) of {erased.device_id} dropped (entries "
        f"{erased.first_index}..{erased.last_index}) and {erased.evidence_dropped} refused "
        f"resubmission(s) kept as evidence, recorded as {erased.log_tag_id}"
    )
    return EXIT_OK
