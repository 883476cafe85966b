"""`patio alerts ...`: a community's alert rules, settings, silences and alerts, over the
gateway's admin API (PATIO_GATEWAY_URL, PATIO_ADMIN_TOKEN)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ledger.cli import EXIT_OK, CommandError

DEFAULT_URL = "http://127.0.0.1:8000"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `patio alerts`."""
    alerts = commands.add_parser("alerts", help="alert rules, settings, silences and alerts")
    alerts.add_argument("--gateway", default=os.environ.get("PATIO_GATEWAY_URL", DEFAULT_URL))
    alerts.add_argument("--community", required=True)
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    actions.add_parser("rules", help="list the rules").set_defaults(
        handler=_call("GET", "alert-rules")
    )
    add = actions.add_parser("add-rule", help="add a rule from a JSON file ('-': stdin)")
    add.add_argument("file")
    add.set_defaults(handler=_call("POST", "alert-rules", body=True))
    remove = actions.add_parser("delete-rule", help="delete a rule")
    remove.add_argument("rule_id", type=int)
    remove.set_defaults(handler=_call("DELETE", "alert-rules/{rule_id}"))
    settings = actions.add_parser("set-settings", help="channels, repeat, quiet hours (JSON)")
    settings.add_argument("file")
    settings.set_defaults(handler=_call("PUT", "alert-settings", body=True))
    silence = actions.add_parser("silence", help="add a silence from a JSON file")
    silence.add_argument("file")
    silence.set_defaults(handler=_call("POST", "alert-silences", body=True))
    actions.add_parser("list", help="states, changes and deliveries").set_defaults(
        handler=_call("GET", "alerts")
    )
    ack = actions.add_parser("ack", help="acknowledge a firing alert")
    ack.add_argument("rule_id", type=int)
    ack.add_argument("subject")
    ack.add_argument("--by", required=True)
    ack.set_defaults(handler=_call("POST", "alerts/ack", ack=True))


def _call(method: str, path: str, *, body: bool = False, ack: bool = False) -> Any:
    def run(args: argparse.Namespace) -> int:
        import httpx

        token = os.environ.get("PATIO_ADMIN_TOKEN")
        if not token:
            raise CommandError("set PATIO_ADMIN_TOKEN to the admin token")
        payload: Any = None
        if body:
            text = sys.stdin.read() if args.file == "-" else _read(Path(args.file))
            try:
                payload = json.loads(text)
            except ValueError as exc:
                raise CommandError(f"{args.file}: not JSON: {exc}") from None
        if ack:
            payload = {"rule_id": args.rule_id, "subject": args.subject, "by": args.by}
        url = f"{args.gateway.rstrip('/')}/v1/communities/{args.community}/"
        url += path.format(rule_id=getattr(args, "rule_id", None))
        try:
            reply = httpx.request(
                method, url, json=payload, timeout=30, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise CommandError(f"{args.gateway}: {exc}") from None
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail")
            except ValueError:
                detail = reply.text
            raise CommandError(f"{reply.status_code}: {detail}", code=1)
        if reply.content:
            print(json.dumps(reply.json(), indent=2))
        return EXIT_OK

    return run


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
