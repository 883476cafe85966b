// Admin: communities, devices (register, rotate, revoke) and apps (create with scopes,
// the key shown once, rotate). Needs the admin token.

import { api, el, listAll, ready, say, t, whoAmI } from "./app.js";

const status = document.getElementById("status");
const communityForm = document.getElementById("community-form");
const deviceForm = document.getElementById("device-form");
const appForm = document.getElementById("app-form");
const deviceCommunity = document.getElementById("device-community");
const shownKey = document.getElementById("app-key");
const tariffForm = document.getElementById("tariff-form");
const tariffCommunity = document.getElementById("tariff-community");
const shippedTariffs = JSON.parse(document.getElementById("shipped-tariffs").textContent);

function done(text) {
  say(status, text, "ok");
}

function failed(error) {
  say(status, t("error.action", { detail: error.message }), "error");
}

async function loadCommunities() {
  const communities = await listAll("/v1/communities");
  document.querySelector("#communities tbody").replaceChildren(...communities.map((c) =>
    el("tr", { dataset: { community: c.id } },
      el("td", {}, c.id), el("td", {}, c.name), el("td", { class: "zone" }, c.time_zone),
      el("td", { class: "actions" }, el("div", {},
        el("button", { type: "button", class: "zone", onclick: () => changeZone(c) }, t("admin.change_zone")))))));
  const chosen = deviceCommunity.value;
  deviceCommunity.replaceChildren(...communities.map((c) => el("option", { value: c.id }, c.id)));
  if (communities.some((c) => c.id === chosen)) deviceCommunity.value = chosen;
  const chosenForTariff = tariffCommunity.value;
  tariffCommunity.replaceChildren(...communities.map((c) => el("option", { value: c.id }, c.id)));
  if (communities.some((c) => c.id === chosenForTariff)) tariffCommunity.value = chosenForTariff;
  await Promise.all([loadDevices(), loadTariff()]);
}

async function loadDevices() {
  const community = deviceCommunity.value;
  const body = document.querySelector("#devices tbody");
  if (!community) {
    body.replaceChildren();
    return;
  }
  const devices = await listAll("/v1/devices", { community });
  body.replaceChildren(...devices.map((d) => el("tr", { dataset: { device: d.id } },
    el("td", {}, d.id),
    el("td", {}, el("code", { class: "hash" }, d.public_key)),
    el("td", { class: "profile" }, describeProfile(d.profile)),
    el("td", {}, d.revoked_at ? t("admin.revoked_at", { at: d.revoked_at }) : t("admin.active")),
    el("td", { class: "actions" }, d.revoked_at ? null : el("div", {},
      el("button", { type: "button", class: "rotate", onclick: () => rotateDevice(d.id) }, t("admin.rotate")),
      el("button", { type: "button", class: "revoke danger", onclick: () => revokeDevice(d.id) }, t("admin.revoke")),
    )),
  )));
}

/** The community's current tariff (GET /v1/communities/{id}/tariff), or that it has none. */
async function loadTariff() {
  const community = tariffCommunity.value;
  const current = document.getElementById("tariff-current");
  if (!community) {
    current.textContent = "";
    return;
  }
  try {
    const recorded = await api(`/v1/communities/${encodeURIComponent(community)}/tariff`);
    const power = Object.entries(recorded.contracted_kW).map(([p, kw]) => `${p} ${kw} kW`).join(", ");
    current.textContent = t("admin.tariff_current", { id: recorded.tariff.id, power: power || "—", sha: recorded.tariff_sha256.slice(0, 12) });
    current.dataset.tariff = recorded.tariff.id;
  } catch (error) {
    if (error.status !== 404) throw error;
    current.textContent = t("admin.tariff_none");
    current.dataset.tariff = "";
  }
}

/** "P1=4.6 P2=4.6" as {"P1": "4.6", "P2": "4.6"}. */
function contracted(text) {
  const power = {};
  for (const part of text.split(/[\s,;]+/).filter(Boolean)) {
    const [period, kw] = part.split("=");
    if (!period || kw === undefined) throw new Error(t("admin.contracted_bad", { part }));
    power[period.trim()] = kw.trim();
  }
  return power;
}

/** "tasmota_plug: plug_w consumption W, ..." or "none declared". */
function describeProfile(profile) {
  if (!profile) return t("admin.no_profile");
  const sensors = Object.entries(profile.sensors).map(([name, s]) => `${name} ${s.role} ${s.unit}`).join(", ");
  return profile.type ? `${profile.type}: ${sensors}` : sensors;
}

async function changeZone(community) {
  const zone = prompt(t("admin.zone_prompt", { id: community.id }), community.time_zone);
  if (!zone) return;
  try {
    await api(`/v1/communities/${encodeURIComponent(community.id)}/settings`, { method: "POST", body: { time_zone: zone.trim() } });
    done(t("admin.zone_changed", { id: community.id, zone: zone.trim() }));
    await loadCommunities();
  } catch (error) {
    failed(error);
  }
}

async function rotateDevice(id) {
  const key = prompt(t("admin.rotate_prompt", { id }));
  if (!key) return;
  try {
    await api(`/v1/devices/${encodeURIComponent(id)}/rotate`, { method: "POST", body: { public_key: key.trim() } });
    done(t("admin.rotated", { id }));
    await loadDevices();
  } catch (error) {
    failed(error);
  }
}

async function revokeDevice(id) {
  if (!confirm(t("admin.revoke_confirm", { id }))) return;
  try {
    await api(`/v1/devices/${encodeURIComponent(id)}/revoke`, { method: "POST" });
    done(t("admin.revoked", { id }));
    await loadDevices();
  } catch (error) {
    failed(error);
  }
}

function showKey(app) {
  shownKey.replaceChildren(
    el("p", {}, el("strong", {}, t("admin.key_once", { name: app.name }))),
    el("code", { id: "new-app-key", class: "secret" }, app.api_key),
    " ",
    el("button", { type: "button", onclick: () => navigator.clipboard?.writeText(app.api_key) }, t("admin.copy")),
  );
  shownKey.hidden = false;
}

async function loadApps() {
  const { apps } = await api("/v1/apps");
  document.querySelector("#apps tbody").replaceChildren(...apps.map((a) => el("tr", { dataset: { app: a.id } },
    el("td", { class: "num" }, String(a.id)), el("td", {}, a.name), el("td", {}, a.scopes.join(" ")),
    el("td", { class: "actions" }, el("div", {}, el("button", {
      type: "button",
      onclick: async () => {
        if (!confirm(t("admin.rotate_app_confirm", { name: a.name }))) return;
        try {
          showKey(await api(`/v1/apps/${a.id}/rotate`, { method: "POST" }));
        } catch (error) {
          failed(error);
        }
      },
    }, t("admin.rotate")))))));
}

function submit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await action(new FormData(form));
      form.reset();
    } catch (error) {
      failed(error);
    }
  });
}

submit(communityForm, async (data) => {
  const body = { id: data.get("id").trim(), name: data.get("name").trim(), time_zone: data.get("time_zone").trim() };
  await api("/v1/communities", { method: "POST", body });
  done(t("admin.community_created", { id: body.id }));
  await loadCommunities();
});

submit(deviceForm, async (data) => {
  const body = { id: data.get("id").trim(), community_id: deviceCommunity.value, public_key: data.get("public_key").trim() };
  // A device type (one word), an explicit profile, or both: POST /v1/devices says which wins.
  if (data.get("type")) body.type = data.get("type");
  if (data.get("sensor").trim()) body.sensor = data.get("sensor").trim();
  if (data.get("profile").trim()) {
    try {
      body.profile = JSON.parse(data.get("profile"));
    } catch (error) {
      throw new Error(t("admin.profile_not_json", { detail: error.message }));
    }
  }
  await api("/v1/devices", { method: "POST", body });
  done(t("admin.device_registered", { id: body.id }));
  await loadCommunities();
});

submit(tariffForm, async (data) => {
  const community = tariffCommunity.value;
  let tariff = shippedTariffs.find((doc) => doc.id === data.get("shipped"));
  const file = data.get("file");
  if (!tariff) {
    if (!file || !file.size) throw new Error(t("admin.tariff_pick"));
    try {
      tariff = JSON.parse(await file.text());
    } catch (error) {
      throw new Error(t("admin.profile_not_json", { detail: error.message }));
    }
  }
  const body = { tariff, contracted_kW: contracted(data.get("contracted")) };
  await api(`/v1/communities/${encodeURIComponent(community)}/tariff`, { method: "PUT", body });
  done(t("admin.tariff_set", { id: tariff.id, community }));
  await loadTariff();
});

submit(appForm, async (data) => {
  const scopes = data.get("scopes").split(/[\s,]+/).filter(Boolean);
  const app = await api("/v1/apps", { method: "POST", body: { name: data.get("name").trim(), scopes } });
  showKey(app);
  await loadApps();
});

deviceCommunity.addEventListener("change", () => loadDevices().catch(failed));
tariffCommunity.addEventListener("change", () => loadTariff().catch(failed));

async function main() {
  await ready;
  const me = await whoAmI();
  if (!me) return;
  if (!me.admin) {
    say(status, t("admin.only"), "error");
    document.getElementById("admin-sections").hidden = true;
    document.body.dataset.rendered = "1";
    return;
  }
  await Promise.all([loadCommunities(), loadApps()]);
  document.body.dataset.rendered = "1";
}

main().catch(failed);
