"""docs/http-registry.md: its shell examples run as written against a real gateway."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.gateway.server import Gateway

DOC = Path(__file__).parents[2] / "docs" / "http-registry.md"


def test_the_examples_run(gateway: Gateway) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        ran = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block],
            env={**gateway.env, "GATEWAY": gateway.url, "TOKEN": gateway.admin_token},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, block + ran.stdout + ran.stderr
        assert "problem+json" not in ran.stdout
    listed = subprocess.run(
        ["bash", "-c", blocks[-1]],
        env={**gateway.env, "GATEWAY": gateway.url, "TOKEN": gateway.admin_token},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert listed.stdout == (
        "boiler-1 yy/SZ4UtD/DT7Q7YKMPRsnVOkEbF/AaQ+ZcoI8IzG/M=\n"
        "heatpump-1 il7mnbrjEE+02OOdGSQIFhzerRxZ/ktRZHPxMfFm950=\n"
    )
    communities = gateway.admin.get("/v1/communities").json()["items"]
    assert [(c["id"], c["time_zone"]) for c in communities] == [
        ("hoa-1", "Europe/Skopje"),
        ("hoa-2", "Europe/Madrid"),
    ]
    [heatpump] = [
        d for d in gateway.admin.get("/v1/devices").json()["items"] if d["id"] == "heatpump-1"
    ]
    assert heatpump["profile"]["sensors"]["heatpump_w"]["role"] == "grid_import"
    assert heatpump["profile"]["sensors"]["heatpump_wh"]["role"] == "consumption"
