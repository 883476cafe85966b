// Community overview: live power over the SSE stream, a card per device, today's
// self-sufficiency from today's report. Every number comes from the JSON API.

import { ago, api, ApiError, el, follow, kw, listAll, number, ready, say, t, whoAmI } from "./app.js";
import { totalRow } from "./csv.js";

const STALE_SECONDS = 120; // a device silent for 2 minutes is stale
// Today's report changes with each checkpoint (every few seconds while minutes arrive); once
// every 30 s is fresh enough for a figure summed since midnight, and costs the gateway one
// report per open overview per 30 s.
const REPORT_EVERY_MS = 30_000;
// The stream sends every entry of the community in log order: while a back-fill appends
// thousands a second, a live minute waits behind them (a minute or more on a busy machine).
// Asking /latest this often as well keeps the cards and power current meanwhile.
const LATEST_EVERY_MS = 15_000;
const status = document.getElementById("status");
const picker = document.getElementById("community");
const cards = document.getElementById("devices");
const live = document.getElementById("live");
let latest = null;
let stop = null;
let refreshing = null;
let pending = false;
let today = null; // {community, zone, fetched: ms, timer}

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

function renderSufficiency(total) {
  const ratio = total.self_sufficiency_ratio;
  const figure = document.getElementById("sufficiency");
  figure.textContent = ratio === null ? "—" : `${Math.round(Number(ratio) * 100)} %`;
  figure.dataset.value = ratio ?? "";
  document.getElementById("sufficiency-detail").textContent = ratio === null
    ? t("overview.sufficiency_none")
    : t("overview.sufficiency_detail", {
      generated: number(Number(total.generated_kWh)), consumed: number(Number(total.consumed_kWh)),
    });
}

async function refresh(community) {
  const before = new Map((latest?.devices ?? []).map((device) => [device.device_id, device.start]));
  latest = await api(`/v1/communities/${encodeURIComponent(community)}/latest`);
  renderPower(latest.power);
  renderCards();
  // A new minute is in today's report once a checkpoint covers it: the stream's checkpoint
  // events say so, but they wait behind its entries as well.
  if (today?.community === community && latest.devices.some((d) => before.get(d.device_id) !== d.start)) {
    reportChanged(today);
  }
}

/** Today's date in the community's time zone (the day report's date), YYYY-MM-DD. */
function todayIn(zone) {
  const format = new Intl.DateTimeFormat("en-US", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" });
  const parts = Object.fromEntries(format.formatToParts(new Date()).map((part) => [part.type, part.value]));
  return `${parts.year}-${parts.month}-${parts.day}`;
}

/** Today's self-sufficiency: the total row of today's day report as CSV (a few KiB,
 * whatever the number of devices), GET /v1/reports. */
async function loadToday(state) {
  clearTimeout(state.timer);
  state.timer = null;
  state.fetched = Date.now();
  const query = new URLSearchParams({ community: state.community, period: "day", date: todayIn(state.zone) });
  let csv;
  try {
    csv = await api(`/v1/reports?${query}`, { accept: "text/csv" });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    // A community newer than the last checkpoint (404): the next checkpoint event asks again.
    if (error.status === 404) return;
    // Not sealed yet (409) or rollups catching up (503): the gateway says when to ask again.
    if (![409, 503].includes(error.status) || !error.retryAfter) throw error;
    if (today === state) state.timer = setTimeout(() => loadToday(state).catch(fail), Number(error.retryAfter) * 1000);
    return;
  }
  if (today !== state) return; // another community was chosen meanwhile
  renderSufficiency(totalRow(csv));
  if (!performance.getEntriesByName("today-loaded").length) performance.mark("today-loaded");
}

/** After a new checkpoint: today's report again, at most once every REPORT_EVERY_MS. */
function reportChanged(state) {
  if (state.timer !== null) return;
  const wait = Math.max(0, state.fetched + REPORT_EVERY_MS - Date.now());
  state.timer = setTimeout(() => loadToday(state).catch(fail), wait);
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

async function show(community, zone) {
  stop?.();
  if (today) clearTimeout(today.timer);
  today = { community, zone, fetched: 0, timer: null };
  const state = today;
  history.replaceState(null, "", `?community=${encodeURIComponent(community)}`);
  localStorage.setItem("patio.community", community);
  await refresh(community);
  document.body.dataset.rendered = "1";
  performance.mark("first-render");
  setLive("connecting");
  const polling = setInterval(() => scheduleRefresh(community), LATEST_EVERY_MS);
  const following = follow(`/v1/stream?community=${encodeURIComponent(community)}`, {
    onState: setLive,
    onEvent(event, data) {
      if (event === "checkpoint") reportChanged(state);
      if (event !== "entry" || data.community_id !== community) return;
      // A minute older than the device's newest (history arriving, a resend) leaves
      // /latest as it is: no need to ask (a back-fill streams thousands of them).
      const shown = latest?.devices.find((device) => device.device_id === data.device_id);
      if (shown && typeof data.payload?.start === "string" && data.payload.start <= shown.start) return;
      scheduleRefresh(community);
    },
  });
  stop = () => {
    clearInterval(polling);
    following();
  };
  await loadToday(state);
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
  const zones = new Map(communities.map((c) => [c.id, c.time_zone]));
  picker.addEventListener("change", () => show(picker.value, zones.get(picker.value)).catch(fail));
  setInterval(tick, 1000);
  await show(picker.value, zones.get(picker.value));
}

function fail(error) {
  say(status, t("error.load", { detail: error.message }), "error");
}

main().catch(fail);
