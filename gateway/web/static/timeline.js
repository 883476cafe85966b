// Log timeline: the newest checkpoints and their anchors, the tree's growth, live.

import { api, el, follow, lang, ready, say, t, whoAmI } from "./app.js";

const status = document.getElementById("status");
const table = document.getElementById("checkpoints");
const chartBox = document.getElementById("growth");
const SHOWN = 200;
let checkpoints = [];
let chart = null;

/** The newest checkpoints: GET /v1/checkpoints pages oldest first after a tree size, so
 *  start a window below the latest size and widen it until it holds enough. */
async function newest() {
  const latest = await api("/v1/checkpoint").catch(() => null);
  const size = latest ? Number(latest.split("\n")[1]) : 0;
  for (let window = 1000; ; window *= 16) {
    const after = Math.max(-1, size - window);
    const found = [];
    let cursor = after;
    for (;;) {
      const page = await api(`/v1/checkpoints?after=${cursor}&limit=1000`);
      found.push(...page.checkpoints);
      if (page.checkpoints.length < 1000) break;
      cursor = page.checkpoints.at(-1).tree_size;
    }
    if (found.length >= SHOWN || after === -1) return found.slice(-SHOWN);
  }
}

function row(c) {
  return el("tr", { dataset: { size: c.tree_size } },
    el("td", {}, new Date(c.created_at).toLocaleString(lang)),
    el("td", { class: "num" }, c.tree_size.toLocaleString(lang)),
    el("td", {}, el("code", { class: "hash", title: c.root_hash }, c.root_hash)),
    el("td", {}, (c.anchors ?? []).length
      ? el("ul", { class: "plain" }, c.anchors.map((a) => el("li", {},
        t("timeline.anchor", { chain: a.chain_id, block: a.block_number ?? "—", status: a.status }), " ",
        el("code", { class: "hash" }, a.tx_hash))))
      : t("timeline.not_anchored")),
  );
}

function render() {
  table.querySelector("tbody").replaceChildren(...checkpoints.slice().reverse().map(row));
  const times = checkpoints.map((c) => new Date(c.created_at).getTime() / 1000);
  const sizes = checkpoints.map((c) => c.tree_size);
  const width = Math.max(280, chartBox.clientWidth);
  if (!chart) {
    chart = new uPlot({
      width, height: 220,
      series: [{}, { label: t("timeline.tree_size"), stroke: "#2f6f4f", width: 2, points: { show: true } }],
      axes: [{}, { size: 70 }],
    }, [times, sizes], chartBox);
  } else {
    chart.setData([times, sizes]);
  }
}

async function main() {
  await ready;
  if (!(await whoAmI())) return;
  checkpoints = await newest();
  render();
  document.body.dataset.rendered = "1";
  if (!checkpoints.length) say(status, t("timeline.none"));
  addEventListener("resize", () => chart?.setSize({ width: Math.max(280, chartBox.clientWidth), height: 220 }));
  follow("/v1/stream", {
    onState: (state) => {
      const live = document.getElementById("live");
      live.dataset.state = state;
      live.textContent = t(`overview.live.${state}`);
    },
    onEvent: (event, data) => {
      if (event !== "checkpoint" || checkpoints.some((c) => c.tree_size === data.tree_size)) return;
      checkpoints.push({ ...data, created_at: new Date().toISOString(), anchors: [] });
      checkpoints = checkpoints.slice(-SHOWN);
      render();
    },
  });
}

main().catch((error) => say(status, t("error.load", { detail: error.message }), "error"));
