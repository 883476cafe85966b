"""`patio edge`: run the agent, create its key, report and drain its outbox."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import EdgeConfig

# Every `patio` invocation imports this module: keep it to argparse. Handlers import
# the agent, and the agent imports hardware libraries only for the drivers it opens.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `edge` command group."""
    edge = commands.add_parser("edge", help="the device agent: sensors to signed minute entries")
    actions = edge.add_subparsers(dest="edge_command", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="sample, aggregate, sign and deliver until stopped")
    run.set_defaults(handler=run_agent)

    keygen = actions.add_parser("keygen", help="create the device key (mode 0600)")
    keygen.add_argument("--out", required=True, type=Path, help="key file to create")
    keygen.add_argument("--device-id", required=True, help="the device id it will sign as")
    keygen.set_defaults(handler=run_keygen)

    status = actions.add_parser("status", help="outbox, dead-letter and seq counts")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=run_status)

    flush = actions.add_parser("flush", help="deliver the outbox now, without sampling")
    flush.set_defaults(handler=run_flush)

    requeue = actions.add_parser("requeue", help="send dead letters again (after a fix)")
    requeue.set_defaults(handler=run_requeue)

    for action in (run, status, flush, requeue):
        action.add_argument("--config", required=True, type=Path, help="the agent's TOML file")
        action.add_argument(
            "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
        )


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Configuration problems exit 2; other agent errors exit 1; both as one line."""
    from edge.errors import ConfigError, EdgeError
    from ledger.cli import CommandError

    try:
        yield
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from exc
    except EdgeError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc


def _config(args: argparse.Namespace) -> EdgeConfig:
    import logging

    from edge.config import load_config

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    with _errors():
        return load_config(args.config)


def run_agent(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT."""
    import signal

    from edge.agent import Agent

    config = _config(args)
    with _errors():
        agent = Agent(config=config)

    def stop(signum: int, frame: object) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        agent.run()
    finally:
        agent.close()
    return EXIT_OK


def run_keygen(args: argparse.Namespace) -> int:
    """Create the key file; print the public key (the last stdout line) to register."""
    import sys

    from edge.config import DEVICE_ID
    from ledger.cli import CommandError
    from ledger.keys import NamedKey

    if not DEVICE_ID.match(args.device_id):
        raise CommandError(f"device id must match {DEVICE_ID.pattern}", EXIT_CONFIG)
    key = NamedKey.generate(args.device_id)
    key.save(args.out)
    print(
        f"register it: POST /v1/devices "
        f'{{"id": "{args.device_id}", "community_id": "<community>", '
        f'"public_key": "{key.public_key_b64}"}}',
        file=sys.stderr,
    )
    print(key.public_key_b64)
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    """Print the outbox counts; exit 1 when dead letters wait for attention."""
    import dataclasses
    import json

    from edge.agent import open_outbox
    from edge.aggregate import minute_start
    from edge.database import Store

    config = _config(args)
    if not config.database.exists():
        status_text = {"device_id": config.device_id, "database": str(config.database),
                       "note": "no database yet: the agent has not run"}  # fmt: skip
        print(json.dumps(status_text) if args.json else f"{config.device_id}: no database yet")
        return EXIT_OK
    with _errors():
        store = Store.open(config.database)
    try:
        status = open_outbox(config, store).status()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"device_id": config.device_id, **dataclasses.asdict(status)}))
    else:
        oldest = status.oldest_pending_ms
        pending = sum(status.pending.values())
        print(f"device: {config.device_id}")
        print(
            f"pending: {pending}" + (f" (oldest minute {minute_start(oldest)})" if oldest else "")
        )
        print(f"acknowledged (kept): {status.acked}")
        print(f"dead letters: {status.dead}")
        print(f"next seq: {status.next_seq}")
        for letter in status.dead_letters:
            print(f"  dead seq {letter['seq']} ({minute_start(letter['start_ms'])}): "
                  f"{letter['error']}")  # fmt: skip
    return EXIT_FAILED if status.dead else EXIT_OK


def run_flush(args: argparse.Namespace) -> int:
    """Deliver until the outbox is empty (exit 0) or delivery fails (exit 1)."""
    import time

    from edge.agent import AgentLock, load_device_key, make_transport, open_outbox
    from edge.database import Store

    config = _config(args)
    with _errors():
        load_device_key(config)
        lock = AgentLock(config)
        store = Store.open(config.database)
    transport = make_transport(config)
    try:
        outbox = open_outbox(config, store)
        delivered = dead = 0
        patience = time.monotonic() + max(config.mqtt.ack_timeout_s, 10.0)
        while outbox.pending(transport.contract, 1):
            report = outbox.flush(transport, time.time(), budget_s=60.0)
            delivered, dead = delivered + report.delivered, dead + report.dead
            if report.error is not None and transport.synchronous:
                print(f"delivered {delivered}, dead-lettered {dead}; stopped: {report.error}")
                return EXIT_FAILED
            if report.delivered or report.dead:
                patience = time.monotonic() + max(config.mqtt.ack_timeout_s, 10.0)
            elif time.monotonic() > patience:
                print(f"delivered {delivered}, dead-lettered {dead}; no acks arrive")
                return EXIT_FAILED
            if not transport.synchronous:
                time.sleep(0.05)
        print(f"delivered {delivered}, dead-lettered {dead}; outbox empty")
        return EXIT_FAILED if dead else EXIT_OK
    finally:
        transport.close()
        store.close()
        lock.release()


def run_requeue(args: argparse.Namespace) -> int:
    """Move every dead letter back into the outbox."""
    from edge.agent import AgentLock, open_outbox
    from edge.database import Store

    config = _config(args)
    with _errors():
        lock = AgentLock(config)
        store = Store.open(config.database)
    try:
        moved = open_outbox(config, store).requeue_dead()
    finally:
        store.close()
        lock.release()
    print(f"requeued {moved} dead letters")
    return EXIT_OK
