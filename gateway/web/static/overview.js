// Community overview: live power over the SSE stream, a card per device, today's
// self-sufficiency. Every number comes from the JSON API.

import { ago, api, el, follow, kw, listAll, number, ready, say, t, whoAmI } from "./app.js";
import { rolesOf, SelfSufficiency } from "./power.js";

const STALE_SECONDS = 120; // a device silent for 2 minutes is stale
const status = document.getElementById("status");
const picker = document.getElementById("community");
const cards = document.getElementById("devices");
const live = document.getElementById("live");
let latest = null;
let stop = null;
let refreshing = null;
let pending = false;
let sufficiency = null;

function renderPower(power) {
  document.getElementById("generation").textContent = kw(power.generation_w);
  document.getElementById("consumption").textContent = kw(power.consumption_w);
  const net = document.getElementById("net");
  net.textContent = power.net_w === null ? "—" : `${power.net_w > 0 ? "+" : ""}${kw(power.net_w)}`;
  const tile = net.closest(".tile");
  tile.dataset.sign = power.net_w === null ? "" : power.net_w >= 0 ? "surplus" : "deficit";
  document.getElementById("net-label").textContent =
    power.net_w === null ? "" : power.net_w >= 0 ? t("overview.surplus") : t("overview.deficit");
}

function readingText(reading) {
  if (reading === null || typeof reading !== "object") return String(reading);
  const unit = reading.unit ?? "";
  for (const key of ["avg", "sum", "value"]) {
    if (reading[key] !== undefined) return `${number(reading[key])} ${unit}`.trim();
  }
  if (reading.any !== undefined) return reading.any ? t("overview.on") : t("overview.off");
  return JSON.stringify(reading);
}

function renderCards() {
  cards.replaceChildren(
    ...latest.devices.map((device) =>
      el("li", { class: "card", dataset: { device: device.device_id, logTag: device.log_tag_id, start: device.start } },
        el("h3", {}, device.device_id),
        el("dl", {}, Object.entries(device.readings ?? {}).map(([name, reading]) => [
          el("dt", {}, name), el("dd", {}, readingText(reading)),
        ])),
        el("p", { class: "age" }),
        el("a", { href: `/proof?id=${device.log_tag_id}`, class: "proof-link" }, t("overview.check")),
      )),
  );
  if (!latest.devices.length) cards.append(el("li", { class: "empty" }, t("overview.no_devices")));
  tick();
}

/** Ages and staleness move with the clock, not with data. */
function tick() {
  for (const card of cards.querySelectorAll(".card")) {
    // A minute aggregate is complete at the end of its minute.
    const seconds = (Date.now() - new Date(card.dataset.start).getTime()) / 1000 - 60;
    const stale = seconds > STALE_SECONDS;
    card.classList.toggle("stale", stale);
    card.querySelector(".age").textContent = `${t("overview.reading_of")} ${ago(seconds)}${stale ? ` · ${t("overview.stale")}` : ""}`;
  }
}

function renderSufficiency() {
  const { ratio, consumedWh, generatedWh } = sufficiency.value;
  document.getElementById("sufficiency").textContent =
    ratio === null ? "—" : `${Math.round(ratio * 100)} %`;
  document.getElementById("sufficiency-detail").textContent = t("overview.sufficiency_detail", {
    generated: number(generatedWh / 1000), consumed: number(consumedWh / 1000),
  });
}

async function refresh(community) {
  latest = await api(`/v1/communities/${encodeURIComponent(community)}/latest`);
  renderPower(latest.power);
  renderCards();
}

/** Today's entries, page by page (the reports API will answer this in one call). */
async function loadToday(community) {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  const devices = await listAll("/v1/devices", { community });
  sufficiency = new SelfSufficiency(midnight, new Map(devices.map((d) => [d.id, rolesOf(d.profile)])));
  let cursor = -1;
  do {
    const page = await api(`/v1/entries?community=${encodeURIComponent(community)}&from=${midnight.toISOString().replace(/\.\d+Z$/, "Z")}&limit=1000&cursor=${cursor}`);
    for (const item of page.entries) sufficiency.add(item.log_tag_id, item.entry.payload);
    cursor = page.next_cursor;
  } while (cursor !== null);
  renderSufficiency();
}

/** One refresh at a time; events that arrive meanwhile are folded into one more. */
function scheduleRefresh(community) {
  if (refreshing) {
    pending = true;
    return;
  }
  refreshing = refresh(community).catch(fail).finally(() => {
    refreshing = null;
    if (pending) {
      pending = false;
      scheduleRefresh(community);
    }
  });
}

function setLive(state) {
  live.dataset.state = state;
  live.textContent = t(`overview.live.${state}`);
}

async function show(community) {
  stop?.();
  history.replaceState(null, "", `?community=${encodeURIComponent(community)}`);
  localStorage.setItem("patio.community", community);
  await refresh(community);
  document.body.dataset.rendered = "1";
  performance.mark("first-render");
  setLive("connecting");
  stop = follow(`/v1/stream?community=${encodeURIComponent(community)}`, {
    onState: setLive,
    onEvent(event, data) {
      if (event !== "entry" || data.community_id !== community) return;
      sufficiency?.add(data.log_tag_id, data.payload);
      if (sufficiency) renderSufficiency();
      scheduleRefresh(community);
    },
  });
  await loadToday(community);
  performance.mark("today-loaded");
}

async function main() {
  await ready;
  if (!(await whoAmI())) return;
  const communities = await listAll("/v1/communities");
  if (!communities.length) {
    say(status, t("overview.no_communities"));
    return;
  }
  picker.replaceChildren(...communities.map((c) => el("option", { value: c.id }, `${c.name} (${c.id})`)));
  const wanted = new URLSearchParams(location.search).get("community") ?? localStorage.getItem("patio.community");
  picker.value = communities.some((c) => c.id === wanted) ? wanted : communities[0].id;
  picker.closest("label").hidden = communities.length < 2;
  picker.addEventListener("change", () => show(picker.value).catch(fail));
  setInterval(tick, 1000);
  await show(picker.value);
}

function fail(error) {
  say(status, t("error.load", { detail: error.message }), "error");
}

main().catch(fail);
