// Reports: a community's day, ISO week, month or year from GET /v1/reports (patio-report/v1,
// docs/reports.md): totals and comparisons, charts per bucket, the per-device breakdown,
// CSV and JSON downloads, and how to verify the report against the signed log.

import { ApiError, el, lang, listAll, pinnedLogKey, ready, say, session, t, whoAmI } from "./app.js";

const status = document.getElementById("status");
const form = document.getElementById("choose");
const picker = document.getElementById("community");
const dateInput = document.getElementById("date");
const KINDS = ["day", "week", "month", "year"];
const FIELDS = ["generated_kWh", "consumed_kWh", "grid_import_kWh", "grid_export_kWh", "net_kWh"];
const charts = {};
let shown = null; // {query, text, report}

/** Today's date in the browser, YYYY-MM-DD. */
function today() {
  const now = new Date();
  return new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 10);
}

function chosen() {
  return { community: picker.value, period: form.elements.period.value, date: dateInput.value };
}

/** The date one period before (-1) or after (+1) `iso` (month and year steps keep the 1st). */
function step(iso, kind, by) {
  const [y, m, d] = iso.split("-").map(Number);
  const date = new Date(Date.UTC(y, m - 1, d));
  if (kind === "day") date.setUTCDate(d + by);
  else if (kind === "week") date.setUTCDate(d + 7 * by);
  else if (kind === "month") date.setUTCFullYear(y, m - 1 + by, 1);
  else date.setUTCFullYear(y + by, 0, 1);
  return date.toISOString().slice(0, 10);
}

/** GET /v1/reports as text (kept byte for byte for the JSON download) or CSV. */
async function fetchReport(query, accept) {
  const params = new URLSearchParams(query);
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(`/v1/reports?${params}`, {
      headers: { Authorization: `Bearer ${session.token()}`, Accept: accept },
    });
    if (response.ok) return response.text();
    const problem = await response.json().catch(() => ({}));
    const wait = Number(response.headers.get("retry-after"));
    // Not sealed yet (409) or rollups catching up (503): the gateway says when to come back.
    if ((response.status === 409 || response.status === 503) && wait && attempt < 10) {
      say(status, t("reports.waiting"));
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      continue;
    }
    throw new ApiError(response.status, problem);
  }
}

function kwh(text) {
  if (text === null || text === undefined) return "—";
  return `${Number(text).toLocaleString(lang, { maximumFractionDigits: 2 })} kWh`;
}

function money(text, report) {
  if (text === null || text === undefined || !report.tariff) return "—";
  return Number(text).toLocaleString(lang, { style: "currency", currency: report.tariff.currency });
}

function ratio(value) {
  return value?.ratio === null || value?.ratio === undefined ? "—" : `${Math.round(Number(value.ratio) * 100)} %`;
}

function change(entry) {
  if (!entry) return "—";
  if (entry.pct === null) return entry.reason ?? "—";
  const pct = Number(entry.pct);
  return `${pct > 0 ? "+" : ""}${pct.toLocaleString(lang, { maximumFractionDigits: 1 })} %`;
}

/** A figure: shown formatted, the report's exact text kept in data-value. */
function figure(id, text, formatted) {
  const node = document.getElementById(id);
  node.textContent = formatted;
  node.dataset.value = text ?? "";
}

function renderTotals(report) {
  const total = report.total;
  figure("generated", total.generated_kWh, kwh(total.generated_kWh));
  figure("consumed", total.consumed_kWh, kwh(total.consumed_kWh));
  figure("net", total.net_kWh, kwh(total.net_kWh));
  figure("grid", total.grid_import_kWh, `${kwh(total.grid_import_kWh)} / ${kwh(total.grid_export_kWh)}`);
  figure("sufficiency", total.self_sufficiency?.ratio, ratio(total.self_sufficiency));
  document.getElementById("sufficiency-why").textContent = total.self_sufficiency?.reason ?? "";
  figure("cost", total.cost?.total, total.cost ? money(total.cost.total, report) : t("reports.no_tariff"));
  const net = document.getElementById("net").closest(".tile");
  const value = Number(total.net_kWh);
  // net = grid import - grid export: positive means the community drew from the grid.
  net.dataset.sign = !total.net_kWh || value === 0 ? "" : value < 0 ? "surplus" : "deficit";
  const previous = report.comparison?.previous?.change ?? {};
  for (const node of document.querySelectorAll(".change")) {
    const entry = previous[node.dataset.field];
    node.textContent = entry?.pct === null || !entry ? change(entry) : `${change(entry)} ${t("reports.vs_previous_short")}`;
  }
}

function renderComparison(report) {
  const { previous, year_before: yearBefore } = report.comparison ?? {};
  const cell = (side, field, format) => {
    if (!side) return el("td", {}, "—");
    const value = field === "cost_total" ? side.total?.cost_total : side.total?.[field];
    return el("td", { class: "num" }, format(value), el("br"), el("small", {}, change(side.change?.[field])));
  };
  const rows = [
    ...FIELDS.map((field) => [field, report.total[field], kwh]),
    ["cost_total", report.total.cost?.total, (v) => money(v, report)],
  ];
  document.querySelector("#comparison tbody").replaceChildren(...rows.map(([field, value, format]) =>
    el("tr", { dataset: { field } },
      el("th", { scope: "row" }, t(`reports.field.${field}`)),
      el("td", { class: "num" }, format(value)),
      cell(previous, field, format),
      cell(yearBefore, field, format))));
}

function renderDevices(report) {
  document.querySelector("#devices tbody").replaceChildren(...report.devices.map((device) => {
    const total = device.total;
    return el("tr", { dataset: { device: device.device_id } },
      el("th", { scope: "row" }, device.device_id),
      ...["generated_kWh", "consumed_kWh", "grid_import_kWh", "grid_export_kWh"].map((field) =>
        el("td", { class: "num", dataset: { field, value: total[field] } }, kwh(total[field]))),
      el("td", { class: "num" }, String(total.missing_minutes ?? "—")),
      el("td", { class: "num", dataset: { field: "cost", value: total.cost?.total ?? "" } }, money(total.cost?.total, report)));
  }));
}

const COLOURS = { generated: "#2f6f4f", consumed: "#b5651d", net: "#3b5b92", cost: "#7a3b92" };

function chart(id, series, data, zone) {
  const box = document.getElementById(id);
  const width = Math.max(280, box.clientWidth);
  charts[id]?.destroy();
  charts[id] = new uPlot({
    width, height: 220,
    // The axis in the community's time zone, as the report's buckets are.
    tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), zone),
    series: [{}, ...series],
    axes: [{}, { size: 70 }],
  }, data, box);
}

function renderCharts(report) {
  const times = report.buckets.map((b) => new Date(b.start).getTime() / 1000);
  const values = (pick) => report.buckets.map((b) => {
    const value = pick(b);
    return value === null || value === undefined ? null : Number(value);
  });
  const bars = uPlot.paths.bars({ size: [0.7, 60] });
  const zone = report.period.time_zone;
  chart("chart-energy", [
    { label: t("reports.generated"), stroke: COLOURS.generated, fill: `${COLOURS.generated}33`, width: 2 },
    { label: t("reports.consumed"), stroke: COLOURS.consumed, fill: `${COLOURS.consumed}33`, width: 2 },
  ], [times, values((b) => b.generated_kWh), values((b) => b.consumed_kWh)], zone);
  chart("chart-net", [{ label: t("reports.net"), stroke: COLOURS.net, fill: `${COLOURS.net}55`, paths: bars }],
    [times, values((b) => b.net_kWh)], zone);
  chart("chart-cost", [{ label: t("reports.cost"), stroke: COLOURS.cost, fill: `${COLOURS.cost}55`, paths: bars }],
    [times, values((b) => b.cost?.total)], zone);
  document.getElementById("cost-caption").textContent = report.tariff
    ? `${t("reports.chart_cost")} (${report.tariff.currency}, ${report.tariff.id})` : t("reports.no_tariff");
}

function fileName(query, extension) {
  return `patio-report-${query.community}-${query.period}-${query.date}.${extension}`;
}

async function renderVerify(report, query) {
  const provenance = report.provenance;
  document.getElementById("tree-size").textContent = provenance.tree_size.toLocaleString(lang);
  document.getElementById("root").textContent = provenance.root_hash;
  document.getElementById("checkpoint").textContent = provenance.checkpoint;
  const logKey = pinnedLogKey()?.key ?? (await (await fetch("/v1/log-key")).text()).trim();
  document.getElementById("command").textContent =
    `patio report verify ${fileName(query, "json")} --log-key '${logKey}' --gateway ${location.origin}`;
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

async function show() {
  const query = chosen();
  if (!query.community || !query.date) return;
  history.replaceState(null, "", `?${new URLSearchParams(query)}`);
  const text = await fetchReport(query, "application/json");
  const report = JSON.parse(text);
  shown = { query, text, report };
  say(status, "");
  document.getElementById("label").textContent =
    `${t(`reports.kind.${query.period}`)} ${report.period.label} · ${report.period.time_zone}`;
  document.getElementById("as-of").textContent = t("reports.as_of", { at: report.as_of });
  renderTotals(report);
  renderComparison(report);
  renderCharts(report);
  renderDevices(report);
  await renderVerify(report, query);
  document.body.dataset.report = `${query.community}/${query.period}/${query.date}`;
}

function fail(error) {
  say(status, t("error.load", { detail: error.message }), "error");
}

function reload() {
  show().catch(fail);
}

async function main() {
  await ready;
  if (!(await whoAmI())) return;
  const communities = await listAll("/v1/communities");
  if (!communities.length) {
    say(status, t("overview.no_communities"));
    document.body.dataset.rendered = "1";
    return;
  }
  const params = new URLSearchParams(location.search);
  picker.replaceChildren(...communities.map((c) => el("option", { value: c.id }, `${c.name} (${c.id})`)));
  const wanted = params.get("community") ?? localStorage.getItem("patio.community");
  picker.value = communities.some((c) => c.id === wanted) ? wanted : communities[0].id;
  if (KINDS.includes(params.get("period"))) form.elements.period.value = params.get("period");
  dateInput.value = /^\d{4}-\d{2}-\d{2}$/.test(params.get("date") ?? "") ? params.get("date") : today();
  picker.addEventListener("change", reload);
  dateInput.addEventListener("change", reload);
  for (const radio of form.elements.period) radio.addEventListener("change", reload);
  document.getElementById("previous").addEventListener("click", () => {
    dateInput.value = step(dateInput.value, form.elements.period.value, -1);
    reload();
  });
  document.getElementById("next").addEventListener("click", () => {
    dateInput.value = step(dateInput.value, form.elements.period.value, 1);
    reload();
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("csv").addEventListener("click", async () => {
    try {
      download(fileName(shown.query, "csv"), await fetchReport(shown.query, "text/csv"), "text/csv");
    } catch (error) {
      fail(error);
    }
  });
  document.getElementById("json").addEventListener("click", () =>
    download(fileName(shown.query, "json"), shown.text, "application/json"));
  addEventListener("resize", () => {
    for (const [id, c] of Object.entries(charts)) {
      c.setSize({ width: Math.max(280, document.getElementById(id).clientWidth), height: 220 });
    }
  });
  await show().catch(fail);
  document.body.dataset.rendered = "1";
}

main().catch(fail);
