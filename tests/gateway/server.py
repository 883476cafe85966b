"""A real gateway on loopback: `patio gateway serve` in a subprocess, for tests and benches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ledger.keys import NamedKey
from tests.wait import wait_until


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def patio(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `patio` command."""
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@dataclass
class Gateway:
    """A running gateway and an admin client for it."""

    url: str
    data_dir: Path
    env: dict[str, str]
    admin_token: str
    process: subprocess.Popen[bytes]
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30
        )

    def client(self, token: str | None = None) -> httpx.Client:
        """A client, with a bearer token if given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def community(self, community_id: str) -> None:
        """Create a community (once)."""
        reply = self.admin.post("/v1/communities", json={"id": community_id, "name": community_id})
        assert reply.status_code in (201, 409), reply.text

    def device(self, device_id: str, community_id: str) -> NamedKey:
        """Register a fresh device key in a community."""
        self.community(community_id)
        key = NamedKey.generate(device_id)
        reply = self.admin.post(
            "/v1/devices",
            json={"id": device_id, "community_id": community_id, "public_key": key.public_key_b64},
        )
        assert reply.status_code == 201, reply.text
        return key

    def app_key(self, *scopes: str) -> str:
        """Create an app key with scopes."""
        reply = self.admin.post("/v1/apps", json={"name": "test-app", "scopes": list(scopes)})
        assert reply.status_code == 201, reply.text
        key: str = reply.json()["api_key"]
        return key

    def seal(self) -> dict[str, Any]:
        """Seal now."""
        reply = self.admin.post("/v1/checkpoints")
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def export(self) -> list[dict[str, Any]]:
        """Every entry of the log in index order (GET /v1/export, all pages)."""
        found: list[dict[str, Any]] = []
        start: int | None = 0
        while start is not None:
            reply = self.admin.get("/v1/export", params={"start": start, "limit": 5000})
            assert reply.status_code == 200, reply.text
            found += reply.json()["entries"]
            start = reply.json()["next"]
        return found

    def writer_pid(self) -> int:
        """The gateway's one child process: its writer."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def stop(self) -> None:
        """Stop the server."""
        self.admin.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_gateway(
    data_dir: Path,
    *,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    log_level: str = "warning",
) -> Gateway:
    """Start `patio gateway serve` and wait until it is ready."""
    env = {
        **os.environ,
        "PATIO_DATA_DIR": str(data_dir),
        "PATIO_SEAL_INTERVAL": "3600",
        **(extra_env or {}),
    }
    if database_url:
        env["PATIO_DATABASE_URL"] = database_url
    token = patio("admin", "create-token", env=env).stdout.strip().splitlines()[-1]
    port = port or free_port()
    log = open(data_dir / f"gateway-{port}.log", "wb")  # noqa: SIM115 -- lives as long as the server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger.cli",
            "gateway",
            "serve",
            "--port",
            str(port),
            "--log-level",
            log_level,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {(data_dir / f'gateway-{port}.log').read_text()}")
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, "the gateway's /readyz", interval=0.1)
    except BaseException:
        process.kill()
        raise
    return Gateway(url=url, data_dir=data_dir, env=env, admin_token=token, process=process)
