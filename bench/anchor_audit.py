"""Anchoring and audit benchmarks: gas per anchor, and full-audit throughput.

Run: .venv/bin/python -m bench.anchor_audit [--entries 100000] [--checkpoint-every 10000]
Gas comes from anvil (node_modules) when it is installed, else from eth-tester in process;
throughput from a local gateway (`patio gateway serve` in a subprocess) when the gateway
package is present, else from the database directly (`patio audit --local`). Every figure
says which. Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.anchoring import Anchorer, deploy_contract
from ledger.audit import Auditor, LocalSource
from ledger.encoding import canonical_json
from ledger.keys import NamedKey
from ledger.log import Log, Submission, open_data_dir

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # dev account 0
TESTER_KEY = "0x" + "00" * 31 + "01"  # eth-tester's first funded account
ORIGIN = "bench.patio.local/log"
DEVICE = "bench-meter-01"


def minute(seq: int) -> dict[str, Any]:
    """A realistic energy_minute payload (8 readings), in the past."""
    readings: dict[str, Any] = {
        f"t{i}": {"unit": "Cel", "n": 60, "missing": 0, "avg": 20 + i + seq % 7 / 10,
                  "min": 19.5 + i, "max": 21.25 + i}
        for i in range(6)
    }  # fmt: skip
    readings["meter"] = {"unit": "Wh", "sum": 12.5 + seq % 11}
    readings["fan"] = {"unit": "bool", "any": True, "on_fraction": 0.25}
    day, minute_of_day = divmod(seq, 1440)
    hour, minute_of_hour = divmod(minute_of_day, 60)
    date = f"2025-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}"
    return {
        "device_id": DEVICE,
        "seq": seq,
        "start": f"{date}T{hour:02d}:{minute_of_hour:02d}:00Z",
        "period_s": 60,
        "readings": readings,
    }


def submissions(key: NamedKey, first: int, count: int) -> list[Submission]:
    """Signed submissions as the energy_minute contract hands them to the log."""
    out = []
    for seq in range(first, first + count):
        payload = minute(seq)
        out.append(
            Submission(
                contract="energy_minute@1",
                payload=payload,
                sig=key.sign_payload(payload),
                device_id=DEVICE,
                seq=seq,
                payload_jcs=canonical_json(payload),
            )
        )
    return out


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, seconds: float = 30) -> None:
    """Until `url` answers."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- gas --------------------------------------------------------------------------------


@contextmanager
def chain() -> Iterator[tuple[Web3, LocalAccount, str]]:
    """anvil if installed, else eth-tester; with a funded account and a description."""
    binary = str(ANVIL) if ANVIL.exists() else shutil.which("anvil")
    if binary is None:
        from web3.providers.eth_tester import EthereumTesterProvider

        yield Web3(EthereumTesterProvider()), Account.from_key(TESTER_KEY), "eth-tester (py-evm)"
        return
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--silent"], stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        w3 = Web3(Web3.HTTPProvider(url))
        while not w3.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError("anvil did not start")
            time.sleep(0.05)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        yield w3, Account.from_key(ANVIL_KEY), f"anvil ({version.splitlines()[0]})"
    finally:
        process.terminate()
        process.wait(timeout=10)


def gas(batches: list[int]) -> None:
    """Gas per anchor for checkpoints of growing batch sizes, contract and calldata modes."""
    with chain() as (w3, account, name), tempfile.TemporaryDirectory() as tmp:
        key, device = NamedKey.generate(ORIGIN), NamedKey.generate(DEVICE)
        contract = deploy_contract(w3, account, origin=ORIGIN)
        for mode, address in (("contract", contract), ("calldata", None)):
            log = Log.open(url=f"sqlite:///{tmp}/{mode}.sqlite3", signer=key, origin=ORIGIN)
            anchorer = Anchorer(log=log, w3=w3, account=account, contract=address)
            used = []
            for batch in batches:
                log.append(submissions(device, log.size(), batch))
                log.seal()
                result = anchorer.run_once(wait_seconds=30)
                assert result.anchor is not None and result.action == "confirmed"
                receipt = w3.eth.get_transaction_receipt(result.anchor.tx_hash)
                used.append(receipt["gasUsed"])
            sizes = ", ".join(f"{b:,} entries: {g:,}" for b, g in zip(batches, used, strict=True))
            print(f"gas per anchor ({mode} mode, {name}): {sizes}; max {max(used):,}")


# -- audit throughput -------------------------------------------------------------------


def build(data_dir: Path, entries: int, every: int) -> tuple[Log, NamedKey]:
    """A log of `entries` signed minutes, sealed every `every` entries."""
    log = open_data_dir(data_dir, origin=ORIGIN)
    device = NamedKey.generate(DEVICE)
    started = time.monotonic()
    for first in range(0, entries, 1000):
        log.append(submissions(device, first, min(1000, entries - first)))
        if (first + 1000) % every == 0 or first + 1000 >= entries:
            log.seal()
    print(
        f"built {entries:,} signed entries, a checkpoint every {every:,} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return log, device


@contextmanager
def gateway(data_dir: Path) -> Iterator[str]:
    """`patio gateway serve` on the data directory, in its own process."""
    port = free_port()
    env = dict(os.environ, PATIO_DATA_DIR=str(data_dir), PATIO_SEAL_INTERVAL="86400")
    patio = str(Path(sys.executable).with_name("patio"))
    process = subprocess.Popen(
        [patio, "gateway", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v1/log-key")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def audit_key(data_dir: Path, url: str, device: NamedKey) -> str:
    """Register the device (so the export carries its key) and make an audit app key."""
    env = dict(os.environ, PATIO_DATA_DIR=str(data_dir))
    patio = str(Path(sys.executable).with_name("patio"))
    token = subprocess.run(
        [patio, "admin", "create-token"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=admin, timeout=30) as client:
        client.post("/v1/communities", json={"id": "bench", "name": "Bench"}).raise_for_status()
        client.post(
            "/v1/devices",
            json={"id": DEVICE, "community_id": "bench", "public_key": device.public_key_b64},
        ).raise_for_status()
        client.post("/v1/checkpoints").raise_for_status()  # seal the registry entries too
        answer = client.post("/v1/apps", json={"name": "bench", "scopes": ["audit"]})
        answer.raise_for_status()
        api_key: str = answer.json()["api_key"]
        return api_key


def throughput(entries: int, every: int, workers: int | None) -> None:
    """Full-audit entries/s from a local gateway (if present) and from the database."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "var"
        log, device = build(data_dir, entries, every)
        assert log.signer is not None
        log_key = log.signer.verifier_key
        if importlib.util.find_spec("gateway") is None:
            print("no gateway package: auditing the database directly (--local) only")
        else:
            from ledger.audit_gateway import GatewaySource

            with gateway(data_dir) as url:
                api_key = audit_key(data_dir, url, device)
                source = GatewaySource(url, api_key=api_key)
                report = (
                    Auditor(source=source, log_key=log_key, workers=workers).run(full=True).report
                )
                print_audit(f"full audit from a local gateway ({url})", report)
        source_local = LocalSource(log, device_keys={DEVICE: [device.public_key_b64]})
        report = (
            Auditor(source=source_local, log_key=log_key, workers=workers).run(full=True).report
        )
        print_audit("full audit from the database (--local)", report)


def print_audit(what: str, report: Any) -> None:
    """One line per audit."""
    assert report.ok, report.summary()
    rate = report.entries_checked / report.seconds
    print(
        f"{what}: {report.entries_checked:,} entries, {report.device_signatures_checked:,} "
        f"device signatures, {report.checkpoints_checked:,} checkpoints in "
        f"{report.seconds:.2f} s = {rate:,.0f} entries/s ({os.cpu_count()} CPU(s))"
    )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--workers", type=int, help="audit worker processes (default: CPUs)")
    parser.add_argument("--gas-batches", default="1,10,100,1000,10000")
    parser.add_argument("--skip-gas", action="store_true")
    parser.add_argument("--skip-audit", action="store_true")
    args = parser.parse_args()
    if not args.skip_gas:
        gas([int(b) for b in args.gas_batches.split(",")])
    if not args.skip_audit:
        throughput(args.entries, args.checkpoint_every, args.workers)


if __name__ == "__main__":
    main()
