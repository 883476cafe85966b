"""`patio report verify` and `patio tariff set|show`: the energy package's commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ledger.cli import EXIT_OK
from ledger.errors import FormatError, LedgerError

KEY_VARIABLE = "PATIO_API_KEY"  # an audit-scope app key, when --key is not given


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `report` and `tariff`."""
    report = commands.add_parser("report", help="energy reports")
    actions = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="recompute a report from the log up to its checkpoint and compare"
    )
    verify.add_argument("report", type=Path, help="the report (JSON from GET /v1/reports)")
    verify.add_argument("--log-key", required=True, help="the log's note verifier key")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--gateway", help="the gateway's base URL")
    source.add_argument("--export", type=Path, help="a saved GET /v1/export body (offline)")
    verify.add_argument("--key", help=f"an audit-scope app key (default: ${KEY_VARIABLE})")
    verify.set_defaults(handler=run_verify)

    tariff = commands.add_parser("tariff", help="a community's tariff on a gateway")
    tariff_actions = tariff.add_subparsers(dest="tariff_command", required=True, metavar="ACTION")
    put = tariff_actions.add_parser("set", help="upload a tariff file (recorded on the log)")
    put.add_argument("community")
    put.add_argument("file", type=Path, help="a patio-tariff/v1 JSON file")
    put.add_argument(
        "--contracted", action="append", default=[], metavar="PERIOD=KW",
        help="contracted power of a power period, e.g. P1=4.6 (repeat per period)",
    )  # fmt: skip
    show = tariff_actions.add_parser("show", help="print a community's current tariff")
    show.add_argument("community")
    for action in (put, show):
        action.add_argument("--gateway", required=True, help="the gateway's base URL")
        action.add_argument("--token", help=f"an admin token or app key (default: ${KEY_VARIABLE})")
    put.set_defaults(handler=run_tariff_set)
    show.set_defaults(handler=run_tariff_show)


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the report equals its recomputation."""
    from contracts.energy.verify import verify

    print(
        verify(
            args.report,
            log_key=args.log_key,
            gateway=args.gateway,
            api_key=args.key or os.environ.get(KEY_VARIABLE),
            export=args.export,
        )
    )
    return EXIT_OK


def _client(args: argparse.Namespace) -> object:
    import httpx

    token = args.token or os.environ.get(KEY_VARIABLE)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=args.gateway, headers=headers, timeout=30)


def _answer(response: object) -> int:
    import httpx

    assert isinstance(response, httpx.Response)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        message = f"gateway refused ({response.status_code}): {detail}"
        if response.status_code in (401, 403, 404, 413, 422):
            raise FormatError(message)
        raise LedgerError(message)
    print(json.dumps(response.json(), indent=2, sort_keys=True))
    return EXIT_OK


def run_tariff_set(args: argparse.Namespace) -> int:
    """PUT /v1/communities/{id}/tariff with the file and the contracted power."""
    import httpx

    try:
        document = json.loads(args.file.read_bytes())
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read the tariff {args.file}: {exc}") from exc
    contracted = {}
    for item in args.contracted:
        period, sep, power = item.partition("=")
        if not sep or not period or not power:
            raise FormatError(f"--contracted takes PERIOD=KW, not {item!r}")
        contracted[period] = power
    client = _client(args)
    assert isinstance(client, httpx.Client)
    try:
        with client:
            response = client.put(
                f"/v1/communities/{args.community}/tariff",
                json={"tariff": document, "contracted_kW": contracted},
            )
    except httpx.HTTPError as exc:
        raise FormatError(f"cannot reach the gateway: {exc}") from exc
    return _answer(response)


def run_tariff_show(args: argparse.Namespace) -> int:
    """GET /v1/communities/{id}/tariff."""
    import httpx

    client = _client(args)
    assert isinstance(client, httpx.Client)
    try:
        with client:
            response = client.get(f"/v1/communities/{args.community}/tariff")
    except httpx.HTTPError as exc:
        raise FormatError(f"cannot reach the gateway: {exc}") from exc
    return _answer(response)
