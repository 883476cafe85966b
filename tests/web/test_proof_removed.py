"""The browser verifier on a bundle whose payload was erased (docs/retention.md): valid as far
as it goes, the entry-hash and signature steps shown as "payload removed"."""

from __future__ import annotations

import json

from tests.gateway.server import Gateway
from tests.web.conftest import Tab
from tests.web.test_browser import submit


def test_a_bundle_with_its_payload_removed_verifies_as_far_as_it_goes(
    tab: Tab, web_gateway: Gateway
) -> None:
    gateway = web_gateway
    key = gateway.device("erased-meter", "erased-hoa")
    tag = submit(gateway, key, "erased-meter", 1, ago=5)
    gateway.seal()
    reply = gateway.admin.post("/v1/devices/erased-meter/erase", json={"reason": "moved out"})
    assert reply.status_code == 200, reply.text
    erasure = reply.json()["log_tag_id"]
    gateway.seal()

    tab.sign_in(gateway.admin_token)
    page = tab.open(f"/proof?id={tag}")
    verdict = page.wait_for_selector("#verdict")
    assert verdict.inner_text() == "VALID"
    steps = dict(
        page.eval_on_selector_all(
            "#steps li", "els => els.map(e => [e.dataset.check, e.dataset.status])"
        )
    )
    assert steps["entry hash"] == steps["device signature"] == "removed"
    assert all(
        steps[check] == "ok"
        for check in ("format", "log key", "checkpoint signature", "inclusion", "log tag")
    )
    assert "payload removed" in page.inner_text("#steps li[data-check='device signature']")
    removed = page.inner_text("#removed")
    assert "erasure" in removed and erasure in removed
    assert page.query_selector(".entry") is None  # no payload to show
    tab.screenshot("proof-payload-removed")

    # A dropped file claiming a payload beside `redacted` is rejected as malformed.
    with gateway.client(gateway.app_key("audit")) as client:
        bundle = client.get(f"/v1/entries/{tag}/proof").json()
    bundle["entry"] = {"payload": {"device_id": "erased-meter"}, "sig": "x"}
    page.set_input_files(
        "#bundle-file",
        files=[
            {
                "name": "bundle.json",
                "mimeType": "application/json",
                "buffer": json.dumps(bundle).encode(),
            }
        ],
    )
    page.wait_for_selector("#verdict[data-failed='format']")
