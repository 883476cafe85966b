"""The dashboard in a real browser (headless chromium) against a real gateway process, with
real signed submissions: pages, live overview, proof checks, scopes, admin, phone, keyboard."""

from __future__ import annotations

import copy
import json
import math
import random
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ledger import merkle
from ledger.encoding import canonical_json, parse_json
from ledger.errors import FormatError, VerificationError
from ledger.keys import NamedKey
from ledger.verify import verify_bundle
from tests.docs.fenced import REPO, session
from tests.gateway.server import Gateway, start_gateway
from tests.web.conftest import PHONE, Tab, require_chromium

PAGES = ("/", "/proof", "/reports", "/timeline", "/admin", "/signin")


# What submit()'s readings measure, declared as the registry asks (nothing is guessed).
PROFILE = {
    "sensors": {
        "solar_pv": {"role": "generation", "unit": "W"},
        "load": {"role": "consumption", "unit": "W"},
        "pump": {"role": "switch", "unit": "bool"},
    }
}


def declare(gateway: Gateway, device: str) -> None:
    """Declare PROFILE for a device."""
    gateway.admin.post(
        f"/v1/devices/{device}/profile", json={"profile": PROFILE}
    ).raise_for_status()


def submit(gateway: Gateway, key: NamedKey, device: str, seq: int, *, ago: int = 1) -> str:
    """A signed minute aggregate (1.5 kW solar, 0.6 kW load) through POST /v1/entries."""
    start = (datetime.now(UTC) - timedelta(minutes=ago)).replace(second=0, microsecond=0)
    payload = {
        "device_id": device,
        "seq": seq,
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period_s": 60,
        "readings": {
            "solar_pv": {
                "unit": "W",
                "n": 12,
                "missing": 0,
                "avg": 1500.0,
                "min": 1400.0,
                "max": 1600.0,
            },
            "load": {"unit": "W", "n": 12, "missing": 0, "avg": 600.25, "min": 400.0, "max": 900.0},
            "pump": {"unit": "bool", "any": True, "on_fraction": 0.25},
        },
    }
    with gateway.client() as client:
        reply = client.post(
            "/v1/entries",
            json={
                "contract": "energy_minute",
                "envelopes": [{"payload": payload, "sig": key.sign_payload(payload)}],
            },
        )
    assert reply.status_code == 200, reply.text
    [result] = reply.json()["results"]
    assert result["status"] == "accepted", result
    tag: str = result["log_tag_id"]
    return tag


def log_key(gateway: Gateway) -> str:
    with gateway.client() as client:
        return client.get("/v1/log-key").text.strip()


def python_verdict(bundle: dict[str, Any] | str, pinned: str) -> str | None:
    """The failed check as ledger/verify.py names it (None when valid)."""
    try:
        data = parse_json(bundle, what="bundle") if isinstance(bundle, str) else bundle
        verify_bundle(data, log_key=pinned)
    except VerificationError as exc:
        return exc.check
    except (FormatError, ValueError):
        return "format"
    return None


def browser_verdict(
    tab: Tab, bundle: dict[str, Any] | str, pinned: str, *, noble: bool
) -> dict[str, Any]:
    """Run static/verify.js on a bundle's JSON text in the page."""
    text = bundle if isinstance(bundle, str) else json.dumps(bundle)
    result: dict[str, Any] = tab.page.evaluate(
        """async ([text, pinned, noble]) => {
            const crypto = await import("/static/crypto.js");
            crypto.useNoble(noble);
            const { verifyBundle } = await import("/static/verify.js");
            const r = await verifyBundle(text, { pinnedLogKey: pinned });
            const backends = await crypto.backends();
            crypto.useNoble(false);
            return { valid: r.valid, failed: r.failed, message: r.message, backends,
                     steps: r.steps.map((s) => [s.check, s.status]) };
        }""",
        [text, pinned, noble],
    )
    return result


@pytest.fixture(scope="module")
def proved(web_gateway: Gateway) -> dict[str, Any]:
    """A real bundle from a log of several entries, two checkpoints apart, with an anchor
    built from the older checkpoint (its consistency proof from the gateway)."""
    gateway = web_gateway
    key = gateway.device("proof-meter", "proof-hoa")
    tags = [submit(gateway, key, "proof-meter", seq, ago=30 + seq) for seq in range(1, 4)]
    older = gateway.seal()
    tags += [submit(gateway, key, "proof-meter", seq, ago=30 + seq) for seq in range(4, 7)]
    newer = gateway.seal()
    with gateway.client(gateway.app_key("audit")) as client:
        bundle = client.get(f"/v1/entries/{tags[1]}/proof").json()
        consistency = client.get(
            f"/v1/proofs/consistency?first={older['tree_size']}&second={newer['tree_size']}"
        ).json()["hashes"]
    assert bundle["inclusion"]["tree_size"] == newer["tree_size"]
    bundle["anchors"] = [
        {
            "chain_id": 31337,
            "tx_hash": "0x" + "ab" * 32,
            "block_number": 7,
            "contract": None,
            "tree_size": older["tree_size"],
            "root": older["root_hash"],
            "consistency": consistency,
        }
    ]
    return {"bundle": bundle, "tags": tags, "key": log_key(gateway)}


def tampered(proved: dict[str, Any]) -> dict[str, tuple[dict[str, Any] | str, str]]:
    """One broken bundle per check: (bundle or its text, pinned log key)."""
    good, pinned = proved["bundle"], proved["key"]

    def change(edit: Any) -> dict[str, Any]:
        bundle = copy.deepcopy(good)
        edit(bundle)
        return bundle

    body, _, signatures = good["checkpoint"].rpartition("\n\n")
    lines = body.split("\n")
    other_root = "A" * 43 + "="
    other_tag = next(t for t in proved["tags"] if t != good["log_tag_id"])
    text = json.dumps(good)
    return {
        "format": (text.replace('"format": ', '"leaf_index": 0, "format": ', 1), pinned),
        "log key": (good, NamedKey.generate("patio-ledger.local/log").verifier_key),
        "checkpoint signature": (
            change(
                lambda b: b.update(
                    checkpoint="\n".join([*lines[:2], other_root]) + "\n\n" + signatures
                )
            ),
            pinned,
        ),
        "entry hash": (
            change(lambda b: b["entry"]["payload"]["readings"]["load"].update(avg=600.5)),
            pinned,
        ),
        "inclusion": (change(lambda b: b["inclusion"]["hashes"].__setitem__(0, "00" * 32)), pinned),
        "log tag": (change(lambda b: b.update(log_tag_id=other_tag)), pinned),
        "device signature": (
            change(lambda b: b.update(device_key=NamedKey.generate("x").public_key_b64)),
            pinned,
        ),
        "anchor": (change(lambda b: b["anchors"][0].update(root="11" * 32)), pinned),
    }


def test_every_page_loads_without_console_errors(tab: Tab, web_gateway: Gateway) -> None:
    key = web_gateway.device("pages-meter", "pages-hoa")
    submit(web_gateway, key, "pages-meter", 1)
    web_gateway.seal()
    for path in PAGES:
        page = tab.open(path)
        assert page.title().endswith("Patio")
    tab.sign_in(web_gateway.admin_token)
    for path in PAGES:
        tab.open(path + ("?community=pages-hoa" if path == "/" else ""))
        tab.screenshot("desktop-" + (path.strip("/") or "overview"))
    page = tab.page
    page.goto(web_gateway.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "Patio ledger gateway" in page.inner_text(".swagger-ui .info .title")
    tab.screenshot("desktop-docs")


def test_overview_shows_a_new_submission_live(tab: Tab, web_gateway: Gateway) -> None:
    key = web_gateway.device("live-meter", "live-hoa")
    declare(web_gateway, "live-meter")
    first = submit(web_gateway, key, "live-meter", 1, ago=3)
    tab.sign_in(web_gateway.admin_token)
    page = tab.open("/?community=live-hoa")
    page.wait_for_selector(f".card[data-log-tag='{first}']")
    assert page.inner_text("#generation") == "1.50 kW"
    assert page.inner_text("#consumption") == "0.60 kW"
    assert page.inner_text("#net") == "+0.90 kW"
    assert page.get_attribute(".tile.net", "data-sign") == "surplus"
    page.wait_for_selector("#live[data-state='live']")
    second = submit(web_gateway, key, "live-meter", 2, ago=1)
    # Arrives over the SSE stream: no reload, no polling of the page.
    card = page.wait_for_selector(f".card[data-log-tag='{second}']", timeout=10_000)
    assert "stale" not in (card.get_attribute("class") or "")
    assert "Reading of" in card.inner_text()
    # No grid meter: the day report has no self-sufficiency, and the page says why.
    assert page.inner_text("#sufficiency") == "—"
    tab.screenshot("overview-live")


def submit_watts(
    gateway: Gateway, key: NamedKey, seq: int, ago: int, sensor: str, watts: float
) -> None:
    """One signed minute of one W reading, `ago` minutes ago."""
    start = (datetime.now(UTC) - timedelta(minutes=ago)).replace(second=0, microsecond=0)
    reading = {"unit": "W", "n": 3, "missing": 0, "avg": watts, "min": watts, "max": watts}
    payload = {"device_id": key.name, "seq": seq, "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "period_s": 60, "readings": {sensor: reading}}  # fmt: skip
    with gateway.client() as client:
        reply = client.post("/v1/entries", json={
            "contract": "energy_minute",
            "envelopes": [{"payload": payload, "sig": key.sign_payload(payload)}],
        })  # fmt: skip
    assert reply.json()["results"][0]["status"] == "accepted", reply.text


def test_the_overviews_self_sufficiency_is_the_day_reports(tab: Tab, web_gateway: Gateway) -> None:
    """Today's self-sufficiency on the overview is the day report's (the total row of its
    CSV), and follows a new checkpoint."""
    community = "sufficient-hoa"
    flat, meter = (web_gateway.device(d, community) for d in ("suff-flat", "suff-meter"))
    for key, sensor, role in ((flat, "load", "consumption"), (meter, "grid_in", "grid_import")):
        profile = {"sensors": {sensor: {"role": role, "unit": "W"}}}
        web_gateway.admin.post(f"/v1/devices/{key.name}/profile", json={"profile": profile})
    for seq, ago in enumerate((3, 2), start=1):
        submit_watts(web_gateway, flat, seq, ago, "load", 600.0)
        submit_watts(web_gateway, meter, seq, ago, "grid_in", 240.0)
    web_gateway.seal()
    communities = web_gateway.admin.get("/v1/communities", params={"limit": 1000}).json()["items"]
    [zone] = [c["time_zone"] for c in communities if c["id"] == community]

    def reported() -> str:
        today = datetime.now(ZoneInfo(zone)).date().isoformat()
        params = {"community": community, "period": "day", "date": today}
        reply = web_gateway.admin.get("/v1/reports", params=params)
        assert reply.status_code == 200, reply.text
        ratio: str = reply.json()["total"]["self_sufficiency"]["ratio"]
        return ratio

    tab.sign_in(web_gateway.app_key(f"read:{community}"))
    page = tab.open(f"/?community={community}")
    page.wait_for_selector("#sufficiency[data-value]")
    assert page.get_attribute("#sufficiency", "data-value") == reported() == "0.6000"
    assert page.inner_text("#sufficiency") == "60 %"
    assert page.inner_text("#sufficiency-detail") == "0 kWh generated, 0.02 kWh consumed"
    page.wait_for_selector("#live[data-state='live']")
    # A minute drawn wholly from the grid, sealed: the page asks for the report again (at
    # most every 30 s) and shows what it says now.
    submit_watts(web_gateway, flat, 3, 1, "load", 600.0)
    submit_watts(web_gateway, meter, 3, 1, "grid_in", 600.0)
    web_gateway.seal()
    page.wait_for_selector("#sufficiency[data-value='0.4000']", timeout=60_000)
    assert reported() == "0.4000" and page.inner_text("#sufficiency") == "40 %"
    assert tab.unexpected_errors == [], tab.errors


def test_a_silent_device_is_stale(tab: Tab, web_gateway: Gateway) -> None:
    key = web_gateway.device("quiet-meter", "quiet-hoa")
    tag = submit(web_gateway, key, "quiet-meter", 1, ago=10)
    tab.sign_in(web_gateway.admin_token)
    page = tab.open("/?community=quiet-hoa")
    card = page.wait_for_selector(f".card.stale[data-log-tag='{tag}']")
    assert "stale" in card.inner_text()


@pytest.mark.parametrize("noble", [False, True], ids=["webcrypto", "noble"])
def test_the_verifier_agrees_with_the_python_one(
    tab: Tab, proved: dict[str, Any], noble: bool
) -> None:
    tab.open("/proof")
    good = browser_verdict(tab, proved["bundle"], proved["key"], noble=noble)
    assert good["valid"] and good["failed"] is None, good
    assert python_verdict(proved["bundle"], proved["key"]) is None
    assert ("noble" in good["backends"]["ed25519"]) is noble
    for check, (bundle, pinned) in tampered(proved).items():
        verdict = browser_verdict(tab, bundle, pinned, noble=noble)
        assert verdict["failed"] == check, (check, verdict)
        assert python_verdict(bundle, pinned) == check
        assert not verdict["valid"]
        assert [c for c, status in verdict["steps"] if status == "failed"] == [check]


def test_a_looked_up_bundle_verifies_and_a_tampered_file_is_rejected(
    tab: Tab, web_gateway: Gateway, proved: dict[str, Any]
) -> None:
    tab.sign_in(web_gateway.admin_token)
    page = tab.open(f"/proof?id={proved['tags'][0]}")
    verdict = page.wait_for_selector("#verdict")
    assert verdict.inner_text() == "VALID"
    steps = page.eval_on_selector_all(
        "#steps li", "els => els.map(e => [e.dataset.check, e.dataset.status])"
    )
    assert [c for c, _ in steps][:7] == [
        "format",
        "log key",
        "checkpoint signature",
        "entry hash",
        "inclusion",
        "log tag",
        "device signature",
    ]
    assert all(status == "ok" for _, status in steps)
    assert "proof-meter" in page.inner_text(".entry")
    tab.screenshot("proof-valid")
    for check in ("entry hash", "device signature", "anchor"):
        bundle, _ = tampered(proved)[check]
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
        verdict = page.wait_for_selector(f"#verdict[data-failed='{check}']")
        assert verdict.inner_text() == f"INVALID: the {check} check failed"
        assert page.get_attribute(f"#steps li[data-check='{check}']", "data-status") == "failed"
        tab.screenshot(f"proof-invalid-{check.replace(' ', '-')}")
        page.set_input_files("#bundle-file", files=[])


def test_a_changed_log_key_is_a_loud_warning(
    browser: Any, web_gateway: Gateway, proved: dict[str, Any]
) -> None:
    context = browser.new_context()
    other = NamedKey.generate("patio-ledger.local/log").verifier_key
    pinned = json.dumps({"key": other, "at": "2026-01-01"})
    context.add_init_script(f"localStorage.setItem('patio.logKey', {json.dumps(pinned)})")
    tab = Tab(context.new_page(), web_gateway.url)
    try:
        page = tab.open("/proof")
        banner = page.wait_for_selector("#logkey-warning[role=alert]:not([hidden])")
        assert "different log key" in banner.inner_text() and other in banner.inner_text()
        page.set_input_files(
            "#bundle-file",
            files=[
                {
                    "name": "b.json",
                    "mimeType": "application/json",
                    "buffer": json.dumps(proved["bundle"]).encode(),
                }
            ],
        )
        page.wait_for_selector("#verdict[data-failed='log key']")
        tab.screenshot("log-key-changed")
        assert tab.errors == []
    finally:
        context.close()


def test_a_scoped_key_never_sees_another_community(tab: Tab, web_gateway: Gateway) -> None:
    key_a = web_gateway.device("scope-a-meter", "scope-a")
    key_b = web_gateway.device("scope-b-meter", "scope-b")
    submit(web_gateway, key_a, "scope-a-meter", 1, ago=2)
    tag_b = submit(web_gateway, key_b, "scope-b-meter", 1, ago=2)
    web_gateway.seal()
    tab.sign_in(web_gateway.app_key("read:scope-a"))
    seen: list[str] = []
    tab.page.on("response", lambda r: seen.append(r.url))
    page = tab.open("/?community=scope-b")
    page.wait_for_selector(".card[data-device='scope-a-meter']")
    assert page.eval_on_selector_all("#community option", "os => os.map(o => o.value)") == [
        "scope-a"
    ]
    page.wait_for_selector("#live[data-state='live']")
    fresh_b = submit(web_gateway, key_b, "scope-b-meter", 2, ago=1)
    fresh_a = submit(web_gateway, key_a, "scope-a-meter", 2, ago=1)
    page.wait_for_selector(f".card[data-log-tag='{fresh_a}']")
    content = page.content()
    assert "scope-b" not in content and fresh_b not in content and tag_b not in content
    assert not [url for url in seen if "scope-b" in url and "/v1/" in url]
    for path in ("/timeline", "/admin"):
        assert "scope-b" not in tab.open(path).content()
    page = tab.open(f"/proof?id={tag_b}")
    page.wait_for_selector("#status[data-kind='error']")
    assert "No entry with this log tag id" in page.inner_text("#status")
    refused = page.evaluate(
        """async () => (await fetch("/v1/stream?community=scope-b", {
            headers: {Authorization: `Bearer ${sessionStorage.getItem("patio.token")}`},
        })).status"""
    )
    assert refused == 403
    tab.errors.clear()  # the refused fetch above is logged by the browser as a failed load


def test_the_admin_registers_a_device_that_then_submits(tab: Tab, web_gateway: Gateway) -> None:
    tab.sign_in(web_gateway.admin_token)
    page = tab.open("/admin")
    page.fill("#community-form input[name=id]", "adm-hoa")
    page.fill("#community-form input[name=name]", "Calle Mayor 5")
    page.fill("#community-form input[name=time_zone]", "Europe/Madrid")
    page.click("#community-form button[type=submit]")
    page.wait_for_selector("#communities tr[data-community='adm-hoa'] td:text('Europe/Madrid')")
    page.once("dialog", lambda dialog: dialog.accept("Atlantic/Canary"))
    page.click("#communities tr[data-community='adm-hoa'] button.zone")
    page.wait_for_selector("#communities tr[data-community='adm-hoa'] td:text('Atlantic/Canary')")
    page.select_option("#device-community", "adm-hoa")
    key = NamedKey.generate("adm-meter")
    page.fill("#device-form input[name=id]", "adm-meter")
    page.fill("#device-form input[name=public_key]", key.public_key_b64)
    page.select_option("#device-type", "tasmota_plug")
    page.fill("#device-form input[name=sensor]", "meter")
    page.click("#device-form button[type=submit]")
    page.wait_for_selector(
        "#devices tr[data-device='adm-meter'] td:has-text('meter_wh consumption Wh')"
    )
    solar = NamedKey.generate("adm-solar")
    page.fill("#device-form input[name=id]", "adm-solar")
    page.fill("#device-form input[name=public_key]", solar.public_key_b64)
    page.fill(
        "#device-form textarea[name=profile]",
        '{"sensors": {"pv_w": {"role": "generation", "unit": "W"}}}',
    )
    page.click("#device-form button[type=submit]")
    page.wait_for_selector("#devices tr[data-device='adm-solar'] td:text('pv_w generation W')")
    page.select_option("#tariff-community", "adm-hoa")
    page.wait_for_selector("#tariff-current[data-tariff='']")
    page.select_option("#tariff-shipped", "es-2.0td")
    page.fill("#tariff-form input[name=contracted]", "P1=4.6 P2=3.45")
    page.click("#tariff-form button[type=submit]")
    page.wait_for_selector("#tariff-current[data-tariff='es-2.0td']")
    assert "P2 3.45 kW" in page.inner_text("#tariff-current")
    with web_gateway.client(web_gateway.admin_token) as client:
        tariff = client.get("/v1/communities/adm-hoa/tariff").json()
        listed = client.get("/v1/devices", params={"community": "adm-hoa"}).json()["items"]
    assert tariff["contracted_kW"] == {"P1": "4.6", "P2": "3.45"}
    assert {d["id"]: (d["profile"] or {}).get("type") for d in listed} == {
        "adm-meter": "tasmota_plug",
        "adm-solar": None,
    }
    tag = submit(web_gateway, key, "adm-meter", 1)

    page.fill("#app-form input[name=name]", "board")
    page.fill("#app-form input[name=scopes]", "read:adm-hoa")
    page.click("#app-form button[type=submit]")
    app_key = page.wait_for_selector("#new-app-key").inner_text()
    assert app_key.startswith("papp_")
    tab.screenshot("admin-key-shown")

    rotated = NamedKey.generate("adm-meter")
    page.once("dialog", lambda dialog: dialog.accept(rotated.public_key_b64))
    page.click("#devices tr[data-device='adm-meter'] button.rotate")
    page.wait_for_selector(
        f"#devices tr[data-device='adm-meter'] code:text('{rotated.public_key_b64}')"
    )
    submit(web_gateway, rotated, "adm-meter", 2, ago=0)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#devices tr[data-device='adm-meter'] button.revoke")
    page.wait_for_selector("#devices tr[data-device='adm-meter']:has-text('revoked')")
    with web_gateway.client() as client:
        payload = {
            "device_id": "adm-meter",
            "seq": 3,
            "start": "2026-01-01T00:00:00Z",
            "period_s": 60,
            "readings": {},
        }
        refused = client.post(
            "/v1/entries",
            json={
                "contract": "energy_minute",
                "envelopes": [{"payload": payload, "sig": rotated.sign_payload(payload)}],
            },
        ).json()["results"][0]
    assert refused["status"] != "accepted"

    tab.page.context.clear_cookies()
    tab.sign_in(app_key)
    page = tab.open("/")
    page.wait_for_selector(".card[data-device='adm-meter']")
    with web_gateway.client(app_key) as client:
        assert client.get(f"/v1/entries/{tag}").status_code == 200


def test_a_phone_renders_every_page_without_horizontal_scrolling(
    browser: Any, web_gateway: Gateway
) -> None:
    key = web_gateway.device("phone-meter-with-a-rather-long-device-name", "phone-hoa")
    tag = submit(web_gateway, key, "phone-meter-with-a-rather-long-device-name", 1)
    web_gateway.seal()
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="es-ES")
    tab = Tab(context.new_page(), web_gateway.url)
    try:
        tab.sign_in(web_gateway.admin_token)
        for path in (*PAGES, f"/proof?id={tag}", "/?community=phone-hoa"):
            page = tab.open(path)
            if "id=" in path:
                page.wait_for_selector("#verdict")
                assert page.inner_text("#verdict") == "VÁLIDA"
            if "community=" in path:
                page.wait_for_selector(".card")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (path, width)
            tab.screenshot(
                "phone-" + (path.strip("/").replace("?", "-").replace("=", "-")[:40] or "overview")
            )
        assert tab.unexpected_errors == [], tab.errors
    finally:
        context.close()


def test_sign_in_and_navigation_work_by_keyboard(tab: Tab, web_gateway: Gateway) -> None:
    key = web_gateway.device("keys-meter", "keys-hoa")
    submit(web_gateway, key, "keys-meter", 1)
    page = tab.open("/signin")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "token":
            break
    else:
        pytest.fail("the token field cannot be reached with Tab")
    page.keyboard.type(web_gateway.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(web_gateway.url + "/")
    page = tab.open("/?community=keys-hoa")
    page.wait_for_selector(".card[data-device='keys-meter']")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('proof-link')"):
            break
    else:
        pytest.fail("the proof link cannot be reached with Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/proof?id=*")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value with the awkward parts of JCS: float formatting, escapes, key order."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([None, True, False, 0, -0.0, 1e21, 1e-7, 5e-324, 2**53 - 1, -(2**53) + 1])
    if kind == 1:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if kind == 2:
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return value if math.isfinite(value) else rng.random()
    if kind == 3:
        # Any code point but lone surrogates: controls, quotes, non-BMP.
        points = [
            rng.choice([rng.randrange(0x20), rng.randrange(0xD800), 0x1F600 + rng.randrange(80)])
        ]
        points += [rng.randrange(0x20, 0x80) for _ in range(rng.randrange(6))]
        return "".join(map(chr, points)) + rng.choice(['"', "\\", "/", "\u2028", "é", ""])
    if kind in (4, 5):
        return {
            str(random_json(rng, 3)): random_json(rng, depth + 1) for _ in range(rng.randrange(5))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_jcs_in_the_browser_is_byte_identical_to_the_ledgers(tab: Tab) -> None:
    rng = random.Random(9162)
    values = [random_json(rng) for _ in range(400)]
    texts = [json.dumps(value) for value in values]
    tab.open("/proof")
    encoded = tab.page.evaluate(
        """async (texts) => {
            const { canonicalize, parseStrict } = await import("/static/jcs.js");
            return texts.map((text) => canonicalize(parseStrict(text)));
        }""",
        texts,
    )
    for text, got in zip(texts, encoded, strict=True):
        assert got.encode() == canonical_json(json.loads(text)), text
    refused = tab.page.evaluate(
        """async (texts) => {
            const { parseStrict, canonicalize } = await import("/static/jcs.js");
            return texts.map((text) => {
                try {
                    canonicalize(parseStrict(text));
                    return null;
                } catch (e) {
                    return e.message;
                }
            });
        }""",
        ['{"a": 1, "a": 2}', "9007199254740993", "NaN", "[1] 2", '"\\ud800"', "{'a': 1}", "01"],
    )
    assert all(refused), refused


def test_the_documented_bench_command_runs() -> None:
    """docs/dashboard.md's bench command, as written there, run small."""
    require_chromium()
    [command] = session(REPO / "docs" / "dashboard.md", "bench-web").splitlines()
    assert command == ".venv/bin/python -m bench.web"
    small = "--devices 2 --minutes 3 --loads 1 --commits 2"
    run = subprocess.run(
        ["bash", "-c", f"{command} {small}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert "to first render: median" in run.stdout
    assert "commit acknowledged -> live view (2 commits)" in run.stdout


def test_the_overview_resumes_its_stream_after_a_restart(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The gateway stops (its streams are cut) and comes back on the same port: the page
    reconnects by itself, sending the Last-Event-ID it last saw, and shows what follows."""
    data_dir = tmp_path_factory.mktemp("web-restart")
    gateway = start_gateway(data_dir)
    key = gateway.device("restart-meter", "restart-hoa")
    submit(gateway, key, "restart-meter", 1, ago=3)
    context = browser.new_context()
    tab = Tab(context.new_page(), gateway.url)
    streams: list[str | None] = []
    tab.page.on(
        "request",
        lambda r: "/v1/stream" in r.url and streams.append(r.headers.get("last-event-id")),
    )
    try:
        tab.sign_in(gateway.admin_token)
        page = tab.open("/?community=restart-hoa")
        page.wait_for_selector("#live[data-state='live']")
        seen = submit(gateway, key, "restart-meter", 2, ago=2)
        page.wait_for_selector(f".card[data-log-tag='{seen}']")
        index = gateway.admin.get(f"/v1/entries/{seen}").json()["index"]
        port = int(gateway.url.rsplit(":", 1)[1])
        gateway.stop()
        page.wait_for_selector("#live[data-state='reconnecting']", timeout=30_000)
        gateway = start_gateway(data_dir, port=port)
        page.wait_for_selector("#live[data-state='live']", timeout=30_000)
        after = submit(gateway, key, "restart-meter", 3, ago=1)
        page.wait_for_selector(f".card[data-log-tag='{after}']")
        assert streams[0] is None and len(streams) >= 2
        # The id of the last event seen: the index of `seen` (the community's newest
        # entry), then the newest checkpoint's size.
        assert streams[-1] is not None and streams[-1].split(":")[0] == str(index)
        # The browser logs the cut stream and the refused reconnects while the port was closed.
        tab.errors.clear()
    finally:
        context.close()
        gateway.stop()


def test_the_timeline_lists_checkpoints_and_grows_live(tab: Tab, web_gateway: Gateway) -> None:
    key = web_gateway.device("timeline-meter", "timeline-hoa")
    submit(web_gateway, key, "timeline-meter", 1, ago=2)
    before = web_gateway.seal()
    tab.sign_in(web_gateway.app_key("read:timeline-hoa"))
    page = tab.open("/timeline")
    row = page.wait_for_selector(f"#checkpoints tr[data-size='{before['tree_size']}']")
    assert before["root_hash"] in row.inner_text()
    assert page.query_selector("#growth canvas") is not None
    page.wait_for_selector("#live[data-state='live']")
    submit(web_gateway, key, "timeline-meter", 2, ago=1)
    after = web_gateway.seal()
    page.wait_for_selector(f"#checkpoints tbody tr:first-child[data-size='{after['tree_size']}']")


def test_merkle_proofs_in_the_browser_agree_with_the_ledger(tab: Tab) -> None:
    """Every inclusion and consistency proof of trees up to 33 leaves, from ledger/merkle.py,
    verifies in the page; the same proofs with one hash changed do not."""
    tree = merkle.MemoryTree()
    tree.append([merkle.leaf_hash(b"leaf %d" % i) for i in range(33)])
    leaves = [merkle.leaf_hash(b"leaf %d" % i).hex() for i in range(33)]
    roots = {size: tree.root(size).hex() for size in range(1, 34)}
    inclusions = [
        [index, size, [h.hex() for h in merkle.inclusion_proof(index, size, tree.fetch)]]
        for size in range(1, 34)
        for index in range(size)
    ]
    consistencies = [
        [first, second, [h.hex() for h in merkle.consistency_proof(first, second, tree.fetch)]]
        for second in range(1, 34)
        for first in range(1, second + 1)
    ]
    tab.open("/proof")
    outcome = tab.page.evaluate(
        """async ([leaves, roots, inclusions, consistencies]) => {
            const m = await import("/static/merkle.js");
            const { fromHex } = await import("/static/bytes.js");
            const h = (x) => fromHex(x, "hash", 32);
            const spoil = (hashes, i) => hashes.map((x, j) => (j === i ? "00".repeat(32) : x));
            const ok = async (check) => check.then(() => true, () => false);
            const result = { included: 0, consistent: 0, wrongly: [] };
            for (const [index, size, hashes] of inclusions) {
                const verify = (p) =>
                    m.verifyInclusion(h(leaves[index]), index, size, p.map(h), h(roots[size]));
                if (await ok(verify(hashes))) result.included += 1;
                if (hashes.length && (await ok(verify(spoil(hashes, index % hashes.length))))) {
                    result.wrongly.push(["inclusion", index, size]);
                }
            }
            for (const [first, second, hashes] of consistencies) {
                const verify = (p) =>
                    m.verifyConsistency(first, second, p.map(h), h(roots[first]), h(roots[second]));
                if (await ok(verify(hashes))) result.consistent += 1;
                if (hashes.length && (await ok(verify(spoil(hashes, second % hashes.length))))) {
                    result.wrongly.push(["consistency", first, second]);
                }
            }
            return result;
        }""",
        [leaves, roots, inclusions, consistencies],
    )
    assert outcome == {"included": len(inclusions), "consistent": len(consistencies), "wrongly": []}


def test_an_entry_not_yet_sealed_says_so_then_verifies(tab: Tab, web_gateway: Gateway) -> None:
    key = web_gateway.device("unsealed-meter", "unsealed-hoa")
    tag = submit(web_gateway, key, "unsealed-meter", 1)
    tab.sign_in(web_gateway.admin_token)
    page = tab.open(f"/proof?id={tag}")
    page.wait_for_selector("#status[data-kind='warn']")
    assert "not sealed" in page.inner_text("#status")
    assert "unsealed-meter" in page.inner_text(".entry")
    assert page.query_selector("#verdict") is None
    tab.errors.clear()  # the browser logs the 409 answer as a failed load
    web_gateway.seal()
    page.click("#lookup button[type=submit]")
    assert page.wait_for_selector("#verdict").inner_text() == "VALID"
