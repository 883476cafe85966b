"""`patio gateway serve` and `patio admin create-token`."""

from __future__ import annotations

import argparse

from ledger.cli import EXIT_OK, CommandError


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
