// Admin: communities, devices (register, rotate, revoke) and apps (create with scopes,
// the key shown once, rotate). Needs the admin token.

import { api, el, ready, say, t, whoAmI } from "./app.js";

const status = document.getElementById("status");
const communityForm = document.getElementById("community-form");
const deviceForm = document.getElementById("device-form");
const appForm = document.getElementById("app-form");
const deviceCommunity = document.getElementById("device-community");
const shownKey = document.getElementById("app-key");

function done(text) {
  say(status, text, "ok");
}

function failed(error) {
  say(status, t("error.action", { detail: error.message }), "error");
}

async function loadCommunities() {
  const { communities } = await api("/v1/communities");
  document.querySelector("#communities tbody").replaceChildren(...communities.map((c) =>
    el("tr", { dataset: { community: c.id } },
      el("td", {}, c.id), el("td", {}, c.name), el("td", { class: "num" }, String(c.devices)))));
  const chosen = deviceCommunity.value;
  deviceCommunity.replaceChildren(...communities.map((c) => el("option", { value: c.id }, c.id)));
  if (communities.some((c) => c.id === chosen)) deviceCommunity.value = chosen;
  await loadDevices();
}

async function loadDevices() {
  const community = deviceCommunity.value;
  const body = document.querySelector("#devices tbody");
  if (!community) {
    body.replaceChildren();
    return;
  }
  const { devices } = await api(`/v1/communities/${encodeURIComponent(community)}/devices`);
  body.replaceChildren(...devices.map((d) => el("tr", { dataset: { device: d.id } },
    el("td", {}, d.id),
    el("td", {}, el("code", { class: "hash" }, d.public_key)),
    el("td", {}, d.revoked_at ? t("admin.revoked_at", { at: d.revoked_at }) : t("admin.active")),
    el("td", { class: "actions" }, d.revoked_at ? null : el("div", {},
      el("button", { type: "button", class: "rotate", onclick: () => rotateDevice(d.id) }, t("admin.rotate")),
      el("button", { type: "button", class: "revoke danger", onclick: () => revokeDevice(d.id) }, t("admin.revoke")),
    )),
  )));
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
  const body = { id: data.get("id").trim(), name: data.get("name").trim() };
  await api("/v1/communities", { method: "POST", body });
  done(t("admin.community_created", { id: body.id }));
  await loadCommunities();
});

submit(deviceForm, async (data) => {
  const body = { id: data.get("id").trim(), community_id: deviceCommunity.value, public_key: data.get("public_key").trim() };
  await api("/v1/devices", { method: "POST", body });
  done(t("admin.device_registered", { id: body.id }));
  await loadCommunities();
});

submit(appForm, async (data) => {
  const scopes = data.get("scopes").split(/[\s,]+/).filter(Boolean);
  const app = await api("/v1/apps", { method: "POST", body: { name: data.get("name").trim(), scopes } });
  showKey(app);
  await loadApps();
});

deviceCommunity.addEventListener("change", () => loadDevices().catch(failed));

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
